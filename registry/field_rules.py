"""The compiled protovalidate rule of one field.

`compile_field(field)` reads the `(buf.validate.field)` option of a field
descriptor and returns a FieldCheck: a summary of the rule, such as
"1 to 64 characters matching ^[a-z]+$", and the tests that find what is wrong
with a value, such as "65 characters".

SUPPORTED_RULES lists the typed rules that are checked, besides `required`
and `ignore`:

    string    const, len, min_len, max_len, len_bytes, min_bytes, max_bytes,
              pattern, prefix, suffix, contains, not_contains, in, not_in
    bytes     const, len, min_len, max_len, in, not_in
    integers  const, lt, lte, gt, gte, in, not_in (every integer type)
    enum      const, defined_only, in, not_in
    repeated  min_items, max_items, items

Any other rule raises UnsupportedRuleError, so that a server never starts
with a declared limit that it would not enforce.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from protos import validate_pb2
from registry.errors import UnsupportedRuleError
from registry.rule_kinds import KINDS, Test

_INTEGER_KINDS = {
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_SINT32: "sint32",
    FieldDescriptor.TYPE_SINT64: "sint64",
    FieldDescriptor.TYPE_FIXED32: "fixed32",
    FieldDescriptor.TYPE_FIXED64: "fixed64",
    FieldDescriptor.TYPE_SFIXED32: "sfixed32",
    FieldDescriptor.TYPE_SFIXED64: "sfixed64",
}
_OTHER_KINDS = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_ENUM: "enum",
}
_INTEGER_RULES = {"const", "lt", "lte", "gt", "gte", "in", "not_in", "example"}
_STRING_RULES = {
    "const", "len", "min_len", "max_len", "len_bytes", "min_bytes", "max_bytes",
    "pattern", "prefix", "suffix", "contains", "not_contains", "in", "not_in",
    "example",
}  # fmt: skip
SUPPORTED_RULES: dict[str, set[str]] = {
    "string": _STRING_RULES,
    "bytes": {"const", "len", "min_len", "max_len", "in", "not_in", "example"},
    "enum": {"const", "defined_only", "in", "not_in", "example"},
    "repeated": {"min_items", "max_items", "items"},
    **dict.fromkeys(_INTEGER_KINDS.values(), _INTEGER_RULES),
}


@dataclass(frozen=True, slots=True)
class FieldCheck:
    """The compiled rule of one field."""

    field: FieldDescriptor
    summary: str
    tests: Sequence[Test] = ()
    required: bool = False
    ignore_zero: bool = False
    items: FieldCheck | None = None
    zero: Any = None

    def describe(self, observed: str) -> str:
        """Return the message for a value that fails: the rule, then the value."""
        return f"must be {self.summary}; got {observed}"

    def check(self, value: Any) -> str | None:
        """Return the message for a value that breaks the rule, or None."""
        if self.ignore_zero and _is_zero(value, self.zero):
            return None
        if self.required and _is_zero(value, self.zero):
            return self.describe(zero_text(self.zero))
        for test in self.tests:
            observed = test(value)
            if observed is not None:
                return self.describe(observed)
        return None

    def check_missing(self) -> str | None:
        """Return the message for an unset field with presence, or None."""
        return self.describe("no value") if self.required else None


def declared_rules(descriptor: FieldDescriptor) -> validate_pb2.FieldRules | None:
    """Return the `(buf.validate.field)` option of a field, or None."""
    options = descriptor.GetOptions()
    if not options.HasExtension(validate_pb2.field):
        return None
    rules: validate_pb2.FieldRules = options.Extensions[validate_pb2.field]
    return rules


def compile_field(descriptor: FieldDescriptor) -> FieldCheck | None:
    """Return the check of a field, or None when it declares no rule.

    Raises UnsupportedRuleError for a rule that this module does not check.
    """
    rules = declared_rules(descriptor)
    if rules is None or rules.ignore == validate_pb2.IGNORE_ALWAYS:
        return None
    repeated = descriptor.is_repeated
    return _compile(descriptor, rules, repeated=repeated)


def _compile(
    descriptor: FieldDescriptor, rules: validate_pb2.FieldRules, *, repeated: bool
) -> FieldCheck:
    name = descriptor.full_name
    if rules.cel or rules.cel_expression:
        raise UnsupportedRuleError(name, "CEL rules are not supported; check in code")
    kind = rules.WhichOneof("type")
    phrases: list[str] = []
    tests: list[Test] = []
    items = None
    if kind is not None:
        typed = getattr(rules, kind)
        _check_kind(descriptor, kind, typed, repeated=repeated)
        phrases, tests = KINDS[kind](descriptor, typed)
        if kind == "repeated" and typed.HasField("items"):
            items = _compile(descriptor, typed.items, repeated=False)
    zero = [] if repeated else _zero_value(descriptor)
    ignore_zero = rules.ignore == validate_pb2.IGNORE_IF_ZERO_VALUE
    summary = " ".join(phrases) or "set"
    if ignore_zero:
        summary = f"{zero_text(zero)}, or {summary}"
    return FieldCheck(
        field=descriptor,
        summary=summary,
        tests=tests,
        required=rules.required,
        ignore_zero=ignore_zero,
        items=items,
        zero=zero,
    )


def _check_kind(
    descriptor: FieldDescriptor, kind: str, typed: Message, *, repeated: bool
) -> None:
    """Raise UnsupportedRuleError for rules of the wrong kind or unknown rules."""
    name = descriptor.full_name
    if repeated:
        expected = "repeated"
    else:
        expected = _INTEGER_KINDS.get(descriptor.type) or _OTHER_KINDS.get(
            descriptor.type, "no"
        )
    if kind != expected:
        raise UnsupportedRuleError(
            name, f"declares {kind} rules on a field that takes {expected} rules"
        )
    supported = SUPPORTED_RULES[kind]
    unknown = sorted({f.name for f, _ in typed.ListFields()} - supported)
    if unknown:
        raise UnsupportedRuleError(
            name,
            f"{kind} rules {unknown} are not supported by registry.validation; "
            f"use {sorted(supported)} or check the value in code",
        )


def _zero_value(descriptor: FieldDescriptor) -> Any:
    if descriptor.type == FieldDescriptor.TYPE_MESSAGE:
        return None
    return descriptor.default_value


def _is_zero(value: Any, zero: Any) -> bool:
    if isinstance(zero, list):
        return len(value) == 0
    return bool(value == zero)


def zero_text(zero: Any) -> str:
    """Return how messages name the zero value of a field."""
    if zero == "":
        return "an empty string"
    if zero == b"":
        return "empty bytes"
    if isinstance(zero, list):
        return "an empty list"
    return "no value" if zero is None else repr(zero)
