"""The `aisf` command: `up` starts the embedded default, roles split into processes, failures are one line."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.support.jobs import submit, tabular_request, wait_final
from tests.support.keys import bearer, create_key
from tests.support.processes import AISF, AisfProcess, any_port_flags, free_port, stop_process

pytestmark = pytest.mark.integration


def _wait_for_line(process: subprocess.Popen[str], needle: str, timeout_s: float = 90) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"never printed {needle!r}:\n{''.join(lines)}")


def test_up_builds_samples_serves_them_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    """The embedded default: samples, SQLite, and its own Temporal dev server (no AISF_TEMPORAL_ADDRESS)."""
    http_port = free_port()
    # A relative data dir, as a newcomer's `aisf up` has (Feast's apply moves the working directory).
    command = [AISF, "up", "--host", "127.0.0.1", "--data-dir", "data", *any_port_flags()]
    command[command.index("--http-port") + 1] = str(http_port)
    env = {k: v for k, v in os.environ.items() if k != "AISF_TEMPORAL_ADDRESS"}
    env |= {"AISF_TEMPORAL_PORT": str(free_port()), "AISF_TEMPORAL_UI_PORT": str(free_port())}
    process = subprocess.Popen(
        command,
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        lines = _wait_for_line(process, "aisf ready:", timeout_s=150)
        assert any("building sample models" in line for line in lines)
        assert any("materializing the sample features" in line for line in lines)
        assert f"REST http://127.0.0.1:{http_port}" in lines[-1]
        # The first admin key, printed once, as the README's first screen uses it.
        (key,) = [line.split("AISF_API_KEY=")[1].strip() for line in lines if "export AISF_API_KEY=" in line]
        client = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
        tensor = httpclient.InferInput("input__0", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 4), np.float32))
        with pytest.raises(InferenceServerException, match="missing API key"):
            client.infer("tabular-demo", [tensor])
        answer = client.infer("tabular-demo", [tensor], headers={"authorization": f"Bearer {key}"})
        assert answer.as_numpy("output__0").shape == (1, 1)
        assert client.is_model_ready("vision-demo")
        client.close()
        assert "Temporal UI http://localhost:" in lines[-1]
        with httpx.Client(
            base_url=f"http://127.0.0.1:{http_port}", timeout=30, headers={"authorization": f"Bearer {key}"}
        ) as rest:
            job = submit(rest, {"model": "tabular-demo", "requests": [tabular_request([1, 2, 3, 4])]}).json()
            assert wait_final(rest, job["job_id"])["state"] == "succeeded"
            # The sample features (Feast's SQLite online store, read through Feast's SDK) and recsys-demo.
            features = rest.post(
                "/v1/features/get-online-features",
                json={"feature_service": "ranker_features", "entities": {"user_id": [1], "item_id": [2]}},
            ).json()
            assert set(features["results"][-1]["statuses"]) == {"PRESENT"}, features
            ranked = rest.post(
                "/v2/models/recsys-demo/infer",
                json={
                    "inputs": [
                        {"name": "user_id", "shape": [1], "datatype": "INT64", "data": [1]},
                        {"name": "item_id", "shape": [3], "datatype": "INT64", "data": [1, 2, 3]},
                    ]
                },
            )
            assert ranked.status_code == 200 and len(ranked.json()["outputs"][0]["data"]) == 3, ranked.text
        os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    finally:
        stop_process(process)
        assert process.stdout is not None
        process.stdout.close()
    assert process.returncode == 0
    assert "Traceback" not in output
    assert (tmp_path / "data" / "models" / "tabular-demo" / "config.yaml").is_file()
    assert (tmp_path / "data" / "temporal.db").is_file()


def _run_failing(args: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AISF, *args], capture_output=True, text=True, timeout=60, cwd=tmp_path, env={**os.environ, **env}
    )


def test_unreachable_database_is_one_clear_line(tmp_path: Path, sample_repository: Path) -> None:
    result = _run_failing(
        [
            "serve",
            "--model-repository",
            str(sample_repository),
            "--data-dir",
            str(tmp_path),
            *any_port_flags(),
        ],
        {"AISF_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
        tmp_path,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("aisf: metadata database")
    assert "unreachable" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_invalid_setting_is_one_clear_line(tmp_path: Path) -> None:
    result = _run_failing(["serve"], {"AISF_HTTP_PORT": "not-a-port"}, tmp_path)
    assert result.returncode == 2
    assert "invalid settings" in result.stderr and "http_port" in result.stderr
    assert "Traceback" not in result.stderr


def test_router_and_gateway_roles_run_as_separate_processes(tmp_path: Path, sample_repository: Path) -> None:
    grpc_port, http_port = free_port(), free_port()
    key = create_key(tmp_path, "acme")
    common = [
        "--host",
        "127.0.0.1",
        "--model-repository",
        str(sample_repository),
        "--data-dir",
        str(tmp_path),
    ]
    router = subprocess.Popen(
        [
            AISF,
            "serve",
            "--role",
            "router",
            *common,
            "--grpc-port",
            str(grpc_port),
            "--metrics-port",
            str(free_port()),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    gateway = None
    try:
        _wait_for_line(router, "aisf ready:")
        gateway = subprocess.Popen(
            [
                AISF,
                "serve",
                "--role",
                "gateway",
                *common,
                "--http-port",
                str(http_port),
                "--metrics-port",
                str(free_port()),
                "--router-address",
                f"127.0.0.1:{grpc_port}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        _wait_for_line(gateway, "aisf ready:")
        url = f"http://127.0.0.1:{http_port}/v2/models/tabular-demo/infer"
        body = {"inputs": [{"name": "input__0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
        assert httpx.post(url, json=body, timeout=10).status_code == 401
        # The gateway checked the key; the router trusts it through the roles' shared token (one database).
        response = httpx.post(url, json=body, timeout=10, headers=bearer(key))
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["shape"] == [1, 1]
        direct = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        tensor = grpcclient.InferInput("input__0", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 4), np.float32))
        assert direct.infer("tabular-demo", [tensor], headers=bearer(key)).as_numpy("output__0").shape == (
            1,
            1,
        )
        with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
            direct.infer("tabular-demo", [tensor], headers={"authorization": "Bearer aisf_forged"})
        direct.close()
    finally:
        for process in (gateway, router):
            if process is not None:
                stop_process(process)
                assert process.stdout is not None
                process.stdout.close()


def test_grpc_health_and_reflection_are_served(aisf_server: AisfProcess) -> None:
    with grpc.insecure_channel(aisf_server.grpc_url) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService", "aisf.router.v1.ModelRepositoryService"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        answer = next(iter(reflection.ServerReflectionInfo(iter([request]), timeout=5)))
        names = {s.name for s in answer.list_services_response.service}
    assert {
        "inference.GRPCInferenceService",
        "aisf.router.v1.ModelRepositoryService",
        "grpc.health.v1.Health",
    } <= names


def test_prometheus_metrics_count_inferences(aisf_server: AisfProcess) -> None:
    httpx.post(
        f"http://{aisf_server.http_url}/v2/models/tabular-demo/infer",
        json={"inputs": [{"name": "input__0", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}]},
        timeout=10,
    ).raise_for_status()
    text = httpx.get(f"http://127.0.0.1:{aisf_server.metrics_port}/metrics", timeout=10).text
    assert 'aisf_inference_requests_total{model="tabular-demo",outcome="success",version="1"}' in text
    assert "aisf_inference_duration_seconds_bucket" in text


def test_model_load_history_is_served_over_rest(aisf_server: AisfProcess) -> None:
    events = httpx.get(
        f"http://{aisf_server.http_url}/v1/repository/events?model=tabular-demo", timeout=10
    ).json()
    assert events["events"][0]["model_name"] == "tabular-demo"
    assert events["events"][0]["kind"] == "MODEL_EVENT_KIND_LOADED"
    bad = httpx.get(f"http://{aisf_server.http_url}/v1/repository/events?page_size=5000", timeout=10)
    assert bad.status_code == 400
