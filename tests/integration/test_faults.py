"""A real aisf under faults, on both transports: the circuit breaker and its fallbacks, the operator's
control of it, a bounded queue answering 429 / RESOURCE_EXHAUSTED, and deadlines answering 504 /
DEADLINE_EXCEEDED before an engine is reached."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml
from openai import OpenAI
from tritonclient.utils import InferenceServerException

from aisf.router.v1 import model_control_pb2 as control_pb
from aisf.router.v1 import model_control_pb2_grpc as control_grpc
from aisf.services.llm_samples import LLM_DEMO
from aisf.services.samples import build_tabular_demo
from tests.support.llm import build_llm_models, scrape
from tests.support.processes import AisfProcess
from tests.support.python_models import flaky_sum, slow_echo

pytestmark = pytest.mark.integration

COOLDOWN_S = 1.0
ROW = np.asarray([[1, 2, 3, 4]], dtype=np.float32)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fault-models")
    build_tabular_demo(root)
    breaker = {"failures": 5, "window_s": 60, "cooldown_s": COOLDOWN_S}
    flaky_sum(root, "flaky", circuit_breaker=breaker, fallback={"model": "tabular-demo"})
    rule = {"outputs": [{"name": "output__0", "datatype": "FP32", "dims": [1], "data": [-1.0]}]}
    flaky_sum(root, "flaky-rule", circuit_breaker=breaker, fallback=rule)
    slow_echo(root, "slow", delay_s=0.4, instance_count=1, max_queue_size=2)
    build_llm_models(root, embedder=False)
    shutil.rmtree(root / "minilm-embed", ignore_errors=True)
    config = yaml.safe_load((root / LLM_DEMO / "config.yaml").read_text())
    config["fallback"] = {"message": "The assistant is resting; try again soon."}
    (root / LLM_DEMO / "config.yaml").write_text(yaml.safe_dump(config))
    return root


@pytest.fixture(scope="module")
def triton(server: AisfProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        yield client


@pytest.fixture(scope="module")
def control(server: AisfProcess) -> Iterator[control_grpc.ModelControlServiceStub]:
    with grpc.insecure_channel(server.grpc_url) as channel:
        yield control_grpc.ModelControlServiceStub(channel)


def _rows(values: np.ndarray, name: str = "input__0") -> list[grpcclient.InferInput]:  # type: ignore[type-arg]
    tensor = grpcclient.InferInput(name, list(values.shape), "FP32")
    tensor.set_data_from_numpy(values)
    return [tensor]


def _v2_body(values: np.ndarray, name: str = "input__0") -> dict[str, object]:  # type: ignore[type-arg]
    return {
        "inputs": [
            {"name": name, "shape": list(values.shape), "datatype": "FP32", "data": values.ravel().tolist()}
        ]
    }


def _fail(models: Path, model: str, failing: bool) -> None:
    flag = models / model / "1" / "FAIL"
    if failing:
        flag.touch()
    else:
        flag.unlink(missing_ok=True)


def _breaker_state(rest: httpx.Client, model: str) -> str:
    status = rest.get(f"/v2/models/{model}/status").json()
    return str(status["versions"][0]["breaker"]["state"])


def test_five_failures_open_the_circuit_and_the_fallback_model_answers_on_both_transports(
    server: AisfProcess, models: Path, triton: grpcclient.InferenceServerClient, rest: httpx.Client
) -> None:
    _fail(models, "flaky", True)
    for _ in range(5):
        with pytest.raises(InferenceServerException, match="engine failure on command"):
            triton.infer("flaky", _rows(ROW))
    assert _breaker_state(rest, "flaky") == "BREAKER_STATE_OPEN"
    assert scrape(server.metrics_port, "aisf_breaker_state", model="flaky", version="1") == 2
    answered = triton.infer("flaky", _rows(ROW))  # the 6th: the engine is not called
    parameters = answered.get_response(as_json=True)["parameters"]
    assert parameters["aisf_fallback"]["string_param"] == "tabular-demo"
    assert 0.0 <= float(answered.as_numpy("output__0")[0, 0]) <= 1.0  # tabular-demo's probability
    response = rest.post("/v2/models/flaky/infer", json=_v2_body(ROW))
    assert response.status_code == 200 and response.headers["x-aisf-fallback"] == "tabular-demo"
    assert response.json()["parameters"]["aisf_fallback"] == "tabular-demo"
    status = rest.get("/v2/models/flaky/status").json()["versions"][0]["breaker"]
    assert status["rejected_count"] == 2 and status["last_failure_reason"] == "internal"
    _fail(models, "flaky", False)
    time.sleep(COOLDOWN_S + 0.1)
    recovered = triton.infer("flaky", _rows(ROW))  # the probe reaches the engine and closes it
    assert float(recovered.as_numpy("output__0")[0, 0]) == 10.0
    assert _breaker_state(rest, "flaky") == "BREAKER_STATE_CLOSED"


def test_a_rule_fallback_answers_its_constant_and_says_so(models: Path, rest: httpx.Client) -> None:
    _fail(models, "flaky-rule", True)
    for _ in range(5):
        assert rest.post("/v2/models/flaky-rule/infer", json=_v2_body(ROW)).status_code == 500
    response = rest.post("/v2/models/flaky-rule/infer", json=_v2_body(np.ones((3, 4), np.float32)))
    _fail(models, "flaky-rule", False)
    assert response.status_code == 200 and response.headers["x-aisf-fallback"] == "rule"
    assert response.json()["outputs"][0]["data"] == [-1.0, -1.0, -1.0]


def test_an_operator_forces_a_circuit_over_rest_and_grpc_and_unknown_models_are_typed_errors(
    rest: httpx.Client,
    control: control_grpc.ModelControlServiceStub,
    triton: grpcclient.InferenceServerClient,
) -> None:
    forced = rest.post("/v2/models/slow/breaker", json={"mode": "forced_open"})
    assert forced.status_code == 200
    assert forced.json()["versions"][0]["breaker"]["mode"] == "BREAKER_MODE_FORCED_OPEN"
    refused = rest.post("/v2/models/slow/infer", json=_v2_body(np.ones((1, 2), np.float32), "x"))
    assert refused.status_code == 503 and "circuit open" in refused.json()["error"]
    assert int(refused.headers["retry-after"]) >= 1
    request = control_pb.SetBreakerModeRequest(model_name="slow", mode=control_pb.BREAKER_MODE_AUTO)
    reply = control.SetBreakerMode(request, timeout=10)
    assert reply.versions[0].breaker.state == control_pb.BREAKER_STATE_CLOSED
    assert triton.infer("slow", _rows(np.ones((1, 2), np.float32), "x")).as_numpy("y").shape == (1, 2)
    assert rest.post("/v2/models/slow/breaker", json={"mode": "sideways"}).status_code == 400
    assert rest.post("/v2/models/nope/breaker", json={"mode": "auto"}).status_code == 404
    with pytest.raises(grpc.RpcError) as raised:
        control.GetModelStatus(control_pb.GetModelStatusRequest(model_name=""), timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_full_queue_answers_429_and_resource_exhausted_with_retry_after(
    server: AisfProcess, rest: httpx.Client
) -> None:
    """One engine slot and two waiting places: of six concurrent requests three are refused at once."""
    body = _v2_body(np.ones((1, 2), np.float32), "x")
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: rest.post("/v2/models/slow/infer", json=body), range(6)))
    refused = [a for a in answers if a.status_code == 429]
    assert len(refused) >= 2 and all(a.status_code in (200, 429) for a in answers)
    with ThreadPoolExecutor(3) as pool:  # one runs, two wait: the queue-depth gauge says so
        held = [pool.submit(rest.post, "/v2/models/slow/infer", json=body) for _ in range(3)]
        time.sleep(0.2)
        assert scrape(server.metrics_port, "aisf_queue_depth", model="slow", version="1") == 2
        assert all(h.result().status_code == 200 for h in held)
    assert refused[0].headers["retry-after"] == "1" and "overloaded" in refused[0].json()["error"]

    def grpc_call(_: int) -> grpc.StatusCode | None:
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            try:
                client.infer("slow", _rows(np.ones((1, 2), np.float32), "x"))
            except InferenceServerException as exc:
                return grpc.StatusCode[str(exc.status()).removeprefix("StatusCode.")]
        return None

    with ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(grpc_call, range(6)))
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 2


def test_a_deadline_answers_504_and_deadline_exceeded_without_waiting_for_the_engine(
    server: AisfProcess, rest: httpx.Client, triton: grpcclient.InferenceServerClient
) -> None:
    body = _v2_body(np.ones((1, 2), np.float32), "x")
    with ThreadPoolExecutor(2) as pool:
        busy = pool.submit(rest.post, "/v2/models/slow/infer", json=body)
        time.sleep(0.1)
        started = time.monotonic()
        late = rest.post("/v2/models/slow/infer", json=body, headers={"x-aisf-timeout-ms": "100"})
        assert late.status_code == 504 and time.monotonic() - started < 0.35
        started = time.monotonic()
        with pytest.raises(InferenceServerException, match="DEADLINE_EXCEEDED"):
            triton.infer("slow", _rows(np.ones((1, 2), np.float32), "x"), client_timeout=0.1)
        assert time.monotonic() - started < 0.35
        assert busy.result().status_code == 200
    bad = rest.post("/v2/models/slow/infer", json=body, headers={"x-aisf-timeout-ms": "soon"})
    assert bad.status_code == 400 and "x-aisf-timeout-ms" in bad.json()["error"]
    # Far beyond a day would overflow gRPC's deadline arithmetic and expire at once: refused instead.
    endless = rest.post("/v2/models/slow/infer", json=body, headers={"x-aisf-timeout-ms": "1e15"})
    assert endless.status_code == 400 and "up to 86400000" in endless.json()["error"]


def test_an_open_llm_circuit_answers_the_canned_message_marked_as_a_fallback(
    server: AisfProcess, rest: httpx.Client
) -> None:
    assert rest.post(f"/v2/models/{LLM_DEMO}/breaker", json={"mode": "forced_open"}).status_code == 200
    try:
        with OpenAI(base_url=f"http://{server.http_url}/v1", api_key="unused") as client:
            raw = client.chat.completions.with_raw_response.create(
                model=LLM_DEMO, messages=[{"role": "user", "content": "hi"}], max_tokens=8
            )
            answer = raw.parse()
            assert raw.headers["x-aisf-fallback"] == "rule"
            assert answer.choices[0].message.content == "The assistant is resting; try again soon."
            stream = client.chat.completions.create(
                model=LLM_DEMO, messages=[{"role": "user", "content": "hi"}], max_tokens=8, stream=True
            )
            text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
            assert text == "The assistant is resting; try again soon."
    finally:
        rest.post(f"/v2/models/{LLM_DEMO}/breaker", json={"mode": "auto"})
