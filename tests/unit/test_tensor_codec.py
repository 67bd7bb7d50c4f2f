"""The tensor codecs (raw V2 bytes, gRPC messages, REST JSON and binary) round-trip and reject garbage."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from aisf.services.common import v2_codec
from aisf.services.common.errors import InvalidInput
from aisf.services.common.tensors import (
    NUMPY_DTYPES,
    InferRequest,
    InferResponse,
    Tensor,
    array_from_raw,
    array_to_raw,
    decode_bytes_tensor,
    encode_bytes_tensor,
)
from aisf.services.common.v2_json import encode_response, parse_request

NUMERIC = sorted(k for k in NUMPY_DTYPES if k != "BYTES")
shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5)


@st.composite
def tensors(draw: st.DrawFn) -> Tensor:
    datatype = draw(st.sampled_from([*NUMERIC, "BYTES"]))
    shape = draw(shapes)
    if datatype == "BYTES":
        items = draw(
            st.lists(st.binary(max_size=12), min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))
        )
        data = np.empty(len(items), dtype=np.object_)
        data[:] = items
        array = data.reshape(shape)
    else:
        array = draw(hnp.arrays(NUMPY_DTYPES[datatype], shape))
    return Tensor(draw(st.text(min_size=1, max_size=8)), datatype, tuple(shape), array)


def _same(a: np.ndarray, b: np.ndarray) -> bool:  # type: ignore[type-arg]
    if a.dtype.kind == "f":
        return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    return a.shape == b.shape and bool(np.all(a == b))


@given(tensors())
def test_raw_bytes_round_trip_every_datatype(tensor: Tensor) -> None:
    raw = array_to_raw(tensor.data, tensor.datatype)
    assert _same(array_from_raw(raw, tensor.datatype, tensor.shape, tensor.name), tensor.data)


@given(st.lists(st.binary(max_size=40), max_size=20))
def test_bytes_tensor_serialization_round_trips(items: list[bytes]) -> None:
    assert list(decode_bytes_tensor(encode_bytes_tensor(items), len(items), "t")) == items


@given(st.binary(max_size=64), st.integers(min_value=0, max_value=8))
def test_bytes_tensor_decoder_never_crashes_on_garbage(raw: bytes, count: int) -> None:
    try:
        decoded = decode_bytes_tensor(raw, count, "t")
    except InvalidInput as error:
        assert "'t'" in error.message
    else:
        assert len(decoded) == count


@given(st.lists(tensors(), min_size=1, max_size=3, unique_by=lambda t: t.name))
def test_grpc_request_round_trips_through_protobuf(inputs: list[Tensor]) -> None:
    request = InferRequest("m", "2", inputs, id="req-1", parameters={"priority": 3, "flag": True})
    wire = v2_codec.request_to_proto(request).SerializeToString()
    decoded = v2_codec.request_from_proto(type(v2_codec.request_to_proto(request)).FromString(wire))
    assert (decoded.model_name, decoded.model_version, decoded.id) == ("m", "2", "req-1")
    assert decoded.parameters == {"priority": 3, "flag": True}
    for got, sent in zip(decoded.inputs, inputs, strict=True):
        assert (got.name, got.datatype, got.shape) == (sent.name, sent.datatype, sent.shape)
        assert _same(got.data, sent.data)


@given(tensors(), st.booleans())
@settings(max_examples=60)
def test_rest_response_round_trips_as_json_or_binary(tensor: Tensor, binary: bool) -> None:
    if tensor.datatype == "BYTES":
        # JSON carries BYTES as text, so keep the example to valid UTF-8.
        tensor.data = np.vectorize(lambda b: b.decode("utf-8", "replace").encode(), otypes=[object])(
            tensor.data
        )
    body, header_length = encode_response(InferResponse("m", "1", [tensor]), {"": binary})
    finite = tensor.data.dtype.kind != "f" or bool(np.isfinite(tensor.data).all())
    assert (header_length is not None) == (binary or not finite)
    request_body = _as_request(body, header_length, tensor)
    parsed, _ = parse_request("m", "", request_body[0], request_body[1])
    got = parsed.inputs[0].data
    if tensor.datatype == "FP16" and not binary:
        assert np.allclose(got.astype(np.float32), tensor.data.astype(np.float32), equal_nan=True)
    else:
        assert _same(got, tensor.data)


def _as_request(body: bytes, header_length: int | None, tensor: Tensor) -> tuple[bytes, str | None]:
    """Turn a response's output back into a request input (same tensor layout rules)."""
    import orjson

    header = orjson.loads(body[:header_length] if header_length is not None else body)
    output = header["outputs"][0]
    output["name"] = "x"
    request = {"inputs": [output]}
    if header_length is None:
        return orjson.dumps(request), None
    encoded = orjson.dumps(request)
    return encoded + body[header_length:], str(len(encoded))


_BINARY_HEADER = (
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}'
)


@pytest.mark.parametrize(
    ("body", "header", "field"),
    [
        (b"{not json", None, "not valid JSON"),
        (b'{"inputs": []}', None, "inputs"),
        (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32"}]}', None, "'x' has neither data"),
        (
            b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP99", "data": [1, 2]}]}',
            None,
            "unknown datatype",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}',
            None,
            "holds 3 elements",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": ["a"]}]}',
            None,
            "does not fit",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}]}',
            None,
            "inputs.0.shape.0",
        ),
        (
            _BINARY_HEADER,
            "999",
            "outside the body",
        ),
        (_BINARY_HEADER + b"abc", str(len(_BINARY_HEADER)), "overruns"),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "surprise": 1}',
            None,
            "surprise",
        ),
    ],
)
def test_rest_request_errors_name_the_field(body: bytes, header: str | None, field: str) -> None:
    with pytest.raises(InvalidInput, match=field):
        parse_request("m", "", body, header)


def test_grpc_raw_input_byte_size_mismatch_names_the_input() -> None:
    message = v2_codec.request_to_proto(
        InferRequest("m", "", [Tensor.from_numpy("x", np.zeros(4, np.float32))])
    )
    message.raw_input_contents[0] = b"\0" * 15
    with pytest.raises(InvalidInput, match="input 'x': FP32 shape \\[4\\] needs 16 bytes, got 15"):
        v2_codec.request_from_proto(message)


def test_grpc_typed_contents_are_accepted_like_raw() -> None:
    message = v2_codec.request_to_proto(InferRequest("m", "", []))
    item = message.inputs.add(name="x", datatype="INT32", shape=[2])
    item.contents.int_contents.extend([7, -1])
    decoded = v2_codec.request_from_proto(message)
    assert decoded.inputs[0].data.tolist() == [7, -1]
