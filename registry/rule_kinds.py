"""Summaries and tests of each protovalidate rule kind.

Each function takes a field descriptor and its typed rules (StringRules,
Int64Rules, ...) and returns the phrases that summarize the rule, such as
["1 to 64 characters", "matching ^[a-z]+$"], and the tests that find what is
wrong with a value. registry.field_rules joins them into one FieldCheck.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from registry.errors import UnsupportedRuleError

# A test returns what is wrong with a value ("65 characters"), or None.
Test = Callable[[Any], str | None]
Compiled = tuple[list[str], list[Test]]

# Values longer than this are shown cut short in error messages, so that a
# huge request does not make a huge status message.
_SHOWN_LENGTH = 40


def shown(value: str | bytes, *, redact: bool = False) -> str:
    """Return a value as error messages show it: cut short, or only its length."""
    unit = "characters" if isinstance(value, str) else "bytes"
    if redact:
        return f"a value of {len(value)} {unit}"
    if len(value) <= _SHOWN_LENGTH:
        return repr(value)
    return f"{value[:_SHOWN_LENGTH]!r}... ({len(value)} {unit})"


def _listed(values: Iterable[Any]) -> str:
    return ", ".join(repr(value) for value in values)


def _bounds(rules: Any, exact: str, low: str, high: str) -> tuple[Any, int, Any]:
    """Return the (exact, minimum, maximum) length limits; None where unset."""
    return (
        getattr(rules, exact) if exact and rules.HasField(exact) else None,
        getattr(rules, low) if rules.HasField(low) else 0,
        getattr(rules, high) if rules.HasField(high) else None,
    )


def _length_phrase(bounds: tuple[Any, int, Any], unit: str) -> str | None:
    exact, low, high = bounds
    if exact is not None:
        return f"exactly {exact} {unit}"
    if high is not None:
        return f"{low} to {high} {unit}" if low else f"at most {high} {unit}"
    if low:
        return f"at least {low} {unit}"
    return None


def _length_test(
    bounds: tuple[Any, int, Any],
    measure: Callable[[Any], int],
    observed: Callable[[int], str],
) -> Test:
    exact, low, high = bounds

    def test(value: Any) -> str | None:
        size = measure(value)
        too_long = high is not None and size > high
        if (exact is not None and size != exact) or size < low or too_long:
            return observed(size)
        return None

    return test


def _characters(count: int) -> str:
    return "an empty string" if count == 0 else f"{count} characters"


def _add_length(
    compiled: Compiled,
    bounds: tuple[Any, int, Any],
    unit: str,
    measure: Callable[[Any], int],
    observed: Callable[[int], str],
) -> None:
    phrase = _length_phrase(bounds, unit)
    if phrase is not None:
        compiled[0].append(phrase)
        compiled[1].append(_length_test(bounds, measure, observed))


def _add_membership(compiled: Compiled, rules: Any, show: Callable[[Any], str]) -> None:
    """Add the const, in and not_in rules, which every scalar kind shares."""
    phrases, tests = compiled
    if rules.HasField("const"):
        const = rules.const
        phrases.append(f"equal to {const!r}")
        tests.append(lambda value: None if value == const else show(value))
    allowed = list(getattr(rules, "in"))
    if allowed:
        # "one of 'a', 'b'" reads better than "a string one of 'a', 'b'".
        if phrases in (["a string"], ["an integer"], ["bytes"]):
            phrases.clear()
        phrases.append(f"one of {_listed(allowed)}")
        tests.append(lambda value: None if value in allowed else show(value))
    rejected = list(rules.not_in)
    if rejected:
        phrases.append(f"other than {_listed(rejected)}")
        tests.append(lambda value: show(value) if value in rejected else None)


class PatternTest:
    """A protovalidate `pattern` rule, run with Python's re module.

    protovalidate patterns are RE2 and match anywhere in the value, as
    re.search does. Python's `$` also matches before a final newline, where
    RE2's does not, so a trailing `$` becomes `\\Z`.
    NOTE: only a trailing `$` is translated, and RE2-only syntax such as
    `\\pN` or `\\z` raises UnsupportedRuleError at startup.
    """

    def __init__(self, field: str, source: str, *, redact: bool) -> None:
        self.source = source
        self.redact = redact
        anchored = source.startswith("^") and _ends_with_anchor(source)
        try:
            self.pattern = re.compile(
                source[:-1] + r"\Z" if _ends_with_anchor(source) else source
            )
            # For ^...$ patterns, the longest prefix that the body matches
            # ends at the first character that breaks the pattern. That is
            # exact for bodies made of character classes and quantifiers.
            self.body = re.compile(source[1:-1]) if anchored else None
        except re.error as exc:
            raise UnsupportedRuleError(
                field, f"pattern {source!r} is not valid in Python's re: {exc}"
            ) from exc

    def __call__(self, value: str) -> str | None:
        if self.pattern.search(value):
            return None
        if self.redact or self.body is None:
            return shown(value, redact=self.redact)
        prefix = self.body.match(value)
        index = prefix.end() if prefix else 0
        if index >= len(value):
            return shown(value)
        return f"{value[index]!r} at index {index}"


def _ends_with_anchor(source: str) -> bool:
    trailing_backslashes = len(source[:-1]) - len(source[:-1].rstrip("\\"))
    return source.endswith("$") and trailing_backslashes % 2 == 0


def string_rules(descriptor: FieldDescriptor, rules: Any) -> Compiled:
    redact = descriptor.GetOptions().debug_redact
    compiled: Compiled = ([], [])
    characters = _bounds(rules, "len", "min_len", "max_len")
    _add_length(compiled, characters, "characters", len, _characters)
    utf8 = _bounds(rules, "len_bytes", "min_bytes", "max_bytes")
    _add_length(
        compiled,
        utf8,
        "bytes of UTF-8",
        lambda value: len(value.encode()),
        lambda count: f"{count} bytes of UTF-8",
    )
    if not compiled[0]:
        compiled[0].append("a string")

    def show(value: str) -> str:
        return shown(value, redact=redact)

    _add_membership(compiled, rules, show)
    phrases, tests = compiled
    for rule, phrase, passes in _SUBSTRING_RULES:
        if rules.HasField(rule):
            part = getattr(rules, rule)
            phrases.append(f"{phrase} {part!r}")
            tests.append(_substring_test(part, passes, show))
    if rules.HasField("pattern"):
        phrases.append(f"matching {rules.pattern}")
        tests.append(PatternTest(descriptor.full_name, rules.pattern, redact=redact))
    return compiled


_SUBSTRING_RULES: list[tuple[str, str, Callable[[str, str], bool]]] = [
    ("prefix", "starting with", lambda value, part: value.startswith(part)),
    ("suffix", "ending with", lambda value, part: value.endswith(part)),
    ("contains", "containing", lambda value, part: part in value),
    ("not_contains", "not containing", lambda value, part: part not in value),
]


def _substring_test(
    part: str, passes: Callable[[str, str], bool], show: Callable[[str], str]
) -> Test:
    return lambda value: None if passes(value, part) else show(value)


def bytes_rules(_descriptor: FieldDescriptor, rules: Any) -> Compiled:
    compiled: Compiled = ([], [])
    bounds = _bounds(rules, "len", "min_len", "max_len")
    _add_length(compiled, bounds, "bytes", len, lambda count: f"{count} bytes")
    if not compiled[0]:
        compiled[0].append("bytes")
    _add_membership(compiled, rules, shown)
    return compiled


def integer_rules(descriptor: FieldDescriptor, rules: Any) -> Compiled:
    compiled: Compiled = (["an integer"], [])
    low = _limit(rules, "gt", "gte")
    high = _limit(rules, "lt", "lte")
    if low is not None and high is not None and low[1] > high[1]:
        # protovalidate reads gt > lt as "outside the range". No contract
        # here needs that, so it is rejected rather than half supported.
        raise UnsupportedRuleError(
            descriptor.full_name,
            "ranges with a lower bound above the upper bound are not supported; "
            "check the value in code",
        )
    phrase = _range_phrase(low, high)
    if phrase:
        compiled[0].append(phrase)
        compiled[1].append(_range_test(low, high))
    _add_membership(compiled, rules, str)
    return compiled


def _limit(rules: Any, strict: str, inclusive: str) -> tuple[str, int] | None:
    for name in (strict, inclusive):
        if rules.HasField(name):
            return name, getattr(rules, name)
    return None


def _range_phrase(low: tuple[str, int] | None, high: tuple[str, int] | None) -> str:
    if low and high and low[0] == "gte" and high[0] == "lte":
        return f"from {low[1]} to {high[1]}"
    words = {
        "gt": "greater than",
        "gte": "at least",
        "lt": "less than",
        "lte": "at most",
    }
    parts = [f"{words[bound[0]]} {bound[1]}" for bound in (low, high) if bound]
    return " and ".join(parts)


def _within(value: int, bound: tuple[str, int] | None) -> bool:
    if bound is None:
        return True
    name, limit = bound
    passes: dict[str, bool] = {
        "gt": value > limit,
        "gte": value >= limit,
        "lt": value < limit,
        "lte": value <= limit,
    }
    return passes[name]


def _range_test(low: tuple[str, int] | None, high: tuple[str, int] | None) -> Test:
    def test(value: int) -> str | None:
        return None if _within(value, low) and _within(value, high) else str(value)

    return test


def enum_rules(descriptor: FieldDescriptor, rules: Any) -> Compiled:
    enum = descriptor.enum_type
    assert enum is not None, "enum rules are declared only on enum fields"
    compiled: Compiled = ([f"a {enum.full_name} value"], [])
    if rules.defined_only:
        compiled[0][0] = f"a defined {enum.full_name} value"
        compiled[1].append(
            lambda value: None if value in enum.values_by_number else str(value)
        )
    _add_membership(compiled, rules, str)
    return compiled


def repeated_rules(_descriptor: FieldDescriptor, rules: Any) -> Compiled:
    compiled: Compiled = ([], [])
    bounds = _bounds(rules, "", "min_items", "max_items")
    _add_length(compiled, bounds, "items", len, lambda count: f"{count} items")
    if not compiled[0]:
        compiled[0].append("a list")
    return compiled


INTEGER_KINDS = (
    "int32", "int64", "uint32", "uint64", "sint32", "sint64",
    "fixed32", "fixed64", "sfixed32", "sfixed64",
)  # fmt: skip
KINDS: dict[str, Callable[[FieldDescriptor, Any], Compiled]] = {
    "string": string_rules,
    "bytes": bytes_rules,
    "enum": enum_rules,
    "repeated": repeated_rules,
    **dict.fromkeys(INTEGER_KINDS, integer_rules),
}
