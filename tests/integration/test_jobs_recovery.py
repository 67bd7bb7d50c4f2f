"""Nothing lost, nothing done twice: a SIGTERM'd worker hands over, Temporal restarts, Temporal is down."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as v2_pb

from aisf.job.v1 import job_service_pb2 as pb
from aisf.job.v1 import job_service_pb2_grpc as pb_grpc
from tests.support.databases import fresh_database
from tests.support.jobs import submit, tabular_request, wait_final
from tests.support.processes import running_aisf, stop_process
from tests.support.python_models import recorded, recorder
from tests.support.temporal import running_temporal

pytestmark = pytest.mark.integration

ITEMS = 1000


def _slow_items() -> tuple[list[bytes], np.ndarray]:  # type: ignore[type-arg]
    """1000 single-row requests to the recording model, ~3 ms each; row i holds i."""
    rows = np.zeros((ITEMS, 2), dtype=np.float32)
    rows[:, 0] = np.arange(ITEMS)
    requests = []
    for row in rows:
        request = v2_pb.ModelInferRequest()
        request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
        request.raw_input_contents.append(row.tobytes())
        requests.append(request.SerializeToString())
    return requests, rows[:, 0]


@pytest.fixture
def slow_repository(tmp_path: Path) -> Path:
    recorder(tmp_path / "models", "slow", delay_s=0.003)
    return tmp_path / "models"


def _each_item_ran_once(repository: Path) -> None:
    """Counted at the engine, across every process that served it: no item skipped, none repeated."""
    assert sorted(recorded(repository / "slow")) == [float(i) for i in range(ITEMS)]


def _job(stub: pb_grpc.JobServiceStub, job_id: str) -> pb.Job:
    return stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=30).job


def test_sigterm_worker_checkpoints_and_another_worker_resumes_exactly_once(
    slow_repository: Path, tmp_path: Path
) -> None:
    queue = f"spot-{time.monotonic_ns()}"
    with ExitStack() as stack:
        database = stack.enter_context(fresh_database("postgresql", tmp_path))
        shared = {"AISF_DATABASE_URL": database, "AISF_JOB_TASK_QUEUE": queue}
        # The platform itself keeps no worker on the jobs queue: workers A and B are separate processes.
        platform = stack.enter_context(
            running_aisf(
                slow_repository,
                tmp_path / "p",
                env={**shared, "AISF_WORKER_TASK_QUEUES": json.dumps([f"{queue}-idle"])},
            )
        )
        worker_env = {**shared, "AISF_ROUTER_ADDRESS": platform.grpc_url, "AISF_SHUTDOWN_GRACE_S": "10"}
        worker_a = stack.enter_context(
            running_aisf(slow_repository, tmp_path / "a", env=worker_env, role="worker")
        )
        channel = stack.enter_context(grpc.insecure_channel(platform.grpc_url))
        stub = pb_grpc.JobServiceStub(channel)
        requests, expected = _slow_items()
        job_id = stub.SubmitJob(
            pb.SubmitJobRequest(model_name="slow", requests=requests), timeout=30
        ).job.job_id
        deadline = time.monotonic() + 60
        while _job(stub, job_id).items_done < 100:
            assert time.monotonic() < deadline, "worker A made no progress"
            time.sleep(0.05)
        assert stop_process(worker_a.process) == 0
        interrupted = _job(stub, job_id)
        assert interrupted.state == pb.JOB_STATE_RUNNING and 0 < interrupted.items_done < ITEMS
        stack.enter_context(running_aisf(slow_repository, tmp_path / "b", env=worker_env, role="worker"))
        deadline = time.monotonic() + 120
        while (job := _job(stub, job_id)).state not in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED):
            assert time.monotonic() < deadline, "worker B did not finish the job"
            time.sleep(0.1)
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.error_message
    assert job.resumed_from > 0
    assert job.attempts >= 2
    assert len(job.responses) == ITEMS
    answers = [
        np.frombuffer(v2_pb.ModelInferResponse.FromString(r).raw_output_contents[0], np.float32)[0]
        for r in job.responses
    ]
    np.testing.assert_allclose(answers, expected, rtol=1e-5)
    _each_item_ran_once(slow_repository)
    log = worker_a.log_text()
    assert "Traceback" not in log


def test_restarting_temporal_mid_job_loses_no_job(slow_repository: Path, tmp_path: Path) -> None:
    with running_temporal(tmp_path) as temporal:
        env = {"AISF_TEMPORAL_ADDRESS": temporal.address}
        with running_aisf(slow_repository, tmp_path / "data", env=env) as server:
            with grpc.insecure_channel(server.grpc_url) as channel:
                stub = pb_grpc.JobServiceStub(channel)
                requests, expected = _slow_items()
                job_id = stub.SubmitJob(
                    pb.SubmitJobRequest(model_name="slow", requests=requests), timeout=30
                ).job.job_id
                while _job(stub, job_id).items_done < 50:
                    time.sleep(0.05)
                temporal.stop()
                time.sleep(2)
                temporal.start()
                deadline = time.monotonic() + 120
                while (job := _job(stub, job_id)).state not in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED):
                    assert time.monotonic() < deadline, "the job did not finish after Temporal came back"
                    time.sleep(0.2)
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.error_message
    answers = [
        np.frombuffer(v2_pb.ModelInferResponse.FromString(r).raw_output_contents[0], np.float32)[0]
        for r in job.responses
    ]
    np.testing.assert_allclose(answers, expected, rtol=1e-5)
    _each_item_ran_once(slow_repository)


def test_a_job_submitted_while_temporal_is_down_is_accepted_and_runs_when_it_returns(
    sample_repository: Path, tmp_path: Path
) -> None:
    """The job is durable in the metadata DB when the 202 leaves; its workflow starts from the outbox
    once Temporal is back (the landed main answered 503 and kept nothing)."""
    with running_temporal(tmp_path) as temporal:
        env = {"AISF_TEMPORAL_ADDRESS": temporal.address}
        with running_aisf(sample_repository, tmp_path / "data", env=env) as server:
            with httpx.Client(base_url=f"http://{server.http_url}", timeout=30) as rest:
                temporal.stop()
                body = {"model": "tabular-demo", "requests": [tabular_request([1, 2, 3, 4])] * 3}
                started = time.monotonic()
                accepted = submit(rest, body, tenant="down")
                assert accepted.status_code == 202 and time.monotonic() - started < 2
                job_id = accepted.json()["job_id"]
                time.sleep(1.5)
                assert rest.get(f"/v1/jobs/{job_id}").json()["state"] == "queued"
                temporal.start()
                finished = wait_final(rest, job_id, timeout_s=60)
    assert finished["state"] == "succeeded" and len(finished["result"]["responses"]) == 3


def test_a_job_accepted_before_a_restart_starts_after_it(sample_repository: Path, tmp_path: Path) -> None:
    """Nothing accepted is lost: the outbox is read again when the job service starts."""
    with running_temporal(tmp_path) as temporal:
        env = {"AISF_TEMPORAL_ADDRESS": temporal.address}
        with running_aisf(sample_repository, tmp_path / "data", env=env) as server:
            with httpx.Client(base_url=f"http://{server.http_url}", timeout=30) as rest:
                temporal.stop()
                body = {"model": "tabular-demo", "requests": [tabular_request([1, 2, 3, 4])]}
                job_id = submit(rest, body, tenant="restart").json()["job_id"]
        temporal.start()
        with running_aisf(sample_repository, tmp_path / "data", env=env) as server:
            with httpx.Client(base_url=f"http://{server.http_url}", timeout=30) as rest:
                assert wait_final(rest, job_id, timeout_s=60)["state"] == "succeeded"


def test_with_ack_started_a_submit_while_temporal_is_down_is_503_and_writes_nothing(
    sample_repository: Path, tmp_path: Path
) -> None:
    with running_temporal(tmp_path) as temporal:
        env = {"AISF_TEMPORAL_ADDRESS": temporal.address, "AISF_JOB_ACK": "started"}
        with running_aisf(sample_repository, tmp_path / "data", env=env) as server:
            with httpx.Client(base_url=f"http://{server.http_url}", timeout=30) as rest:
                temporal.stop()
                body = {
                    "model": "tabular-demo",
                    "requests": [tabular_request([1, 2, 3, 4])],
                    "idempotency_key": "k1",
                }
                refused = submit(rest, body, tenant="down")
                assert refused.status_code == 503
                assert refused.headers["retry-after"] == "1"
                assert (
                    "Temporal" in refused.json()["error"] and "nothing was queued" in refused.json()["error"]
                )
                assert rest.get("/v1/jobs", params={"tenant": "down"}).json()["jobs"] == []
                temporal.start()
                accepted = submit(rest, body, tenant="down")
                assert accepted.status_code == 202
                assert wait_final(rest, accepted.json()["job_id"])["state"] == "succeeded"


def test_a_group_slower_than_the_heartbeat_timeout_runs_each_item_once(
    tmp_path: Path, temporal_server: object
) -> None:
    """16 items of 0.45 s one after another make a 7.2 s group under a 4 s heartbeat timeout: the
    activity beats while the group runs, so Temporal never takes the worker for dead and starts a second
    attempt beside it (the landed main beat only between groups). The SDK throttles heartbeats to 0.8x
    the timeout, so a longer timeout leaves a loaded machine more slack."""
    repository = tmp_path / "models"
    recorder(repository, "slow", delay_s=0.45)
    env = {"AISF_JOB_HEARTBEAT_TIMEOUT_S": "4", "AISF_JOB_ITEM_CONCURRENCY": "1"}
    requests = [
        {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [i, 0]}]} for i in range(16)
    ]
    with running_aisf(repository, tmp_path / "data", env=env) as server:
        with httpx.Client(base_url=f"http://{server.http_url}", timeout=30) as rest:
            job = submit(rest, {"model": "slow", "requests": requests}).json()
            finished = wait_final(rest, job["job_id"], timeout_s=60)
    assert finished["state"] == "succeeded" and finished["attempts"] == 1, finished
    assert sorted(recorded(repository / "slow")) == [float(i) for i in range(16)]
