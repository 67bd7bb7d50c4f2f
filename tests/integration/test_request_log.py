"""REQ-OPS-02 against a running aisf: one request-log line per request on every lane and transport,
naming shapes, parameters and timings, never the values; and logs a person can read in a terminal."""

from __future__ import annotations

import json
import os
import pty
import queue
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.support.processes import AISF, AisfProcess, any_port_flags, running_aisf, stop_process

SECRET_VALUE = 4242.125  # a tensor value that must never reach a log


@pytest.fixture(scope="module")
def logged(sample_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AisfProcess]:
    """Every V2 inference logged (the default samples a tenth of the fast successes)."""
    env = {"AISF_REQUEST_LOG_SAMPLE": "1"}
    with running_aisf(sample_repository, tmp_path_factory.mktemp("data"), env=env) as server:
        yield server


def _lines(server: AisfProcess, message: str, **match: object) -> list[dict[str, Any]]:
    found = []
    for line in server.log_text().splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("msg") == message and all(entry.get(k) == v for k, v in match.items()):
            found.append(entry)
    return found


def _wait_lines(
    server: AisfProcess, message: str, timeout_s: float = 20, **match: object
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while not (found := _lines(server, message, **match)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def _rest_infer(
    server: AisfProcess, body: dict[str, Any], headers: dict[str, Any] | None = None
) -> httpx.Response:
    """V2 REST inference on tabular-demo."""
    url = f"http://{server.http_url}/v2/models/tabular-demo/infer"
    return httpx.post(url, json=body, headers=headers, timeout=30)


def _features(value: float = SECRET_VALUE) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("input__0", [2, 4], "FP32")
    tensor.set_data_from_numpy(np.full((2, 4), value, dtype=np.float32))
    return tensor


def test_a_grpc_inference_gets_one_line_with_shapes_parameters_and_timings(logged: AisfProcess) -> None:
    with grpcclient.InferenceServerClient(logged.grpc_url) as client:
        client.infer(
            "tabular-demo",
            [_features()],
            request_id="log-grpc-1",
            parameters={"user_note": "alice@example.com", "beam": 3},
            headers={"x-request-id": "log-grpc-1", "x-aisf-tenant": "acme"},
        )
    (line,) = _wait_lines(logged, "v2 request", request_id="log-grpc-1")
    assert (line["model"], line["version"], line["lane"], line["tenant"]) == (
        "tabular-demo",
        "1",
        "realtime",
        "acme",
    )
    assert line["inputs"] == [{"name": "input__0", "datatype": "FP32", "shape": [2, 4]}]
    assert line["parameters"] == {"user_note": "<str 17>", "beam": "<int>"}
    assert line["outcome"] == "success" and line["rows"] == 2
    assert line["duration_ms"] >= line["compute_ms"] > 0 and line["queue_ms"] >= 0
    log = logged.log_text()
    assert str(SECRET_VALUE) not in log and "alice@example.com" not in log


def test_a_rejected_rest_inference_gets_its_line_with_the_reason(logged: AisfProcess) -> None:
    body = {"inputs": [{"name": "input__0", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    reply = _rest_infer(logged, body, {"x-request-id": "log-rest-bad"})
    assert reply.status_code == 400
    (line,) = _wait_lines(logged, "v2 request", request_id="log-rest-bad")
    assert line["outcome"] == "invalid_input" and line["inputs"][0]["shape"] == [1, 3]


def test_a_rest_caller_without_a_request_id_still_gets_one_in_the_log(logged: AisfProcess) -> None:
    body = {"inputs": [{"name": "input__0", "datatype": "FP32", "shape": [1, 4], "data": [9.5, 2, 3, 4]}]}
    before = len(_lines(logged, "v2 request"))
    assert _rest_infer(logged, body).status_code == 200
    deadline = time.monotonic() + 10
    while len(_lines(logged, "v2 request")) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    newest = _lines(logged, "v2 request")[-1]
    assert len(newest.get("request_id", "")) == 32


def test_stream_requests_are_logged_on_the_stream_lane(logged: AisfProcess) -> None:
    answers: queue.Queue[object] = queue.Queue()
    with grpcclient.InferenceServerClient(logged.grpc_url) as client:
        client.start_stream(callback=lambda result, error: answers.put(error))
        try:
            for i in range(3):
                client.async_stream_infer("tabular-demo", [_features(float(i))], request_id=f"log-stream-{i}")
            assert [answers.get(timeout=10) for _ in range(3)] == [None, None, None]
        finally:
            client.stop_stream()
    deadline = time.monotonic() + 10
    while len(_lines(logged, "v2 request", lane="stream")) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_lines(logged, "v2 request", lane="stream")) >= 3


def test_a_jobs_items_and_its_activity_are_logged_on_the_job_lane(logged: AisfProcess) -> None:
    row = {"name": "input__0", "datatype": "FP32", "shape": [1, 4], "data": [0.5, 0.5, 0.5, 0.5]}
    reply = httpx.post(
        f"http://{logged.http_url}/v1/jobs",
        json={"model": "tabular-demo", "requests": [{"inputs": [row]}, {"inputs": [row]}]},
        headers={"x-aisf-tenant": "log-co"},
        timeout=30,
    )
    assert reply.status_code == 202
    job_id = reply.json()["job_id"]
    (activity,) = _wait_lines(logged, "job activity", timeout_s=60, job_id=job_id)
    assert (activity["lane"], activity["tenant"], activity["outcome"]) == ("job", "log-co", "success")
    assert (activity["items_done"], activity["items_total"], activity["attempt"]) == (2, 2, 1)
    items = [e for e in _lines(logged, "v2 request", lane="job") if e["request_id"].startswith(job_id)]
    assert sorted(e["request_id"] for e in items) == [f"{job_id}-0", f"{job_id}-1"]
    assert all(e["tenant"] == "log-co" for e in items)


def test_json_logs_carry_no_terminal_colour_codes(logged: AisfProcess) -> None:
    text = logged.log_text()
    assert "Uvicorn running" in text
    assert "\x1b[" not in text and "color_message" not in text


def test_a_terminal_gets_readable_text_lines(tmp_path: Path) -> None:
    """`aisf serve` at a terminal (no AISF_LOG_FORMAT): text, not JSON, and no escape codes."""
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "AISF_LOG_FORMAT"}
    env["AISF_ROUTER_ADDRESS"] = "127.0.0.1:1"  # never called: the edge starts without its router
    process = subprocess.Popen(
        [
            AISF,
            "serve",
            "--role",
            "gateway",
            "--host",
            "127.0.0.1",
            "--data-dir",
            str(tmp_path),
            *any_port_flags(),
        ],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env=env,
        start_new_session=True,
    )
    os.close(follower)
    output = b""
    try:
        deadline = time.monotonic() + 60
        while b"aisf ready" not in output and time.monotonic() < deadline:
            if select.select([leader], [], [], 0.5)[0]:
                try:
                    output += os.read(leader, 65536)
                except OSError:
                    break
    finally:
        stop_process(process)  # type: ignore[arg-type]
        os.close(leader)
    text = output.decode(errors="replace")
    assert "aisf ready" in text, text
    logged = [line for line in text.splitlines() if "uvicorn.error" in line]
    assert logged and not any(line.lstrip().startswith("{") for line in logged), text
    assert "\x1b[" not in text


def test_a_tenant_header_gRPC_metadata_cannot_carry_is_a_400_naming_it(logged: AisfProcess) -> None:
    body = {"inputs": [{"name": "input__0", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    reply = _rest_infer(logged, body, {"x-aisf-tenant": "café".encode("latin-1")})
    assert reply.status_code == 400 and "x-aisf-tenant" in reply.text


def test_a_request_id_gRPC_metadata_cannot_carry_is_replaced_not_forwarded(logged: AisfProcess) -> None:
    body = {"inputs": [{"name": "input__0", "datatype": "FP32", "shape": [1, 4], "data": [7.25, 2, 3, 4]}]}
    reply = _rest_infer(logged, body, {"x-request-id": "bad\tid"})
    assert reply.status_code == 200
    assert not _lines(logged, "v2 request", request_id="bad\tid")
