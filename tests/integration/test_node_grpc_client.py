"""A Node.js (@grpc/grpc-js) KServe V2 client against aisf's inference.GRPCInferenceService.

Checks the wire contract from a non-Python stack: the client in tests/node loads the
service from protos/inference/grpc_service.binpb (exported by `python protos/generate.py`),
calls ServerLive, ModelMetadata and ModelInfer, and prints one JSON line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost

from tests.support.processes import AisfProcess

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "tests" / "node"
CLIENT = NODE_DIR / "v2_client.js"
DESCRIPTOR_SET = ROOT / "protos" / "inference" / "grpc_service.binpb"

NPM_CI_TIMEOUT_S = 300
CLIENT_TIMEOUT_S = 60
BATCH = 2
FEATURES = 4


def _require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is not on PATH: the Node gRPC client tests need Node.js >= 18 and npm "
            "(CI installs them; locally install Node.js, e.g. from nodejs.org or your package manager)",
            pytrace=False,
        )
    return path


def _node_modules_stale() -> bool:
    """node_modules missing, or installed before the current package-lock.json."""
    # npm writes node_modules/.package-lock.json at the end of every install, so its
    # mtime is the install time (the directory's own mtime only tracks direct entries).
    marker = NODE_DIR / "node_modules" / ".package-lock.json"
    if not marker.is_file():
        return True
    return marker.stat().st_mtime < (NODE_DIR / "package-lock.json").stat().st_mtime


@pytest.fixture(scope="session")
def node_client() -> list[str]:
    """The command prefix that runs tests/node/v2_client.js, after `npm ci` when needed."""
    node = _require_tool("node")
    npm = _require_tool("npm")
    if not DESCRIPTOR_SET.is_file():
        pytest.fail(f"{DESCRIPTOR_SET} is missing: run `python protos/generate.py`", pytrace=False)
    if _node_modules_stale():
        started = time.monotonic()
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            timeout=NPM_CI_TIMEOUT_S,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            pytest.fail(
                f"`npm ci` in {NODE_DIR} failed (exit {result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}",
                pytrace=False,
            )
        print(f"npm ci in {NODE_DIR} took {time.monotonic() - started:.1f}s")
    return [node, str(CLIENT), str(DESCRIPTOR_SET)]


def _run_client(node_client: list[str], target: str, model: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*node_client, target, model],
        cwd=NODE_DIR,
        timeout=CLIENT_TIMEOUT_S,
        capture_output=True,
        text=True,
    )


def test_node_grpc_js_client_infers_tabular_demo(
    node_client: list[str], aisf_server: AisfProcess, sample_repository: Path
) -> None:
    result = _run_client(node_client, aisf_server.grpc_url, "tabular-demo")
    assert result.returncode == 0, (
        f"node client failed:\n{result.stderr}\nserver log:\n{aisf_server.log_text()}"
    )
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    reply: dict[str, Any] = json.loads(lines[0])

    assert reply["live"] is True
    assert reply["model"] == "tabular-demo"
    assert len(reply["outputs"]) == 1
    output = reply["outputs"][0]
    assert output["name"] == "output__0"
    assert output["datatype"] == "FP32"
    assert output["shape"] == [BATCH, 1]

    # The same inputs the client sends: element i of the [2, 4] batch is i * 0.1 as float32.
    sent = np.arange(BATCH * FEATURES, dtype=np.float64) * 0.1
    features = sent.astype(np.float32).reshape(BATCH, FEATURES)
    booster = xgboost.Booster(model_file=str(sample_repository / "tabular-demo" / "1" / "model.json"))
    expected = np.asarray(booster.inplace_predict(features), dtype=np.float32).reshape(BATCH, 1)
    got = np.asarray(output["data"], dtype=np.float32).reshape(BATCH, 1)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_node_grpc_js_client_unknown_model_is_not_found(
    node_client: list[str], aisf_server: AisfProcess
) -> None:
    result = _run_client(node_client, aisf_server.grpc_url, "no-such-model")
    assert result.returncode != 0, result.stdout
    assert result.stdout == ""
    # v2_client.js reports "<method> failed: <grpc status code> <details>"; NOT_FOUND is 5.
    assert " failed: 5 " in result.stderr or "unknown model" in result.stderr.lower(), result.stderr
