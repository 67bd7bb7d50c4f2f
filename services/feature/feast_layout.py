"""Feast's online-store encodings, re-implemented so the hot path never imports feast: entity keys
(serialization v3), Redis hash fields (murmur3-32 of "<view>:<feature>"), and `feast.types.Value`
messages decoded by hand (one scalar field each)."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

import mmh3
import numpy as np
import numpy.typing as npt

# Feast's ValueType numbers (feast/value_type.py) of the scalar types aisf reads and writes.
VALUE_TYPES = {
    "BYTES": 1,
    "STRING": 2,
    "INT32": 3,
    "INT64": 4,
    "DOUBLE": 5,
    "FLOAT": 6,
    "BOOL": 7,
    "UNIX_TIMESTAMP": 8,
}
ENTITY_KEY_TYPES = frozenset({"STRING", "BYTES", "INT32", "INT64"})
_U32 = struct.Struct("<I")
_ENTITY_VALUE: dict[str, Callable[[Any], bytes]] = {
    "STRING": lambda v: str(v).encode("utf-8"),
    "BYTES": bytes,
    "INT32": struct.Struct("<i").pack,
    "INT64": struct.Struct("<q").pack,
}


def entity_key(join_keys: Sequence[str], types: Sequence[str], values: Sequence[object]) -> bytes:
    """Feast's `serialize_entity_key` (version 3): count, then the keys sorted by name, then their
    values, each as type + length + bytes."""
    order = sorted(range(len(join_keys)), key=join_keys.__getitem__)
    out = [_U32.pack(len(join_keys))]
    for i in order:
        name = join_keys[i].encode("utf-8")
        out += (_U32.pack(VALUE_TYPES["STRING"]), _U32.pack(len(name)), name)
    for i in order:
        raw = _ENTITY_VALUE[types[i]](values[i])
        out += (_U32.pack(VALUE_TYPES[types[i]]), _U32.pack(len(raw)), raw)
    return b"".join(out)


class EntityKeys:
    """Encodes one feature view's entity keys (+ project): the join-key part is the same for every
    entity, so it is built once; a single integer key is one struct pack."""

    def __init__(self, join_keys: Sequence[str], types: Sequence[str], project: str) -> None:
        self._join_keys, self._types = tuple(join_keys), tuple(types)
        self._suffix = project.encode("utf-8")
        single = len(join_keys) == 1 and types[0] in ("INT64", "INT32")
        if single:
            empty = entity_key(join_keys, types, [0])
            size = 8 if types[0] == "INT64" else 4
            self._prefix = empty[: len(empty) - size]
            self._pack = struct.Struct("<q" if size == 8 else "<i").pack
        self._single = single

    def encode(self, values: Sequence[object]) -> bytes:
        if self._single:
            return self._prefix + self._pack(values[0]) + self._suffix
        return entity_key(self._join_keys, self._types, values) + self._suffix


def field_hash(view: str, feature: str) -> bytes:
    """The hash field of one feature: murmur3-32 of "<view>:<feature>", 4 bytes little-endian."""
    return struct.pack("<I", mmh3.hash(f"{view}:{feature}", signed=False))


def timestamp_field(view: str) -> bytes:
    return f"_ts:{view}".encode()


def _varint(data: bytes, at: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[at]
        at += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, at
        shift += 7


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _length_delimited(data: bytes) -> bytes:
    size, at = _varint(data, 1)
    return data[at : at + size]


def _int(data: bytes) -> int:
    return _signed64(_varint(data, 1)[0])


# First byte of a serialized Value (field number << 3 | wire type) -> the value it carries.
_DECODERS: dict[int, Callable[[bytes], object]] = {
    0x0A: _length_delimited,  # bytes_val = 1
    0x12: lambda d: _length_delimited(d).decode("utf-8"),  # string_val = 2
    0x18: _int,  # int32_val = 3
    0x20: _int,  # int64_val = 4
    0x29: lambda d: struct.unpack_from("<d", d, 1)[0],  # double_val = 5
    0x35: lambda d: struct.unpack_from("<f", d, 1)[0],  # float_val = 6
    0x38: lambda d: d[1] != 0,  # bool_val = 7
    0x40: _int,  # unix_timestamp_val = 8
}


class UnsupportedValue(ValueError):
    """A stored value of a type aisf does not decode (lists, maps): Feast's SDK path reads those."""


def decode_value(data: bytes) -> object | None:
    """A serialized `feast.types.Value` holding one scalar; None for a null (empty) value."""
    if not data:
        return None
    decoder = _DECODERS.get(data[0])
    if decoder is None:
        raise UnsupportedValue(f"Feast value with field tag {data[0]:#x} is not a scalar aisf decodes")
    return decoder(data)


def _encode_varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_value(value_type: str, value: object) -> bytes:
    """The inverse of decode_value (tests and tools write Feast's layout with it)."""
    if value is None:
        return b""
    tag = VALUE_TYPES[value_type] << 3
    if value_type in ("BYTES", "STRING"):
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)  # type: ignore[call-overload]
        return bytes([tag | 2]) + _encode_varint(len(raw)) + raw
    if value_type == "DOUBLE":
        return bytes([tag | 1]) + struct.pack("<d", value)
    if value_type == "FLOAT":
        return bytes([tag | 5]) + struct.pack("<f", value)
    return bytes([tag]) + _encode_varint(int(value))  # type: ignore[call-overload]


def decode_timestamp_ns(data: bytes | None) -> int:
    """A serialized google.protobuf.Timestamp (seconds = 1, nanos = 2) in nanoseconds; 0 when absent."""
    if not data:
        return 0
    seconds = nanos = at = 0
    while at < len(data):
        tag = data[at]
        value, at = _varint(data, at + 1)
        if tag == 0x08:
            seconds = _signed64(value)
        elif tag == 0x10:
            nanos = value
    return seconds * 1_000_000_000 + nanos


# Fixed-width scalars: their tag, and the record a serialized one is (tag byte, little-endian value).
_FIXED = {
    "DOUBLE": (0x29, np.dtype([("tag", "u1"), ("value", "<f8")])),
    "FLOAT": (0x35, np.dtype([("tag", "u1"), ("value", "<f4")])),
}


def decode_fixed_column(raws: Sequence[bytes | None], value_type: str) -> np.ndarray | None:
    """A column whose every value is present and fixed-width, decoded without a Python loop; None when
    the column needs the per-value path (nulls, other types)."""
    fixed = _FIXED.get(value_type)
    if fixed is None:
        return None
    tag, record = fixed
    try:
        if set(map(len, raws)) != {record.itemsize}:  # type: ignore[arg-type]
            return None
    except TypeError:  # a None: a missing value
        return None
    records = np.frombuffer(b"".join(raws), dtype=record)  # type: ignore[arg-type]
    if not (records["tag"] == tag).all():
        return None
    return records["value"]


_VARINT_BYTES = 10
_SHIFTS = np.arange(_VARINT_BYTES, dtype=np.uint64) * np.uint64(7)


def _varints(
    table: npt.NDArray[np.uint8], start: npt.NDArray[np.intp]
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.intp]]:
    """Decode one varint per row of `table` (rows of bytes, zero-padded) starting at `start`: the values
    and the varints' lengths, with no Python loop."""
    rows = np.arange(table.shape[0])[:, None]
    at = np.minimum(start[:, None] + np.arange(_VARINT_BYTES), table.shape[1] - 1)
    window = table[rows, at]
    # A byte belongs to the varint while every byte before it had its continuation bit set.
    more = window >= 0x80
    belongs = np.concatenate(
        [np.ones((len(window), 1), bool), np.cumprod(more[:, :-1], axis=1).astype(bool)], axis=1
    )
    parts = (window & 0x7F).astype(np.uint64) << _SHIFTS
    return np.where(belongs, parts, 0).sum(axis=1, dtype=np.uint64), belongs.sum(axis=1)


def _padded(raws: Sequence[bytes], width: int) -> npt.NDArray[np.uint8]:
    return np.frombuffer(b"".join(r.ljust(width, b"\0") for r in raws), dtype=np.uint8).reshape(
        len(raws), width
    )


_VECTOR_MIN = 64  # below this many values numpy's per-call overhead costs more than the Python loop


def decode_timestamp_column(raws: Sequence[bytes | None]) -> npt.NDArray[np.int64]:
    """Serialized Timestamps (seconds = 1, nanos = 2, either omitted when zero) in nanoseconds; 0 where
    absent."""
    width = 2 * (1 + _VARINT_BYTES)
    present = [r or b"" for r in raws]
    if len(present) < _VECTOR_MIN or any(len(r) > width for r in present):
        return np.fromiter((decode_timestamp_ns(r) for r in raws), dtype=np.int64, count=len(raws))
    table = _padded(present, width + 1)
    n = len(present)
    zero = np.zeros(n, dtype=np.intp)
    has_seconds = table[:, 0] == 0x08
    seconds, used = _varints(table, zero + 1)
    seconds = np.where(has_seconds, seconds, 0)
    nanos_at = np.where(has_seconds, 1 + used, 0)
    has_nanos = table[np.arange(n), nanos_at] == 0x10
    nanos, _ = _varints(table, nanos_at + 1)
    nanos = np.where(has_nanos, nanos, 0)
    return seconds.view(np.int64) * 1_000_000_000 + nanos.view(np.int64)
