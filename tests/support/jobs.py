"""Helpers for job tests: V2 JSON requests, submitting over REST and waiting for a final state."""

from __future__ import annotations

import time
from typing import Any

import httpx

FINAL = {"succeeded", "failed", "cancelled"}


def tabular_request(row: list[float]) -> dict[str, Any]:
    return {"inputs": [{"name": "input__0", "shape": [1, 4], "datatype": "FP32", "data": row}]}


def submit(client: httpx.Client, body: dict[str, Any], tenant: str = "default") -> httpx.Response:
    return client.post("/v1/jobs", json=body, headers={"X-Aisf-Tenant": tenant})


def wait_final(client: httpx.Client, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in FINAL:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout_s} s: {job}")


def wait_for(client: httpx.Client, job_id: str, done_at_least: int, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["progress"]["done"] >= done_at_least or job["state"] in FINAL:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} made no progress to {done_at_least} in {timeout_s} s")
