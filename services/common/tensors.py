"""Domain types of an inference: V2 datatypes, tensors, requests and responses (no protobuf here)."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from aisf.services.common.errors import InvalidInput

ParameterValue = bool | int | float | str
Parameters = Mapping[str, ParameterValue]

# V2 datatype -> numpy dtype (little-endian, as on the wire). BYTES is an object array of bytes.
NUMPY_DTYPES: dict[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(np.object_),
}
DATATYPES = frozenset(NUMPY_DTYPES)


def datatype_of(array: npt.NDArray[np.generic]) -> str:
    """The V2 datatype name of a numpy array (object/str arrays are BYTES)."""
    if array.dtype.kind in "OSU":
        return "BYTES"
    for name, dtype in NUMPY_DTYPES.items():
        if name != "BYTES" and dtype == array.dtype.newbyteorder("<"):
            return name
    raise InvalidInput(f"numpy dtype {array.dtype} has no V2 datatype")


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape)


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Declared tensor: shape holds -1 for a variable dim (the batch dim included)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(slots=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: npt.NDArray[np.generic]
    parameters: dict[str, ParameterValue] = field(default_factory=dict)

    @classmethod
    def from_numpy(cls, name: str, array: npt.NDArray[np.generic]) -> Tensor:
        return cls(name=name, datatype=datatype_of(array), shape=tuple(array.shape), data=array)


@dataclass(slots=True)
class RequestedOutput:
    name: str
    parameters: dict[str, ParameterValue] = field(default_factory=dict)


@dataclass(slots=True)
class InferRequest:
    model_name: str
    model_version: str
    inputs: list[Tensor]
    outputs: list[RequestedOutput] = field(default_factory=list)
    id: str = ""
    parameters: dict[str, ParameterValue] = field(default_factory=dict)


@dataclass(slots=True)
class InferResponse:
    model_name: str
    model_version: str
    outputs: list[Tensor]
    id: str = ""
    parameters: dict[str, ParameterValue] = field(default_factory=dict)


def decode_bytes_tensor(raw: bytes, count: int, name: str) -> npt.NDArray[np.object_]:
    """Parse V2's serialized BYTES tensor (each element: uint32 LE length, then the bytes)."""
    items: list[bytes] = []
    view = memoryview(raw)
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise InvalidInput(f"input '{name}': truncated BYTES element length at byte {offset}")
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidInput(
                f"input '{name}': BYTES element {len(items)} declares {length} bytes, "
                f"only {len(view) - offset} remain"
            )
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if len(items) != count:
        raise InvalidInput(f"input '{name}': shape holds {count} elements but BYTES data has {len(items)}")
    array = np.empty(count, dtype=np.object_)
    array[:] = items
    return array


def encode_bytes_tensor(values: Iterable[object]) -> bytes:
    """Serialize elements (bytes, or anything with str()) in V2's BYTES layout."""
    parts: list[bytes] = []
    for value in values:
        item = value if isinstance(value, bytes) else str(value).encode("utf-8")
        parts.append(struct.pack("<I", len(item)))
        parts.append(item)
    return b"".join(parts)


def array_from_raw(raw: bytes, datatype: str, shape: Sequence[int], name: str) -> npt.NDArray[np.generic]:
    """Decode one raw tensor buffer, checking its byte size against the shape."""
    count = element_count(shape)
    if datatype == "BYTES":
        return decode_bytes_tensor(raw, count, name).reshape(shape)
    dtype = NUMPY_DTYPES[datatype]
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InvalidInput(
            f"input '{name}': {datatype} shape {list(shape)} needs {expected} bytes, got {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def array_to_raw(array: npt.NDArray[np.generic], datatype: str) -> bytes:
    if datatype == "BYTES":
        return encode_bytes_tensor(array.reshape(-1))
    return np.ascontiguousarray(array, dtype=NUMPY_DTYPES[datatype]).tobytes()
