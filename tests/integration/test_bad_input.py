"""Bad input gets a typed 4xx / gRPC status naming the field; the server keeps serving and logs one line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import orjson
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from tests.support.processes import AisfProcess, running_aisf

pytestmark = pytest.mark.integration

LIMIT = 200_000


@pytest.fixture(scope="module")
def small_limit_server(
    sample_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AisfProcess]:
    env = {"AISF_MAX_REQUEST_BYTES": str(LIMIT)}
    with running_aisf(sample_repository, tmp_path_factory.mktemp("data"), env=env) as server:
        yield server


@pytest.fixture(scope="module")
def rest(small_limit_server: AisfProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{small_limit_server.http_url}", timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def stub(small_limit_server: AisfProcess) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(small_limit_server.grpc_url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _tensor(
    name: str = "input__0", shape: list[int] | None = None, datatype: str = "FP32"
) -> dict[str, object]:
    shape = shape or [1, 4]
    return {"name": name, "shape": shape, "datatype": datatype, "data": [0.5] * int(np.prod(shape))}


REST_CASES = [
    ("tabular-demo", b"{bad json", 400, "not valid JSON"),
    ("tabular-demo", orjson.dumps({"inputs": []}), 400, "inputs"),
    ("no-such-model", orjson.dumps({"inputs": [_tensor()]}), 404, "unknown model 'no-such-model'"),
    ("tabular-demo/versions/9", orjson.dumps({"inputs": [_tensor()]}), 404, "no ready version 9"),
    (
        "tabular-demo",
        orjson.dumps({"inputs": [_tensor(datatype="INT32")]}),
        400,
        "input 'input__0' has datatype INT32",
    ),
    (
        "tabular-demo",
        orjson.dumps({"inputs": [_tensor(shape=[1, 5])]}),
        400,
        "input 'input__0' has shape [1, 5]",
    ),
    (
        "tabular-demo",
        orjson.dumps({"inputs": [_tensor(shape=[65, 4])]}),
        400,
        "batch size 65 is outside 1..64",
    ),
    ("tabular-demo", orjson.dumps({"inputs": [_tensor(name="wrong")]}), 400, "unexpected input 'wrong'"),
    (
        "tabular-demo",
        orjson.dumps({"inputs": [_tensor()], "outputs": [{"name": "nope"}]}),
        400,
        "unknown requested output 'nope'",
    ),
]


@pytest.mark.parametrize(("model", "body", "status", "message"), REST_CASES)
def test_rest_bad_input_is_a_typed_4xx(
    rest: httpx.Client, model: str, body: bytes, status: int, message: str
) -> None:
    response = rest.post(f"/v2/models/{model}/infer", content=body)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_rest_binary_byte_size_mismatch_names_the_input(rest: httpx.Client) -> None:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input__0",
                    "shape": [1, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 12},
                }
            ]
        }
    )
    response = rest.post(
        "/v2/models/tabular-demo/infer",
        content=header + b"\0" * 12,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 400
    assert "input 'input__0': FP32 shape [1, 4] needs 16 bytes, got 12" in response.json()["error"]


def test_rest_oversize_request_is_413(rest: httpx.Client) -> None:
    response = rest.post("/v2/models/tabular-demo/infer", content=b"x" * (LIMIT + 1))
    assert response.status_code == 413
    assert f"limit of {LIMIT} bytes" in response.json()["error"]


def test_rest_unknown_route_is_404_json(rest: httpx.Client) -> None:
    response = rest.get("/v2/nothing-here")
    assert response.status_code == 404
    assert "error" in response.json()


def _infer_request(
    shape: tuple[int, ...] = (1, 4), datatype: str = "FP32", raw: bytes | None = None
) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="tabular-demo")
    request.inputs.add(name="input__0", datatype=datatype, shape=shape)
    request.raw_input_contents.append(raw if raw is not None else np.zeros(shape, np.float32).tobytes())
    return request


GRPC_CASES = [
    (
        pb.ModelInferRequest(model_name="tabular-demo"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "request has no inputs",
    ),
    (pb.ModelInferRequest(model_name="ghost"), grpc.StatusCode.NOT_FOUND, "unknown model 'ghost'"),
    (_infer_request(datatype="FP64", raw=bytes(32)), grpc.StatusCode.INVALID_ARGUMENT, "has datatype FP64"),
    (_infer_request(shape=(1, 3), raw=bytes(12)), grpc.StatusCode.INVALID_ARGUMENT, "has shape [1, 3]"),
    (_infer_request(raw=bytes(15)), grpc.StatusCode.INVALID_ARGUMENT, "needs 16 bytes, got 15"),
    (_infer_request(shape=(100, 4)), grpc.StatusCode.INVALID_ARGUMENT, "batch size 100 is outside 1..64"),
    (_infer_request(datatype="FP99", raw=b""), grpc.StatusCode.INVALID_ARGUMENT, "unknown datatype 'FP99'"),
]


@pytest.mark.parametrize(("request_", "code", "message"), GRPC_CASES)
def test_grpc_bad_input_gets_a_typed_status(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
    request_: pb.ModelInferRequest,
    code: grpc.StatusCode,
    message: str,
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(request_, timeout=10)
    assert raised.value.code() == code
    assert message in raised.value.details()


def test_grpc_malformed_protobuf_is_invalid_argument(small_limit_server: AisfProcess) -> None:
    with grpc.insecure_channel(small_limit_server.grpc_url) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as raised:
            call(b"\xff\xff\xff\xff garbage", timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf" in raised.value.details()


def test_grpc_oversize_message_is_resource_exhausted(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    rows = LIMIT // 16 + 10
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(_infer_request(shape=(rows, 4)), timeout=10)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_server_keeps_serving_and_logs_one_line_per_rejection(
    small_limit_server: AisfProcess, rest: httpx.Client, stub: service_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    rest.post("/v2/models/tabular-demo/infer", content=b"{bad json")
    with pytest.raises(grpc.RpcError):
        stub.ModelInfer(_infer_request(raw=bytes(3)), timeout=10)
    response = stub.ModelInfer(_infer_request(), timeout=10)
    assert response.outputs[0].shape == [1, 1]
    log = small_limit_server.log_text()
    assert "Traceback" not in log
    rejected = [orjson.loads(line) for line in log.splitlines() if '"request rejected"' in line]
    assert any(r["reason"] == "invalid_input" and "needs 16 bytes" in r["detail"] for r in rejected)
    assert all("0.5" not in r["detail"] for r in rejected)
