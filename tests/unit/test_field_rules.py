"""registry.validation on a test-only message that declares every supported
kind of protovalidate rule, including kinds the contracts do not use yet."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message_factory import GetMessageClass

from protos import validate_pb2
from registry.errors import UnsupportedRuleError
from registry.validation import MessageRules, first_violation

F = descriptor_pb2.FieldDescriptorProto
PACKAGE = "fieldrules.test"


def add_field(
    message: descriptor_pb2.DescriptorProto,
    name: str,
    kind: int,
    rules: dict[str, Any] | None = None,
    **extra: Any,
) -> F:
    field = message.field.add(
        name=name, number=len(message.field) + 1, type=kind, **extra
    )
    field.label = extra.get("label", F.LABEL_OPTIONAL)
    for path, value in (rules or {}).items():
        target: Any = field.options.Extensions[validate_pb2.field]
        *parents, leaf = path.split(".")
        for parent in parents:
            target = getattr(target, parent)
        if isinstance(value, list):
            getattr(target, leaf).extend(value)
        else:
            setattr(target, leaf, value)
    return field


def build(name: str, fill) -> Any:
    """Add a file with one message, filled in by fill(message), to the
    default pool, and return the message class."""
    file = descriptor_pb2.FileDescriptorProto(
        name=f"fieldrules_{name}.proto",
        package=PACKAGE,
        syntax="proto3",
        dependency=["buf/validate/validate.proto"],
    )
    color = file.enum_type.add(name=f"{name}Color")
    color.value.add(name=f"{name.upper()}_COLOR_UNSPECIFIED", number=0)
    color.value.add(name=f"{name.upper()}_COLOR_RED", number=1)
    fill(file.message_type.add(name=name), file)
    pool = descriptor_pool.Default()
    pool.Add(file)
    return GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))


def _fill_kinds(message, file) -> None:
    inner = file.message_type.add(name="KindsInner")
    add_field(inner, "code", F.TYPE_STRING, {"string.len": 3})

    add_field(message, "token", F.TYPE_STRING, {"string.max_bytes": 4})
    add_field(message, "tag", F.TYPE_STRING, {"string.prefix": "t-"})
    add_field(message, "mode", F.TYPE_STRING, {"string.in": ["a", "b"]})
    add_field(message, "key", F.TYPE_STRING, {"string.max_len": 2, "ignore": 1})

    add_field(message, "count", F.TYPE_UINT64, {"uint64.gt": 0, "uint64.lt": 10})
    add_field(message, "level", F.TYPE_SINT32, {"sint32.const": 5})
    add_field(
        message,
        "color",
        F.TYPE_ENUM,
        {"enum.defined_only": True},
        type_name=f".{PACKAGE}.KindsColor",
    )

    add_field(message, "blob", F.TYPE_BYTES, {"bytes.max_len": 2})
    add_field(
        message,
        "items",
        F.TYPE_INT32,
        {"repeated.max_items": 2, "repeated.items.int32.gte": 0},
        label=F.LABEL_REPEATED,
    )
    add_field(
        message,
        "inner",
        F.TYPE_MESSAGE,
        {"required": True},
        type_name=f".{PACKAGE}.KindsInner",
    )
    add_field(message, "secret", F.TYPE_STRING, {"string.min_len": 3})
    message.field[-1].options.debug_redact = True


Kinds = build("Kinds", _fill_kinds)


def valid(**changes: Any) -> Any:
    message = Kinds(
        token="ab", tag="t-1", mode="a", count=3, level=5, color=1, secret="xyz"
    )
    message.inner.code = "abc"
    for name, value in changes.items():
        if name == "items":
            message.items.extend(value)
        else:
            setattr(message, name, value)
    return message


def test_valid_message_has_no_violation():
    assert first_violation(valid()) is None


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"token": "ééé"},
            "token: must be at most 4 bytes of UTF-8; got 6 bytes of UTF-8",
        ),
        ({"tag": "x-1"}, "tag: must be a string starting with 't-'; got 'x-1'"),
        ({"mode": "c"}, "mode: must be one of 'a', 'b'; got 'c'"),
        (
            {"key": "abc"},
            "key: must be an empty string, or at most 2 characters; got 3 characters",
        ),
        (
            {"count": 0},
            "count: must be an integer greater than 0 and less than 10; got 0",
        ),
        (
            {"count": 10},
            "count: must be an integer greater than 0 and less than 10; got 10",
        ),
        ({"level": 6}, "level: must be an integer equal to 5; got 6"),
        (
            {"color": 7},
            "color: must be a defined fieldrules.test.KindsColor value; got 7",
        ),
        ({"blob": b"abc"}, "blob: must be at most 2 bytes; got 3 bytes"),
        ({"items": [1, 2, 3]}, "items: must be at most 2 items; got 3 items"),
        ({"items": [1, -1]}, "items[1]: must be an integer at least 0; got -1"),
        ({"secret": "no"}, "secret: must be at least 3 characters; got 2 characters"),
    ],
)
def test_violation_names_field_rule_and_value(changes, expected):
    violation = first_violation(valid(**changes))

    assert str(violation) == expected


def test_empty_value_is_ignored_when_declared():
    assert first_violation(valid(key="")) is None


def test_missing_required_message_is_a_violation():
    message = valid()
    message.ClearField("inner")

    assert str(first_violation(message)) == "inner: must be set; got no value"


def test_nested_message_violation_has_field_path():
    message = valid()
    message.inner.code = "toolong"

    assert str(first_violation(message)) == (
        "inner.code: must be exactly 3 characters; got 7 characters"
    )


def test_redacted_field_shows_only_length():
    rules = MessageRules.of(Kinds.DESCRIPTOR)

    violation = rules.check_field("secret", "no")

    assert violation is not None
    assert "'no'" not in violation.description


def test_long_value_is_cut_short_in_message():
    violation = first_violation(valid(tag="x" * 10_000))

    assert violation is not None
    assert len(violation.description) < 200
    assert "(10000 characters)" in violation.description


def _fill_email(message, _file) -> None:
    add_field(message, "email", F.TYPE_STRING, {"string.email": True})


def _fill_wrong_kind(message, _file) -> None:
    add_field(message, "name", F.TYPE_STRING, {"int64.gte": 1})


def _fill_cel(message, _file) -> None:
    field = add_field(message, "name", F.TYPE_STRING)
    rule = field.options.Extensions[validate_pb2.field].cel.add()
    rule.id, rule.expression = "name.short", "size(this) < 5"


@pytest.mark.parametrize(
    ("name", "fill", "reason"),
    [
        ("Email", _fill_email, "['email'] are not supported"),
        (
            "WrongKind",
            _fill_wrong_kind,
            "declares int64 rules on a field that takes string",
        ),
        ("Cel", _fill_cel, "CEL rules are not supported"),
    ],
)
def test_unsupported_rule_raises_at_compile(name, fill, reason):
    cls = build(name, fill)

    with pytest.raises(UnsupportedRuleError) as caught:
        MessageRules.of(cls.DESCRIPTOR)

    assert reason in str(caught.value)
