"""Protobuf messages as the JSON REST clients expect: 64-bit integers as numbers (proto3's JSON mapping
writes them as strings; the V2 REST spec and Triton send shapes and dims as numbers), and zeros and empty
fields present (as Triton sends statistics: a count of 0 is a count, not a missing key)."""

from __future__ import annotations

from typing import Any, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def to_json(message: Message) -> dict[str, Any]:
    descriptor = cast(Descriptor, message.DESCRIPTOR)
    document = MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _numbers(document, descriptor)


def _numbers(data: dict[str, Any], descriptor: Descriptor) -> dict[str, Any]:
    for name, value in data.items():
        field = descriptor.fields_by_name.get(name)
        if field is None:
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            entry = field.message_type
            if entry.GetOptions().map_entry:
                value_field = entry.fields_by_name["value"]
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    for item in value.values():
                        _numbers(item, value_field.message_type)
                elif value_field.type in _INT64:
                    data[name] = {k: int(v) for k, v in value.items()}
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, dict):
                        _numbers(item, entry)
            elif isinstance(value, dict):
                _numbers(value, entry)
        elif field.type in _INT64:
            data[name] = [int(v) for v in value] if isinstance(value, list) else int(value)
    return data
