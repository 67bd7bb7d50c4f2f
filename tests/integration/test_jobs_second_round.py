"""The jobs lane's second round, with real processes: out-of-memory resumes where it stopped, watches end
when a workflow is terminated outside aisf, a large submit does not stall inference, job bodies obey the
size limit and are read as JSON whatever the content type, and LLM work runs as jobs."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from temporalio.client import Client
from tritonclient.grpc import service_pb2 as v2_pb
from tritonclient.grpc import service_pb2_grpc as v2_grpc

from aisf.adapters.onnx_embedding import build_sample as build_embedder
from aisf.job.v1 import job_service_pb2 as pb
from aisf.job.v1 import job_service_pb2_grpc as pb_grpc
from aisf.services.llm_samples import LLM_DEMO
from tests.support.jobs import submit, tabular_request, wait_final
from tests.support.processes import AisfProcess
from tests.support.python_models import recorded, recorder, slow_echo

pytestmark = pytest.mark.integration

LIMIT = 2_000_000


@pytest.fixture(scope="module")
def models(sample_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("jobs-models")
    for name in ("tabular-demo", LLM_DEMO):
        shutil.copytree(sample_repository / name, root / name)
    build_embedder(root)
    recorder(root, "oom", oom_rows=2)
    slow_echo(root, "slow", delay_s=1.0)
    return root


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return {"AISF_MAX_REQUEST_BYTES": str(LIMIT), "AISF_JOB_MAX_ITEMS": "100000"}


def _x(rows: np.ndarray) -> dict[str, object]:  # type: ignore[type-arg]
    return {
        "inputs": [
            {"name": "x", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}
        ]
    }


def test_out_of_memory_resumes_at_the_item_that_did_not_fit_and_runs_each_item_once(
    models: Path, rest: httpx.Client
) -> None:
    """Items 0-19 fit; item 20 (4 rows) runs out of memory; halved to 2 rows a call it fits. The next
    activity starts at item 20: the landed main started it at item 0 and ran items 0-19 twice."""
    requests = [_x(np.array([[i, 0]], np.float32)) for i in range(20)]
    requests.append(_x(np.array([[20, 0], [20.25, 0], [20.5, 0], [20.75, 0]], np.float32)))
    requests += [_x(np.array([[i, 0]], np.float32)) for i in range(21, 30)]
    job = submit(rest, {"model": "oom", "requests": requests}).json()
    finished = wait_final(rest, job["job_id"])
    assert finished["state"] == "succeeded", finished
    expected = [float(i) for i in range(20)] + [20.0, 20.25, 20.5, 20.75] + [float(i) for i in range(21, 30)]
    assert sorted(recorded(models / "oom")) == expected


async def _terminate(address: str, job_id: str) -> None:
    client = await Client.connect(address)
    await client.get_workflow_handle(job_id).terminate("by an operator, outside aisf")


def test_a_watch_ends_failed_when_the_workflow_is_terminated_outside_aisf(
    server: AisfProcess, rest: httpx.Client, temporal_server: object
) -> None:
    """The landed main's WatchJob and /events never asked Temporal and polled the database forever."""
    job_id = submit(rest, {"model": "slow", "requests": [_x(np.ones((1, 2), np.float32))] * 20}).json()[
        "job_id"
    ]
    watched: list[pb.Job] = []

    def watch() -> None:
        with grpc.insecure_channel(server.grpc_url) as channel:
            stream = pb_grpc.JobServiceStub(channel).WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=30)
            watched.extend(update.job for update in stream)

    watcher = threading.Thread(target=watch)
    watcher.start()
    deadline = time.monotonic() + 30
    while rest.get(f"/v1/jobs/{job_id}").json()["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    asyncio.run(_terminate(temporal_server.address, job_id))  # type: ignore[attr-defined]
    with rest.stream("GET", f"/v1/jobs/{job_id}/events") as events:
        lines = [line for line in events.iter_lines() if line.startswith("data:")]
    watcher.join(20)
    assert not watcher.is_alive(), "WatchJob did not end"
    assert watched[-1].state == pb.JOB_STATE_FAILED and watched[-1].error_type == "workflow_ended"
    assert '"state":"failed"' in lines[-1]


def test_a_large_submit_does_not_stall_inference_served_by_the_same_process(server: AisfProcess) -> None:
    """30,000 items are decoded and checked off the event loop that also serves inference (the landed
    main checked them on it: every inference waited for the whole submit)."""
    item = v2_pb.ModelInferRequest()
    item.inputs.add(name="input__0", datatype="FP32", shape=[1, 4])
    item.raw_input_contents.append(np.ones((1, 4), np.float32).tobytes())
    raw = item.SerializeToString()
    latencies: list[float] = []
    stop = threading.Event()

    def infer_meanwhile() -> None:
        with grpc.insecure_channel(server.grpc_url) as channel:
            stub = v2_grpc.GRPCInferenceServiceStub(channel)
            request = v2_pb.ModelInferRequest()
            request.CopyFrom(item)
            request.model_name = "tabular-demo"
            while not stop.is_set():
                started = time.monotonic()
                stub.ModelInfer(request, timeout=30)
                latencies.append(time.monotonic() - started)

    inferring = threading.Thread(target=infer_meanwhile)
    inferring.start()
    time.sleep(0.3)
    with grpc.insecure_channel(
        server.grpc_url, options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        started = time.monotonic()
        submitted = pb_grpc.JobServiceStub(channel).SubmitJob(
            pb.SubmitJobRequest(model_name="tabular-demo", requests=[raw] * 30_000), timeout=60
        )
        submit_s = time.monotonic() - started
    stop.set()
    inferring.join()
    assert submitted.created
    assert max(latencies) < max(0.2, submit_s / 3), (max(latencies), submit_s)


def test_a_job_body_over_the_request_size_limit_is_413(rest: httpx.Client) -> None:
    """The landed main read /v1/jobs bodies whole, whatever AISF_MAX_REQUEST_BYTES said."""
    body = {"model": "tabular-demo", "requests": [tabular_request([1.0, 2.0, 3.0, 4.0])] * 30_000}
    answer = submit(rest, body)
    assert answer.status_code == 413 and "limit" in answer.json()["error"]


def test_a_job_body_without_a_json_content_type_is_read_as_json(rest: httpx.Client) -> None:
    """What the README's own curl example sends (curl -d: application/x-www-form-urlencoded)."""
    body = (
        b'{"model": "tabular-demo", "requests": ['
        + httpx.Request("POST", "http://x", json=tabular_request([1, 2, 3, 4])).content
        + b"]}"
    )
    answer = rest.post(
        "/v1/jobs", content=body, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert answer.status_code == 202, answer.text
    assert wait_final(rest, answer.json()["job_id"])["state"] == "succeeded"


def test_chat_and_embedding_work_runs_as_jobs_with_the_answers_a_direct_call_gets(rest: httpx.Client) -> None:
    chat = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 8, "temperature": 0}
    job = submit(rest, {"model": LLM_DEMO, "endpoint": "/v1/chat/completions", "requests": [chat] * 3}).json()
    finished = wait_final(rest, job["job_id"])
    assert finished["state"] == "succeeded", finished
    direct = rest.post("/v1/chat/completions", json={"model": LLM_DEMO, **chat}).json()
    for answer in finished["result"]["responses"]:
        assert answer["object"] == "chat.completion" and answer["usage"]["completion_tokens"] == 8
        assert answer["choices"][0]["message"]["content"] == direct["choices"][0]["message"]["content"]
    embed = {
        "model": "minilm-embed",
        "endpoint": "/v1/embeddings",
        "requests": [{"input": ["a cat", "a dog"]}],
    }
    embedded = wait_final(rest, submit(rest, embed).json()["job_id"])
    assert embedded["state"] == "succeeded", embedded
    vectors = embedded["result"]["responses"][0]["data"]
    assert len(vectors) == 2 and len(vectors[0]["embedding"]) == 384


def test_llm_jobs_are_checked_at_submit(rest: httpx.Client) -> None:
    bad = submit(
        rest, {"model": LLM_DEMO, "endpoint": "/v1/chat/completions", "requests": [{"messages": []}]}
    )
    assert bad.status_code == 400 and "requests[0]" in bad.json()["error"]
    wrong = submit(rest, {"model": "tabular-demo", "endpoint": "/v1/chat/completions", "requests": [{}]})
    assert wrong.status_code in (400, 404) and "tabular-demo" in wrong.json()["error"]
    embedding_model = submit(
        rest, {"model": "minilm-embed", "endpoint": "/v1/chat/completions", "requests": [{"messages": []}]}
    )
    assert embedding_model.status_code == 400 and "generative" in embedding_model.json()["error"]
