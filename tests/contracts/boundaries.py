"""Requests at and just past each limit that a contract declares.

For every field with a `(buf.validate.field)` rule, `boundary_cases` builds
requests whose other fields are valid: one at each limit, which must pass,
and one just past it, which must fail with INVALID_ARGUMENT naming the field.
The values come from the declared numbers and patterns only, not from the
server's checker, so a server that stops enforcing a rule fails these cases.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from protos import validate_pb2
from registry.field_rules import declared_rules

# Length of the random strings in valid requests: long enough that two cases
# never share a counter name or an idempotency key by chance.
_FRESH_LENGTH = 12
# Characters tried, in order, to break a pattern without changing the length.
_PATTERN_BREAKERS = ["/", " ", "\n", "é", "!", "A", "a", "0", "_", "\x00", "\x85"]
# Rules that boundary_cases turns into cases. Any other declared rule makes it
# raise, so that a new kind of rule does not go untested without notice.
_STRING_RULES = {"len", "min_len", "max_len", "pattern", "in", "not_in", "example"}
_INTEGER_RULES = {"gt", "gte", "lt", "lte", "in", "not_in", "const", "example"}
_INTEGER_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


class UnsupportedBoundaryError(Exception):
    """A declared rule that boundary_cases cannot turn into cases yet."""


@dataclass(frozen=True)
class Case:
    """One request with one field at or past its limit."""

    field: str
    label: str
    request: Message
    valid: bool


def boundary_cases(descriptor: Descriptor) -> list[Case]:
    """Return the cases of every field with a declared rule, in field order."""
    cases = []
    for field in descriptor.fields:
        rules = declared_rules(field)
        if rules is None or rules.ignore == validate_pb2.IGNORE_ALWAYS:
            continue
        for label, value, valid in _field_values(field, rules):
            request = valid_request(descriptor)
            _assign(request, field, value)
            cases.append(Case(field.name, f"{field.name}:{label}", request, valid))
    return cases


def valid_request(descriptor: Descriptor) -> Message:
    """Return a request whose every declared rule passes, with fresh random
    values, so that cases do not collide on names or idempotency keys."""
    request = GetMessageClass(descriptor)()
    for field in descriptor.fields:
        rules = declared_rules(field)
        if rules is not None and rules.ignore != validate_pb2.IGNORE_ALWAYS:
            _assign(request, field, _valid_value(field, rules))
    return request


def _assign(request: Message, field: FieldDescriptor, value: Any) -> None:
    if field.is_repeated:
        container = getattr(request, field.name)
        del container[:]
        container.extend(value)
    else:
        setattr(request, field.name, value)


def _kind(field: FieldDescriptor, rules: validate_pb2.FieldRules) -> tuple[str, Any]:
    kind = rules.WhichOneof("type")
    if kind is None:
        raise UnsupportedBoundaryError(f"{field.full_name}: no typed rule")
    typed = getattr(rules, kind)
    declared = {f.name for f, _ in typed.ListFields()}
    supported = _STRING_RULES if kind == "string" else _INTEGER_RULES
    unknown = declared - supported
    if field.is_repeated or kind in {"bytes", "enum"} or unknown:
        raise UnsupportedBoundaryError(
            f"{field.full_name}: boundary cases for {kind} rules "
            f"{sorted(unknown) or ''} are not written yet; extend boundaries.py"
        )
    return kind, typed


def _valid_value(field: FieldDescriptor, rules: validate_pb2.FieldRules) -> Any:
    kind, typed = _kind(field, rules)
    if kind == "string":
        low, high = _length_limits(typed)
        length = max(low, _FRESH_LENGTH)
        return _string_of(typed, length if high is None else min(length, high))
    return _valid_integer(field, typed)


def _field_values(
    field: FieldDescriptor, rules: validate_pb2.FieldRules
) -> Iterator[tuple[str, Any, bool]]:
    kind, typed = _kind(field, rules)
    if kind == "string":
        yield from _string_values(typed)
    else:
        yield from _integer_values(field, typed)


# --- strings ---------------------------------------------------------------


def _length_limits(rules: Any) -> tuple[int, int | None]:
    if rules.HasField("len"):
        return rules.len, rules.len
    high = rules.max_len if rules.HasField("max_len") else None
    return rules.min_len, high


def _matches(rules: Any, value: str) -> bool:
    # Values built here never end in a newline, so `$` means the same in
    # Python's re as in RE2.
    if rules.HasField("pattern") and not re.search(rules.pattern, value):
        return False
    allowed = list(getattr(rules, "in"))
    return (not allowed or value in allowed) and value not in rules.not_in


def _string_of(rules: Any, length: int) -> str:
    """Return a random string of length that passes every string rule."""
    allowed = [value for value in getattr(rules, "in") if len(value) == length]
    if allowed:
        return str(allowed[0])
    for alphabet in (string.ascii_lowercase, string.ascii_uppercase, string.digits):
        value = "".join(random.choices(alphabet, k=length))
        if _matches(rules, value):
            return value
    raise UnsupportedBoundaryError(
        f"no string of {length} letters or digits matches {rules}; extend boundaries.py"
    )


def _string_values(rules: Any) -> Iterator[tuple[str, str, bool]]:
    low, high = _length_limits(rules)
    if low > 0:
        yield f"min_len={low}", _string_of(rules, low), True
        yield f"length={low - 1}", "a" * (low - 1), False
    if high is not None:
        yield f"max_len={high}", _string_of(rules, high), True
        yield f"length={high + 1}", _string_of(rules, high) + "a", False
    if rules.HasField("pattern"):
        yield "pattern", _pattern_breaker(rules, max(low, 1)), False
    for value in rules.not_in:
        yield f"not_in={value!r}", value, False


def _pattern_breaker(rules: Any, length: int) -> str:
    valid = _string_of(rules, length)
    for character in _PATTERN_BREAKERS:
        for candidate in (valid[:-1] + character, character + valid[1:]):
            if not re.search(rules.pattern, candidate):
                return candidate
    raise UnsupportedBoundaryError(f"no value breaks the pattern {rules.pattern!r}")


# --- integers --------------------------------------------------------------


def _integer_bounds(field: FieldDescriptor, rules: Any) -> tuple[int, int]:
    """Return the smallest and largest values that the range rules accept."""
    low, high = _INTEGER_RANGES[field.type]
    if rules.HasField("gte"):
        low = max(low, rules.gte)
    if rules.HasField("gt"):
        low = max(low, rules.gt + 1)
    if rules.HasField("lte"):
        high = min(high, rules.lte)
    if rules.HasField("lt"):
        high = min(high, rules.lt - 1)
    return low, high


def _integer_passes(field: FieldDescriptor, rules: Any, value: int) -> bool:
    low, high = _integer_bounds(field, rules)
    allowed = list(getattr(rules, "in"))
    if rules.HasField("const") and value != rules.const:
        return False
    return (
        low <= value <= high
        and value not in rules.not_in
        and (not allowed or value in allowed)
    )


def _valid_integer(field: FieldDescriptor, rules: Any) -> int:
    low, high = _integer_bounds(field, rules)
    candidates = [rules.const, *getattr(rules, "in"), 1, low, high, 0, -1]
    for value in candidates:
        if _integer_passes(field, rules, value):
            return int(value)
    raise UnsupportedBoundaryError(f"{field.full_name}: no value passes {rules}")


def _integer_values(
    field: FieldDescriptor, rules: Any
) -> Iterator[tuple[str, int, bool]]:
    minimum, maximum = _INTEGER_RANGES[field.type]
    low, high = _integer_bounds(field, rules)
    if low > minimum:
        yield f"min={low}", low, _integer_passes(field, rules, low)
        yield f"min-1={low - 1}", low - 1, False
    if high < maximum:
        yield f"max={high}", high, _integer_passes(field, rules, high)
        yield f"max+1={high + 1}", high + 1, False
    for value in rules.not_in:
        yield f"not_in={value}", value, False
    if rules.HasField("const"):
        yield f"const+1={rules.const + 1}", rules.const + 1, False
