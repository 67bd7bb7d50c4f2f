"""The dataplane under faults: overload with and without backpressure, a slow shadow, a failing engine.

    .venv/bin/python bench/faults_bench.py [--seconds 8] [--out docs/benchmarks.md]

One `aisf serve --role router` over models written here (Python backend and the sample XGBoost model),
driven by this script with tritonclient.grpc.aio on loopback:

  overload  a model with one instance and a fixed 4 ms service time; its capacity is measured closed-loop
            (c=16), then requests arrive open-loop at twice that rate for --seconds, once with a bounded
            queue (max_queue_size 8: the excess is refused at once with RESOURCE_EXHAUSTED) and once
            with an effectively unbounded one (100,000). Reported: p50/p99/max of admitted requests and
            the share refused.
  shadow    tabular-demo at c=8 for --seconds with no shadow, then with every request copied to a shadow
            that takes 20 ms (sample 1.0): live p50/p99 and throughput side by side.
  breaker   a model that fails on command: requests at c=1; the engine starts failing at t0; reported
            are the times from t0 to the first failure seen, to the circuit opening (5 failures) and to
            the first answer from the fallback model, and the fallback answers' latency.

Every loop is bounded by a duration or a count; everything binds 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # reuse the test suite's process helpers (tests/support)
    sys.path.insert(0, str(ROOT))

from bench.loads import Sample, open_loop  # noqa: E402 - needs ROOT on sys.path
from bench.report import command_line, machine, write_section  # noqa: E402

SERVICE_TIME_S = 0.004
SHADOW_DELAY_S = 0.020

FIXED_TIME = f"""
import time
import numpy as np


class Model:
    def infer(self, inputs, parameters):
        time.sleep({SERVICE_TIME_S})
        return {{"y": inputs["x"]}}
"""

SLOW_SHADOW = f"""
import time
import numpy as np


class Model:
    def infer(self, inputs, parameters):
        time.sleep({SHADOW_DELAY_S})
        rows = inputs["input__0"]
        return {{"output__0": np.zeros((rows.shape[0], 1), dtype=np.float32)}}
"""

FAILS_ON_COMMAND = """
from pathlib import Path
import numpy as np

HERE = Path(__file__).parent


class Model:
    def infer(self, inputs, parameters):
        if (HERE / "FAIL").exists():
            raise RuntimeError("engine failure on command")
        rows = inputs["input__0"]
        return {"output__0": rows.sum(axis=1, keepdims=True).astype(np.float32)}
"""

TABULAR_IO = {
    "inputs": [{"name": "input__0", "datatype": "FP32", "dims": [4]}],
    "outputs": [{"name": "output__0", "datatype": "FP32", "dims": [1]}],
}


def _repository(root: Path) -> Path:
    from aisf.services.samples import build_tabular_demo
    from tests.support.python_models import write_python_model as _python_model

    models = root / "models"
    build_tabular_demo(models)
    shutil.copytree(models / "tabular-demo", models / "tabular-shadowed")
    shadowed = yaml.safe_load((models / "tabular-shadowed" / "config.yaml").read_text())
    shadowed["shadow"] = {"model": "slow-shadow", "sample": 1.0, "max_queue": 256}
    (models / "tabular-shadowed" / "config.yaml").write_text(yaml.safe_dump(shadowed))
    _python_model(
        models, "slow-shadow", SLOW_SHADOW, {"max_batch_size": 64, "instance_count": 4, **TABULAR_IO}
    )
    io = {
        "max_batch_size": 8,
        "instance_count": 1,
        "inputs": [{"name": "x", "datatype": "FP32", "dims": [2]}],
        "outputs": [{"name": "y", "datatype": "FP32", "dims": [2]}],
    }
    _python_model(models, "bounded", FIXED_TIME, {**io, "max_queue_size": 8})
    _python_model(models, "unbounded", FIXED_TIME, {**io, "max_queue_size": 100_000})
    breaker = {"failures": 5, "window_s": 60, "cooldown_s": 60}
    _python_model(
        models,
        "flaky",
        FAILS_ON_COMMAND,
        {
            "max_batch_size": 64,
            "circuit_breaker": breaker,
            "fallback": {"model": "tabular-demo"},
            **TABULAR_IO,
        },
    )
    return models


# ------------------------------------------------------------------------------------------- load


def _inputs(grpcclient: Any, name: str, shape: tuple[int, ...]) -> list[Any]:
    tensor = grpcclient.InferInput(name, list(shape), "FP32")
    tensor.set_data_from_numpy(np.full(shape, 0.5, np.float32))
    return [tensor]


async def _closed_loop(call: Callable[[], Awaitable[Any]], concurrency: int, seconds: float) -> Sample:
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < end:
            started = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Sample(latencies, 0, 0, time.perf_counter() - started)


async def _overload(url: str, seconds: float) -> dict[str, Any]:
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        inputs = _inputs(grpcclient, "x", (1, 2))

        def caller(model: str) -> Callable[[], Awaitable[Any]]:
            return lambda: client.infer(model, inputs, client_timeout=120)

        capacity = await _closed_loop(caller("unbounded"), 16, 3)
        rate = 2 * len(capacity.latencies_ms) / capacity.wall_s
        bounded = await open_loop(caller("bounded"), rate, seconds)
        await asyncio.sleep(1)
        unbounded = await open_loop(caller("unbounded"), rate, seconds)
    finally:
        await client.close()
    return {"capacity": len(capacity.latencies_ms) / capacity.wall_s, "rate": rate, "bounded": bounded,
            "unbounded": unbounded}  # fmt: skip


async def _shadow(url: str, seconds: float) -> dict[str, Sample]:
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        inputs = _inputs(grpcclient, "input__0", (1, 4))
        results = {}
        for label, model in (
            ("shadow off", "tabular-demo"),
            ("shadow on (20 ms, every request)", "tabular-shadowed"),
        ):
            await _closed_loop(lambda model=model: client.infer(model, inputs), 8, 1)  # warm-up
            results[label] = await _closed_loop(lambda model=model: client.infer(model, inputs), 8, seconds)
    finally:
        await client.close()
    return results


async def _breaker(url: str, models: Path) -> dict[str, Any]:
    import tritonclient.grpc.aio as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url)
    flag = models / "flaky" / "1" / "FAIL"
    events: dict[str, float] = {}
    fallback_ms: list[float] = []
    try:
        inputs = _inputs(grpcclient, "input__0", (1, 4))
        for _ in range(50):
            await client.infer("flaky", inputs)
        t0 = time.perf_counter()
        flag.touch()
        failures = 0
        while len(fallback_ms) < 200 and time.perf_counter() - t0 < 30:
            started = time.perf_counter()
            try:
                answer = await client.infer("flaky", inputs)
            except InferenceServerException:
                failures += 1
                events.setdefault("first failure", time.perf_counter() - t0)
                if failures == 5:
                    events["circuit open (5th failure)"] = time.perf_counter() - t0
                continue
            if "aisf_fallback" in answer.get_response(as_json=True).get("parameters", {}):
                events.setdefault("first fallback answer", time.perf_counter() - t0)
                fallback_ms.append((time.perf_counter() - started) * 1000)
    finally:
        flag.unlink(missing_ok=True)
        await client.close()
    return {"events": events, "fallback_p50": float(np.percentile(fallback_ms, 50)),
            "fallback_p99": float(np.percentile(fallback_ms, 99))}  # fmt: skip


# --------------------------------------------------------------------------------------------- report


def _row(label: str, sample: Sample) -> str:
    total = len(sample.latencies_ms) + sample.refused + sample.failed
    shed = sample.refused / total if total else 0.0
    worst = max(sample.latencies_ms, default=float("nan"))
    p50, p99 = sample.percentile(50), sample.percentile(99)
    admitted = len(sample.latencies_ms)
    return f"| {label} | {admitted:,} | {p50:.1f} | {p99:.1f} | {worst:.1f} | {shed:.1%} | {sample.failed} |"


def _document(
    overload: dict[str, Any], shadow: dict[str, Sample], breaker: dict[str, Any], seconds: float
) -> str:
    cores, cpu = machine()
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    rate, capacity = overload["rate"], overload["capacity"]
    shadow_rows = "\n".join(
        f"| {label} | {s.percentile(50):.2f} | {s.percentile(99):.2f} | {s.rate():,.0f} |"
        for label, s in shadow.items()
    )
    off, on = shadow.values()
    events = "\n".join(f"| {name} | {seconds_ * 1000:.1f} |" for name, seconds_ in breaker["events"].items())
    return f"""## The dataplane under faults: overload, shadow, circuit breaker

Written by `bench/faults_bench.py`; one `aisf serve --role router` on loopback, one client process
(tritonclient `grpc.aio`).

- Date: {today}
- Machine: {cores} CPUs (nproc), {cpu}; Python {platform.python_version()}
- Command: `{command_line()}`

### Overload at twice the capacity, open loop

A Python-backend model with one instance and a fixed {SERVICE_TIME_S * 1000:.0f} ms service time: closed-loop
capacity {capacity:,.0f} req/s (c=16); then {rate:,.0f} req/s arrive on a fixed schedule for {seconds:.0f} s.

| queue | admitted | p50 (ms) | p99 (ms) | max (ms) | refused (RESOURCE_EXHAUSTED) | other errors |
|---|---:|---:|---:|---:|---:|---:|
{_row("bounded (max_queue_size 8)", overload["bounded"])}
{_row("unbounded (max_queue_size 100,000)", overload["unbounded"])}

With backpressure the latency of admitted requests stays at a few service times and the excess is refused
at once with Retry-After; without it every request is admitted and waits behind all earlier ones, so the
latency grows with the length of the overload (here up to the max shown) and nobody is told to back off.

### Live latency with a slow shadow

`tabular-demo` (XGBoost) at c=8 for {seconds:.0f} s, without a shadow and with every request copied to a
shadow model that takes {SHADOW_DELAY_S * 1000:.0f} ms per call (off the live path, bounded queue of 256 that
sheds).

| live model | p50 (ms) | p99 (ms) | throughput (req/s) |
|---|---:|---:|---:|
{shadow_rows}

Live p99 with the shadow on / off: {on.percentile(99) / off.percentile(99):.2f}x.

### Circuit breaker: from a failing engine to the fallback answering

Requests at c=1 on a model that starts failing at t0 (5 failures in 60 s open the circuit; fallback:
`tabular-demo`).

| event | ms after t0 |
|---|---:|
{events}

Fallback answers while open: p50 {breaker["fallback_p50"]:.2f} ms, p99 {breaker["fallback_p99"]:.2f} ms
(the failing engine is not called).
"""


async def _measure(url: str, models: Path, seconds: float) -> tuple[Any, Any, Any]:
    print("[bench] overload ...", file=sys.stderr, flush=True)
    overload = await _overload(url, seconds)
    print("[bench] shadow ...", file=sys.stderr, flush=True)
    shadow = await _shadow(url, seconds)
    print("[bench] breaker ...", file=sys.stderr, flush=True)
    breaker = await _breaker(url, models)
    return overload, shadow, breaker


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each timed phase")
    parser.add_argument("--out", help="rewrite this markdown file's faults-bench section")
    args = parser.parse_args()
    from tests.support.processes import running_aisf

    with tempfile.TemporaryDirectory(prefix="aisf-faults-bench-") as tmp:
        models = _repository(Path(tmp))
        with running_aisf(models, Path(tmp) / "data", role="router") as aisf:
            overload, shadow, breaker = asyncio.run(_measure(aisf.grpc_url, models, args.seconds))
    document = _document(overload, shadow, breaker, args.seconds)
    print(document)
    if args.out:
        write_section(Path(args.out), "faults-bench", document)
        print(f"[bench] wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
