"""google.protobuf.Struct/Value <-> plain Python values, without json_format."""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2


def value_to_python(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "list_value":
        return [value_to_python(item) for item in value.list_value.values]
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind in ("string_value", "bool_value"):
        return getattr(value, kind)
    return None


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    return {key: value_to_python(item) for key, item in struct.fields.items()}


def dict_to_struct(data: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(data)
    return struct
