"""Runs a real MLServer (from its own venv, see .ci/mlserver_venv.sh) over a models folder."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.support.processes import ServerProcess, collect_output, free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
VENV_SCRIPT = ROOT / ".ci" / "mlserver_venv.sh"
MODEL_SETTINGS = "model-settings.json"


@functools.cache
def mlserver_venv() -> Path:
    """The MLServer venv (built on first use, ~20 s from the wheelhouse); one lookup per process."""
    done = subprocess.run(["bash", str(VENV_SCRIPT)], check=True, capture_output=True, text=True, timeout=900)
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"{VENV_SCRIPT} printed no venv path:\n{done.stderr}")
    return Path(lines[-1])


@dataclass
class MLServerProcess(ServerProcess):
    models: list[str] = field(default_factory=list)


def write_xgboost_model(models_dir: Path, name: str, booster_json: Path) -> Path:
    """An MLServer model folder: a copy of the Booster file plus its model-settings.json."""
    model_dir = models_dir / name
    model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(booster_json, model_dir / "model.json")
    settings = {
        "name": name,
        "implementation": "mlserver_xgboost.XGBoostModel",
        "parameters": {"uri": "./model.json", "version": "1"},
        "platform": "xgboost",
        "versions": ["1"],
        "inputs": [{"name": "input__0", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "predict", "datatype": "FP32", "shape": [-1, 1]}],
    }
    (model_dir / MODEL_SETTINGS).write_text(json.dumps(settings, indent=2), encoding="utf-8")
    return model_dir


def _ready(client: grpcclient.InferenceServerClient, models: list[str]) -> bool:
    try:
        return bool(client.is_server_ready(client_timeout=1)) and all(
            client.is_model_ready(name, client_timeout=1) for name in models
        )
    except InferenceServerException:
        return False


@contextmanager
def running_mlserver(models_dir: Path, timeout_s: float = 60) -> Iterator[MLServerProcess]:
    """`mlserver start models_dir` on free loopback ports; yields once every model folder is ready.

    MLServer exits with status 0 when a model fails to load, so any exit before ready is a failure.
    """
    models = sorted(p.name for p in models_dir.iterdir() if (p / MODEL_SETTINGS).is_file())
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    settings = {
        "debug": False,
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "parallel_workers": 0,
        "load_models_at_startup": True,
    }
    (models_dir / "settings.json").write_text(json.dumps(settings, indent=2), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVER_")}
    mlserver = str(mlserver_venv() / "bin" / "mlserver")
    with tempfile.TemporaryDirectory(prefix="aisf-mlserver-") as workdir:
        process = subprocess.Popen(
            [mlserver, "start", str(models_dir)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        output: list[str] = []
        assert process.stdout is not None
        reader = collect_output(process, output)
        server = MLServerProcess(process, http_port, grpc_port, metrics_port, output, models)
        try:
            client = grpcclient.InferenceServerClient(server.grpc_url)
            try:
                deadline = time.monotonic() + timeout_s
                while not _ready(client, models):
                    exited = process.poll()
                    if exited is not None or time.monotonic() > deadline:
                        why = "timed out" if exited is None else f"exited with status {exited}"
                        stop_process(process)
                        reader.join(timeout=5)
                        raise RuntimeError(f"MLServer did not become ready ({why}):\n{server.log_text()}")
                    time.sleep(0.1)
            finally:
                client.close()
            yield server
        finally:
            stop_process(process)
            reader.join(timeout=5)
            process.stdout.close()
