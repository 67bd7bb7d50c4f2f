"""Python-backend test models (real models served by aisf's `python` backend): a slow one that records
how many calls ran at once and when it was unloaded, and one that fails while a file exists."""

from __future__ import annotations

from pathlib import Path

import yaml

# Rows in, the same rows out, after `delay_s`; counts calls in flight and keeps the order of events.
SLOW_ECHO = """
import threading, time
import numpy as np


class Model:
    def load(self, config):
        self.delay_s = float(config.get("delay_s", 0.2))
        self.lock = threading.Lock()
        self.running = 0
        self.most_at_once = 0
        self.calls = 0
        self.events = []

    def infer(self, inputs, parameters):
        with self.lock:
            self.running += 1
            self.calls += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.events.append("infer")
        time.sleep(self.delay_s)
        with self.lock:
            self.running -= 1
            self.events.append("done")
        rows = inputs["x"]
        tag = np.full((rows.shape[0], 1), float(parameters.get("tag", 0)), dtype=np.float32)
        return {"y": rows, "tag": tag}

    def unload(self):
        self.events.append("unload")
"""

# Like tabular-demo ([N, 4] -> [N, 1]), but every call fails while the file `FAIL` sits beside model.py:
# an engine that breaks and recovers on command. Its answer is the row's sum.
FLAKY_SUM = """
from pathlib import Path
import numpy as np

HERE = Path(__file__).parent


class Model:
    def load(self, config):
        self.calls = 0

    def infer(self, inputs, parameters):
        self.calls += 1
        if (HERE / "FAIL").exists():
            raise RuntimeError("engine failure on command")
        rows = inputs["input__0"]
        return {"output__0": rows.sum(axis=1, keepdims=True).astype(np.float32)}
"""


def write_python_model(repository: Path, name: str, source: str, config: dict[str, object]) -> Path:
    """models/<name>/config.yaml (backend python) and 1/model.py."""
    model_dir = repository / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "1" / "model.py").write_text(source, encoding="utf-8")
    (model_dir / "config.yaml").write_text(yaml.safe_dump({"backend": "python", **config}), encoding="utf-8")
    return model_dir


def slow_echo(repository: Path, name: str = "slow-echo", delay_s: float = 0.2, **config: object) -> Path:
    """FP32 [N, 2] `x` -> `y` (the same rows) and `tag` ([N, 1], the request's `tag` parameter)."""
    settings: dict[str, object] = {
        "max_batch_size": 8,
        "inputs": [{"name": "x", "datatype": "FP32", "dims": [2]}],
        "outputs": [
            {"name": "y", "datatype": "FP32", "dims": [2]},
            {"name": "tag", "datatype": "FP32", "dims": [1]},
        ],
        "parameters": {"delay_s": delay_s},
        **config,
    }
    return write_python_model(repository, name, SLOW_ECHO, settings)


def flaky_sum(repository: Path, name: str = "flaky", **config: object) -> Path:
    settings: dict[str, object] = {
        "max_batch_size": 64,
        "inputs": [{"name": "input__0", "datatype": "FP32", "dims": [4]}],
        "outputs": [{"name": "output__0", "datatype": "FP32", "dims": [1]}],
        **config,
    }
    return write_python_model(repository, name, FLAKY_SUM, settings)


# FP32 [N, 2] `x` -> `y`: records the first column of every row it runs (one line each) in calls.log beside
# model.py, from any process that serves it; out of memory (MemoryError, as an engine's allocator) when
# one call has more than `oom_rows` rows. The log is what "each item ran once" is checked against.
RECORDER = """
import os, time
from pathlib import Path
import numpy as np

LOG = Path(__file__).parent / "calls.log"


class Model:
    def load(self, config):
        self.delay_s = float(config.get("delay_s", 0.0))
        self.oom_rows = int(config.get("oom_rows", 0))

    def infer(self, inputs, parameters):
        rows = inputs["x"]
        if self.oom_rows and rows.shape[0] > self.oom_rows:
            raise MemoryError(f"out of memory: {rows.shape[0]} rows")
        time.sleep(self.delay_s)
        with open(LOG, "a") as log:
            log.write("".join(f"{float(v)!r}\\n" for v in rows[:, 0]))
        return {"y": rows}
"""


def recorder(repository: Path, name: str = "recorder", **parameters: object) -> Path:
    settings: dict[str, object] = {
        "max_batch_size": 64,
        "instance_count": 1,
        "inputs": [{"name": "x", "datatype": "FP32", "dims": [2]}],
        "outputs": [{"name": "y", "datatype": "FP32", "dims": [2]}],
        "parameters": parameters,
    }
    return write_python_model(repository, name, RECORDER, settings)


def recorded(model_dir: Path) -> list[float]:
    """Every row value the recorder ran, in the order it ran them (all processes)."""
    log = model_dir / "1" / "calls.log"
    return [float(line) for line in log.read_text().split()] if log.exists() else []


# FP32 [N, 2] `x` -> `y` (the same rows) and `left` ([N, 1]: the seconds of the deadline the engine call
# runs under, -1 without one), after `delay_s`: what deadline reached the engine.
DEADLINE_ECHO = """
import time
import numpy as np
from aisf.services.common import deadlines


class Model:
    def load(self, config):
        self.delay_s = float(config.get("delay_s", 0.0))

    def infer(self, inputs, parameters):
        left = deadlines.remaining()
        time.sleep(self.delay_s)
        rows = inputs["x"]
        return {"y": rows, "left": np.full((rows.shape[0], 1), -1.0 if left is None else left, np.float32)}
"""


def deadline_echo(
    repository: Path, name: str = "deadline-echo", delay_s: float = 0.2, **config: object
) -> Path:
    settings: dict[str, object] = {
        "max_batch_size": 8,
        "inputs": [{"name": "x", "datatype": "FP32", "dims": [2]}],
        "outputs": [
            {"name": "y", "datatype": "FP32", "dims": [2]},
            {"name": "left", "datatype": "FP32", "dims": [1]},
        ],
        "parameters": {"delay_s": delay_s},
        **config,
    }
    return write_python_model(repository, name, DEADLINE_ECHO, settings)
