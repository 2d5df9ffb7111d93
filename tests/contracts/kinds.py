"""A test-only message type with a field of every kind, in a private pool.

The contracts do not use every field kind, but the message strategies must
handle any contract, so the strategy tests run on this type.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor

F = descriptor_pb2.FieldDescriptorProto
SCALAR_TYPES = {
    "f_double": F.TYPE_DOUBLE,
    "f_float": F.TYPE_FLOAT,
    "f_int64": F.TYPE_INT64,
    "f_uint64": F.TYPE_UINT64,
    "f_int32": F.TYPE_INT32,
    "f_fixed64": F.TYPE_FIXED64,
    "f_fixed32": F.TYPE_FIXED32,
    "f_bool": F.TYPE_BOOL,
    "f_string": F.TYPE_STRING,
    "f_bytes": F.TYPE_BYTES,
    "f_uint32": F.TYPE_UINT32,
    "f_sfixed32": F.TYPE_SFIXED32,
    "f_sfixed64": F.TYPE_SFIXED64,
    "f_sint32": F.TYPE_SINT32,
    "f_sint64": F.TYPE_SINT64,
}


def _field(
    message: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    kind: int,
    *,
    type_name: str = "",
    repeated: bool = False,
    **extra: Any,
) -> None:
    label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
    if type_name:
        extra["type_name"] = type_name
    message.field.add(name=name, number=number, type=kind, label=label, **extra)


def kinds_descriptor() -> Descriptor:
    """Return the descriptor of kinds.test.Kinds, built in a fresh pool."""
    file = descriptor_pb2.FileDescriptorProto(
        name="kinds_test.proto", package="kinds.test", syntax="proto3"
    )
    color = file.enum_type.add(name="Color")
    for number, name in enumerate(["COLOR_UNSPECIFIED", "COLOR_RED", "COLOR_BLUE"]):
        color.value.add(name=name, number=number)
    inner = file.message_type.add(name="Inner")
    _field(inner, "text", 1, F.TYPE_STRING)
    _field(inner, "child", 2, F.TYPE_MESSAGE, type_name=".kinds.test.Inner")

    kinds = file.message_type.add(name="Kinds")
    for number, (name, kind) in enumerate(SCALAR_TYPES.items(), start=1):
        _field(kinds, name, number, kind)
    _field(kinds, "f_enum", 20, F.TYPE_ENUM, type_name=".kinds.test.Color")
    _field(kinds, "f_inner", 21, F.TYPE_MESSAGE, type_name=".kinds.test.Inner")
    _field(kinds, "r_int32", 22, F.TYPE_INT32, repeated=True)
    _field(
        kinds,
        "r_inner",
        23,
        F.TYPE_MESSAGE,
        type_name=".kinds.test.Inner",
        repeated=True,
    )
    _field(kinds, "r_string", 24, F.TYPE_STRING, repeated=True)

    entry = kinds.nested_type.add(name="MStringEntry")
    entry.options.map_entry = True
    _field(entry, "key", 1, F.TYPE_STRING)
    _field(entry, "value", 2, F.TYPE_INT64)
    _field(
        kinds,
        "m_string",
        25,
        F.TYPE_MESSAGE,
        type_name=".kinds.test.Kinds.MStringEntry",
        repeated=True,
    )

    kinds.oneof_decl.add(name="choice")
    _field(kinds, "o_text", 26, F.TYPE_STRING, oneof_index=0)
    _field(
        kinds,
        "o_inner",
        27,
        F.TYPE_MESSAGE,
        type_name=".kinds.test.Inner",
        oneof_index=0,
    )

    # proto3 `optional int32 maybe = 28;` as protoc writes it: a synthetic oneof.
    kinds.oneof_decl.add(name="_maybe")
    _field(kinds, "maybe", 28, F.TYPE_INT32, oneof_index=1, proto3_optional=True)

    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return pool.FindMessageTypeByName("kinds.test.Kinds")
