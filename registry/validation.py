"""Field limits declared in the contracts, checked against messages.

The .proto files declare limits with protovalidate annotations:

    string name = 1 [(buf.validate.field).string = {min_len: 1, max_len: 64}];

`MessageRules.of(descriptor)` reads those annotations from a compiled message
descriptor, and `violations(message)` checks a message against them, so that
a service enforces the limits that its contract declares, from one place.
`rules_of_service(service)` reads the rules of every request message of a
service at once. Call it at startup: a declared rule that registry.field_rules
does not support then stops the server before it serves.

    violation = first_violation(request)
    if violation is not None:
        raise InvalidArgumentError(violation.field, violation.description)

Checks that need state, such as whether a page token was issued by this
service, are not declarable and stay in the service's code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from registry.field_rules import FieldCheck, compile_field


@dataclass(frozen=True, slots=True)
class Violation:
    """One field that breaks its declared rule."""

    field: str  # path of the field, such as "name" or "users[2].display_name"
    description: str  # "must be 1 to 64 characters; got 65 characters"

    def __str__(self) -> str:
        return f"{self.field}: {self.description}"


class MessageRules:
    """The declared rules of the fields of one message type."""

    _compiled: ClassVar[dict[Descriptor, MessageRules]] = {}

    def __init__(self, descriptor: Descriptor) -> None:
        self.descriptor = descriptor
        self.checks: dict[str, FieldCheck] = {}
        for field in descriptor.fields:
            check = compile_field(field)
            if check is not None:
                self.checks[field.name] = check

    @classmethod
    def of(cls, descriptor: Descriptor) -> MessageRules:
        """Return the rules of a message type, compiled once per process."""
        rules = cls._compiled.get(descriptor)
        if rules is None:
            rules = cls(descriptor)
            cls._compiled[descriptor] = rules
        return rules

    def summary(self, field: str) -> str:
        """Return the rule of one field in words, such as "1 to 64 characters"."""
        return self.checks[field].summary

    def check_field(self, field: str, value: Any) -> Violation | None:
        """Check one field's value alone, outside of a message."""
        check = self.checks.get(field)
        message = check.check(value) if check is not None else None
        return Violation(field, message) if message is not None else None

    def violations(self, message: Message, prefix: str = "") -> list[Violation]:
        """Return every violation in message and in its nested messages."""
        found: list[Violation] = []
        for field in self.descriptor.fields:
            path = prefix + field.name
            value = getattr(message, field.name)
            check = self.checks.get(field.name)
            if field.is_repeated:
                found += _repeated_violations(field, check, value, path)
            elif field.has_presence and not message.HasField(field.name):
                missing = check.check_missing() if check is not None else None
                if missing is not None:
                    found.append(Violation(path, missing))
            else:
                found += _value_violations(field, check, value, path)
        return found


def _value_violations(
    field: FieldDescriptor, check: FieldCheck | None, value: Any, path: str
) -> list[Violation]:
    found: list[Violation] = []
    message = check.check(value) if check is not None else None
    if message is not None:
        found.append(Violation(path, message))
    if field.message_type is not None:
        found += MessageRules.of(field.message_type).violations(value, path + ".")
    return found


def _repeated_violations(
    field: FieldDescriptor, check: FieldCheck | None, values: Any, path: str
) -> list[Violation]:
    found: list[Violation] = []
    message = check.check(values) if check is not None else None
    if message is not None:
        found.append(Violation(path, message))
    # Map fields hold entry messages whose rules are not supported, so only
    # lists are looked into.
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return found
    items = check.items if check is not None else None
    for index, value in enumerate(values):
        found += _value_violations(field, items, value, f"{path}[{index}]")
    return found


def first_violation(message: Message) -> Violation | None:
    """Return the first field of message, in declaration order, that breaks
    its declared rule, or None when every field passes."""
    descriptor = cast("Descriptor", message.DESCRIPTOR)
    found = MessageRules.of(descriptor).violations(message)
    return found[0] if found else None


def rules_of_service(service: ServiceDescriptor) -> dict[str, MessageRules]:
    """Compile the rules of every request message of a service and of the
    messages nested in them; return them by full message name.

    Raises UnsupportedRuleError for a declared rule that cannot be checked.
    """
    compiled: dict[str, MessageRules] = {}
    pending = [method.input_type for method in service.methods]
    while pending:
        descriptor = pending.pop()
        if descriptor.full_name in compiled:
            continue
        compiled[descriptor.full_name] = MessageRules.of(descriptor)
        pending += [
            field.message_type
            for field in descriptor.fields
            if field.message_type is not None
        ]
    return compiled
