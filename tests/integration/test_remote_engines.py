"""A remote V2 engine (another aisf) behind v2_remote: the caller's deadline reaches it, and its typed errors
come back through the one shared table with their reason and Retry-After."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest
import yaml
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from aisf.router.v1 import model_control_pb2 as control_pb
from aisf.router.v1 import model_control_pb2_grpc as control_grpc
from aisf.services.common.grpc_errors import REASON_KEY, RETRY_AFTER_KEY
from aisf.services.common.tensors import array_to_raw
from tests.support.models import build_memory_hungry
from tests.support.processes import AisfProcess, running_aisf
from tests.support.python_models import slow_echo

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def back(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AisfProcess]:
    models = tmp_path_factory.mktemp("back-models")
    slow_echo(models, "slow", delay_s=0.6, instance_count=1)
    slow_echo(models, "guarded", delay_s=0.0, circuit_breaker={"cooldown_s": 30})
    build_memory_hungry(models, "hungry", memory_limit_bytes=24 * 1024 * 1024)
    with running_aisf(models, tmp_path_factory.mktemp("back-data"), role="router") as process:
        yield process


@pytest.fixture(scope="module")
def front(back: AisfProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AisfProcess]:
    models = tmp_path_factory.mktemp("front-models")
    for name in ("slow", "guarded", "hungry"):
        (models / name / "1").mkdir(parents=True)
        parameters = {"url": back.grpc_url, "timeout_s": 30, "retries": 0}
        # Four calls at once: a request queues at the remote engine, not here.
        config = {
            "backend": "v2_remote",
            "instance_count": 4,
            "parameters": parameters,
            "circuit_breaker": {"enabled": False},
        }
        (models / name / "config.yaml").write_text(yaml.safe_dump(config))
    with running_aisf(models, tmp_path_factory.mktemp("front-data")) as process:
        yield process


def _request(model: str) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    request.raw_input_contents.append(array_to_raw(np.ones((1, 2), np.float32), "FP32"))
    return request


def _executions(server: AisfProcess, model: str) -> int:
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        stats = stub.ModelStatistics(pb.ModelStatisticsRequest(name=model), timeout=5)
    return int(stats.model_stats[0].execution_count)


def test_the_callers_deadline_reaches_the_remote_engine(back: AisfProcess, front: AisfProcess) -> None:
    """A request whose caller's deadline passes while it queues at the remote never runs there: the
    remote gets the caller's deadline, not the adapter's fixed 30 s timeout."""
    before = _executions(back, "slow")
    with grpc.insecure_channel(front.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        busy = stub.ModelInfer.future(_request("slow"), timeout=10)  # holds the remote's one slot 0.6 s
        time.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as raised:
            stub.ModelInfer(_request("slow"), timeout=0.2)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 0.5
        assert len(busy.result().outputs) == 2
    time.sleep(0.8)  # long enough for the remote to have run the late request, had it kept it
    assert _executions(back, "slow") == before + 1


def test_a_remote_engines_out_of_memory_stays_out_of_memory(front: AisfProcess) -> None:
    """Through the shared table and the reason trailer, RESOURCE_EXHAUSTED from a remote aisf that ran out
    of memory is a 507 engine_out_of_memory here too (the landed main made it a 429 engine_overloaded,
    inviting the client to retry the same request)."""
    body = {"inputs": [{"name": "x", "shape": [64, 1024], "datatype": "FP32", "data": [0.5] * 64 * 1024}]}
    with httpx.Client(base_url=f"http://{front.http_url}", timeout=30) as rest:
        answer = rest.post("/v2/models/hungry/infer", json=body)
    assert answer.status_code == 507 and "out of memory" in answer.json()["error"]


def test_a_remote_aisfs_typed_error_keeps_its_reason_and_retry_after(
    back: AisfProcess, front: AisfProcess
) -> None:
    """The landed main matched status names only: an open circuit upstream became engine_unavailable
    with Retry-After 1 instead of circuit_open with the circuit's own cool-down."""
    with grpc.insecure_channel(back.grpc_url) as channel:
        control = control_grpc.ModelControlServiceStub(channel)
        mode = control_pb.BREAKER_MODE_FORCED_OPEN
        control.SetBreakerMode(control_pb.SetBreakerModeRequest(model_name="guarded", mode=mode), timeout=5)
    with grpc.insecure_channel(front.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.ModelInfer(_request("guarded"), timeout=5)
    error = raised.value
    trailers = dict(error.trailing_metadata())  # type: ignore[attr-defined]
    assert error.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert trailers[REASON_KEY] == "circuit_open" and int(trailers[RETRY_AFTER_KEY]) > 1
    assert "remote model 'guarded'" in error.details()  # type: ignore[attr-defined]
