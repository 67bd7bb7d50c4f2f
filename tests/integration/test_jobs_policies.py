"""Job policies with real processes: OOM halving and the large-GPU queue, retries, priorities, cancel."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import xgboost
import yaml
from temporalio.client import Client

from tests.support.databases import fresh_database
from tests.support.jobs import submit, tabular_request, wait_final, wait_for
from tests.support.models import build_memory_hungry
from tests.support.processes import AisfProcess, free_port, running_aisf
from tests.support.temporal import TemporalServer

pytestmark = pytest.mark.integration


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as resources:
        yield resources


def _rest(server: AisfProcess) -> httpx.Client:
    return httpx.Client(base_url=f"http://{server.http_url}", timeout=30)


def _wide_request(rows: int) -> dict[str, Any]:
    data = np.arange(rows * 1024, dtype=np.float32).reshape(rows, 1024) / 1e6
    return {
        "inputs": [{"name": "x", "shape": [rows, 1024], "datatype": "FP32", "data": data.ravel().tolist()}]
    }


def _statistics(server: AisfProcess, model: str) -> dict[str, Any]:
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        stats: dict[str, Any] = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return stats


def test_out_of_memory_halves_the_batch_until_it_fits(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    build_memory_hungry(repository, "hungry", memory_limit_bytes=24 * 1024 * 1024)
    with running_aisf(repository, tmp_path / "data") as server, _rest(server) as rest:
        job = submit(rest, {"model": "hungry", "requests": [_wide_request(16)]}).json()
        finished = wait_final(rest, job["job_id"])
        stats = _statistics(server, "hungry")
    assert finished["state"] == "succeeded", finished
    output = finished["result"]["responses"][0]["outputs"][0]
    assert output["shape"] == [16, 1]
    expected = (np.arange(16 * 1024, dtype=np.float32).reshape(16, 1024) / 1e6).sum(axis=1) * 1024
    np.testing.assert_allclose(output["data"], expected, rtol=1e-4)
    halvings = int(stats["inference_stats"]["fail"]["count"])
    assert halvings >= 1  # 16 rows never fit in 24 MiB
    assert {b["batch_size"] for b in stats["batch_stats"]} == {str(16 >> halvings)}


def test_out_of_memory_at_one_row_moves_the_work_to_the_large_gpu_queue(
    tmp_path: Path, stack: ExitStack
) -> None:
    small, large = tmp_path / "small", tmp_path / "large"
    build_memory_hungry(small, "hungry", memory_limit_bytes=2 * 1024 * 1024)
    build_memory_hungry(large, "hungry", memory_limit_bytes=0)
    queue = f"q-{uuid.uuid4().hex[:8]}"
    # One metadata database for both pools, as in a deployment: here the real PostgreSQL.
    database = stack.enter_context(fresh_database("postgresql", tmp_path))
    small_env = {
        "AISF_JOB_TASK_QUEUE": queue,
        "AISF_JOB_LARGE_TASK_QUEUE": f"{queue}-large",
        "AISF_DATABASE_URL": database,
    }
    large_env = {
        "AISF_DATABASE_URL": database,
        "AISF_JOB_TASK_QUEUE": f"{queue}-unused",
        "AISF_WORKER_TASK_QUEUES": json.dumps([f"{queue}-large"]),
    }
    with (
        running_aisf(small, tmp_path / "d1", env=small_env) as small_gpu,
        running_aisf(large, tmp_path / "d2", env=large_env) as large_gpu,
        _rest(small_gpu) as rest,
    ):
        job = submit(rest, {"model": "hungry", "requests": [_wide_request(4)]}).json()
        finished = wait_final(rest, job["job_id"])
        small_stats, large_stats = _statistics(small_gpu, "hungry"), _statistics(large_gpu, "hungry")
    assert finished["state"] == "succeeded", finished
    assert finished["result"]["responses"][0]["outputs"][0]["shape"] == [4, 1]
    assert int(small_stats["inference_stats"]["fail"]["count"]) == 3  # 4, 2 and 1 rows
    assert int(small_stats["inference_stats"]["success"].get("count", 0)) == 0
    assert large_stats["inference_count"] == "4"


def _remote_repository(root: Path, url: str) -> Path:
    model_dir = root / "remote-tab"
    (model_dir / "1").mkdir(parents=True)
    config = {"backend": "v2_remote", "parameters": {"url": url, "remote_model": "tabular-demo"}}
    (model_dir / "config.yaml").write_text(yaml.safe_dump(config))
    return root


@pytest.fixture
def upstream_repository(sample_repository: Path, tmp_path: Path) -> Path:
    root = tmp_path / "upstream"
    shutil.copytree(sample_repository / "tabular-demo", root / "tabular-demo")
    return root


def test_system_errors_are_retried_with_backoff_until_the_engine_returns(
    tmp_path: Path, upstream_repository: Path
) -> None:
    port = free_port()
    upstream_args = ["--grpc-port", str(port)]
    with running_aisf(upstream_repository, tmp_path / "up1", args=upstream_args) as upstream:
        gateway_env = {"AISF_JOB_MAX_ATTEMPTS": "5"}
        with running_aisf(
            _remote_repository(tmp_path / "m", f"127.0.0.1:{port}"), tmp_path / "d", env=gateway_env
        ) as front:
            upstream.process.terminate()
            upstream.process.wait(15)
            with _rest(front) as rest:
                job = submit(
                    rest, {"model": "remote-tab", "requests": [tabular_request([1, 2, 3, 4])] * 3}
                ).json()
                deadline_job = wait_for(rest, job["job_id"], 0)
                assert deadline_job["state"] in ("queued", "running")
                time.sleep(2.5)  # attempts 1 and 2 fail while the engine is down
                with running_aisf(upstream_repository, tmp_path / "up2", args=upstream_args):
                    finished = wait_final(rest, job["job_id"], timeout_s=60)
    assert finished["state"] == "succeeded", finished
    assert finished["attempts"] >= 2
    assert len(finished["result"]["responses"]) == 3


def test_retries_stop_after_max_attempts_with_the_typed_error(
    tmp_path: Path, upstream_repository: Path
) -> None:
    port = free_port()
    with running_aisf(upstream_repository, tmp_path / "up", args=["--grpc-port", str(port)]) as upstream:
        env = {"AISF_JOB_MAX_ATTEMPTS": "3"}
        with running_aisf(
            _remote_repository(tmp_path / "m", f"127.0.0.1:{port}"), tmp_path / "d", env=env
        ) as front:
            upstream.process.terminate()
            upstream.process.wait(15)
            with _rest(front) as rest:
                job = submit(
                    rest, {"model": "remote-tab", "requests": [tabular_request([1, 2, 3, 4])]}
                ).json()
                finished = wait_final(rest, job["job_id"], timeout_s=60)
    assert finished["state"] == "failed"
    assert finished["attempts"] == 3
    assert finished["error"]["type"] == "engine_unavailable"


def test_invalid_input_at_run_time_fails_the_job_at_once_without_retry(tmp_path: Path) -> None:
    """The remote model changes under a queued job (now five features): the engine's INVALID_ARGUMENT
    is final, so the job fails on its first attempt."""
    port = free_port()
    features = np.random.default_rng(0).normal(size=(64, 5)).astype(np.float32)
    booster = xgboost.train(
        {"objective": "binary:logistic"}, xgboost.DMatrix(features, label=features[:, 0] > 0), 2
    )
    first, second = tmp_path / "four", tmp_path / "five"
    for root, inputs in ((first, 4), (second, 5)):
        model_dir = root / "tabular-demo"
        (model_dir / "1").mkdir(parents=True)
        if inputs == 5:
            booster.save_model(str(model_dir / "1" / "model.json"))
        else:
            xgboost.train({}, xgboost.DMatrix(features[:, :4], label=features[:, 0]), 1).save_model(
                str(model_dir / "1" / "model.json")
            )
        (model_dir / "config.yaml").write_text(yaml.safe_dump({"backend": "xgboost", "max_batch_size": 8}))
    with running_aisf(first, tmp_path / "u1", args=["--grpc-port", str(port)]) as upstream:
        with running_aisf(_remote_repository(tmp_path / "m", f"127.0.0.1:{port}"), tmp_path / "d") as front:
            upstream.process.terminate()
            upstream.process.wait(15)
            with running_aisf(second, tmp_path / "u2", args=["--grpc-port", str(port)]), _rest(front) as rest:
                job = submit(
                    rest, {"model": "remote-tab", "requests": [tabular_request([1, 2, 3, 4])]}
                ).json()
                finished = wait_final(rest, job["job_id"], timeout_s=60)
    assert finished["state"] == "failed"
    assert finished["error"]["type"] == "invalid_input"
    assert finished["attempts"] == 1


def _slow_job(items: int) -> dict[str, Any]:
    """Small to submit, slow to run: one router call per item."""
    return {"model": "tabular-demo", "requests": [tabular_request([0.5, 0.5, 0.5, 0.5])] * items}


@pytest.fixture
def one_slot_server(sample_repository: Path, tmp_path: Path) -> Iterator[AisfProcess]:
    env = {
        "AISF_WORKER_MAX_CONCURRENT_ACTIVITIES": "1",
        "AISF_TENANT_TIERS": json.dumps({"vip": "gold", "cheap": "free"}),
    }
    with running_aisf(sample_repository, tmp_path / "data", env=env) as server:
        yield server


def test_a_high_tier_job_submitted_last_starts_before_the_low_tier_backlog(
    one_slot_server: AisfProcess, temporal_server: TemporalServer
) -> None:
    with _rest(one_slot_server) as rest:
        backlog = [submit(rest, _slow_job(300), tenant="cheap").json()["job_id"] for _ in range(4)]
        vip = submit(rest, _slow_job(300), tenant="vip").json()
        assert vip["priority"] == 1
        jobs = {job_id: wait_final(rest, job_id, timeout_s=120) for job_id in [*backlog, vip["job_id"]]}
    assert all(j["state"] == "succeeded" for j in jobs.values())
    vip_start, submitted = jobs[vip["job_id"]]["start_time"], vip["create_time"]
    starts = [jobs[j]["start_time"] for j in backlog]
    # Of the cheap jobs still waiting when the vip job arrived, at most one (the one the free slot went
    # to while the outbox was starting the vip's workflow) starts before it; the rest wait for it. A
    # cheap job that started before the vip was even submitted (a loaded machine submits slowly) is fine.
    jumped = [start for start in starts if submitted < start < vip_start]
    assert len(jumped) <= 1, (submitted, vip_start, starts)
    assert sum(start > vip_start for start in starts) >= 2, (submitted, vip_start, starts)

    async def tagged() -> list[str]:
        client = await Client.connect(temporal_server.address)
        return [w.id async for w in client.list_workflows("AisfTenant = 'vip' AND AisfTier = 'gold'")]

    assert vip["job_id"] in asyncio.run(tagged())


def test_cancelling_a_running_job_stops_its_activity(one_slot_server: AisfProcess) -> None:
    with _rest(one_slot_server) as rest:
        job = submit(rest, _slow_job(10000)).json()
        running = wait_for(rest, job["job_id"], 16)
        assert running["state"] == "running"
        assert rest.delete(f"/v1/jobs/{job['job_id']}").status_code == 202
        finished = wait_final(rest, job["job_id"])
        time.sleep(1)
        later = rest.get(f"/v1/jobs/{job['job_id']}").json()
    assert finished["state"] == "cancelled", finished["error"]
    assert finished["progress"]["done"] < 10000
    assert later["progress"]["done"] == finished["progress"]["done"]


def test_a_workflow_terminated_outside_aisf_shows_as_failed(
    one_slot_server: AisfProcess, temporal_server: TemporalServer
) -> None:
    """The workflow is the source of truth: a job whose workflow an operator terminated reads as failed."""
    with _rest(one_slot_server) as rest:
        job = submit(rest, _slow_job(10000)).json()
        wait_for(rest, job["job_id"], 16)

        async def terminate() -> None:
            client = await Client.connect(temporal_server.address)
            await client.get_workflow_handle(job["job_id"]).terminate(reason="operator")

        asyncio.run(terminate())
        finished = wait_final(rest, job["job_id"])
    assert finished["state"] == "failed"
    assert finished["error"] == {"type": "workflow_ended", "message": "workflow terminated"}
    assert finished["progress"]["done"] < 10000
