"""KServe V2 latency/throughput benchmark: aisf vs the engine itself, a bare gRPC floor, and MLServer.

    .venv/bin/python bench/v2_bench.py [--requests N] [--warmup W] [--out docs/benchmarks.md]

One run, one model (the sample tabular-demo XGBoost Booster, built into a temp dir), one [1, 4] FP32 row,
one load client (this script with --client, a separate process driving tritonclient.grpc.aio or
tritonclient.http.aio with binary tensors) at each concurrency for a fixed number of requests after a
warm-up. Targets:

  direct          Booster.inplace_predict in this process, nthread=1, timed in a loop (no server at all)
  floor gRPC      bench/floor_server.py: a bare grpc.aio ModelInfer, numpy decode + asyncio.to_thread
  aisf gRPC       `aisf serve --role all`, inference.GRPCInferenceService
  aisf REST       the same aisf process, REST V2 (binary tensor extension)
  MLServer gRPC   MLServer 1.7.1 (venv from .ci/mlserver_venv.sh) serving the same model.json

Everything binds 127.0.0.1; every loop is bounded by a request count.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # reuse the test suite's process helpers (tests/support)
    sys.path.insert(0, str(ROOT))

from bench.report import command_line, machine, write_section  # noqa: E402 - needs ROOT on sys.path

MODEL = "tabular-demo"
CONCURRENCY = (1, 8, 32)
UNFROZEN = "aisf gRPC, GC freeze off"
CLIENT_TIMEOUT_S = 240


@dataclass
class Level:
    concurrency: int
    requests: int
    p50_ms: float
    p99_ms: float
    rps: float


# --------------------------------------------------------------------------------------------- client


async def _run_level(call: Callable[[], Awaitable[Any]], concurrency: int, requests: int) -> Level:
    quotas = [requests // concurrency + (1 if k < requests % concurrency else 0) for k in range(concurrency)]
    latencies: list[int] = []

    async def worker(count: int) -> None:
        for _ in range(count):
            started = time.perf_counter_ns()
            await call()
            latencies.append(time.perf_counter_ns() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker(q) for q in quotas))
    wall = time.perf_counter() - started
    ms = np.asarray(latencies, dtype=np.float64) / 1e6
    return Level(
        concurrency, requests, float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), requests / wall
    )


async def _client(args: argparse.Namespace) -> dict[str, Any]:
    row = np.asarray([float(x) for x in args.row.split(",")], dtype=np.float32).reshape(1, -1)
    levels = [int(c) for c in args.concurrency.split(",")]
    client: Any
    headers = {"authorization": f"Bearer {args.key}"} if args.key else None
    if args.client == "grpc":
        import tritonclient.grpc.aio as grpcclient

        tls = {"ssl": True, "root_certificates": args.tls_ca} if args.tls_ca else {}
        client = grpcclient.InferenceServerClient(args.url, **tls)
        tensor = grpcclient.InferInput("input__0", list(row.shape), "FP32")
        tensor.set_data_from_numpy(row)
        outputs = [grpcclient.InferRequestedOutput(args.output)]
    else:
        import ssl

        import tritonclient.http.aio as httpclient

        secure = (
            {"ssl": True, "ssl_context": ssl.create_default_context(cafile=args.tls_ca)}
            if args.tls_ca
            else {}
        )
        client = httpclient.InferenceServerClient(args.url, conn_limit=max(levels), **secure)
        tensor = httpclient.InferInput("input__0", list(row.shape), "FP32")
        tensor.set_data_from_numpy(row, binary_data=True)
        outputs = [httpclient.InferRequestedOutput(args.output, binary_data=True)]

    async def call() -> Any:
        return await client.infer(args.model, [tensor], outputs=outputs, headers=headers)

    try:
        first = await call()
        answer = float(np.asarray(first.as_numpy(args.output)).reshape(-1)[0])
        results = []
        for concurrency in levels:
            if args.warmup:
                await _run_level(call, concurrency, args.warmup)
            results.append(await _run_level(call, concurrency, args.requests))
    finally:
        await client.close()
    return {"answer": answer, "levels": [vars(level) for level in results]}


# ----------------------------------------------------------------------------------------- orchestrator


def _drive(
    protocol: str,
    url: str,
    model: str,
    output: str,
    row: npt.NDArray[np.float32],
    args: argparse.Namespace,
    key: str = "",
    tls_ca: str = "",
) -> tuple[float, list[Level]]:
    """Runs the load client as its own process against one target (with an API key, over TLS trusting
    `tls_ca` when given); returns (first answer, levels)."""
    command = [
        sys.executable, str(Path(__file__).resolve()), "--client", protocol, "--url", url, "--model", model,
        "--output", output, "--row", ",".join(repr(float(x)) for x in row.reshape(-1)),
        "--requests", str(args.requests), "--warmup", str(args.warmup), "--concurrency", args.concurrency,
        "--key", key, "--tls-ca", tls_ca,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load client failed against {url} ({protocol}):\n{done.stderr[-4000:]}")
    payload = json.loads(done.stdout.strip().splitlines()[-1])
    return float(payload["answer"]), [Level(**level) for level in payload["levels"]]


def _direct(model_json: Path, row: npt.NDArray[np.float32], requests: int, warmup: int) -> Level:
    import xgboost

    booster = xgboost.Booster()
    booster.load_model(str(model_json))
    booster.set_param({"nthread": 1})
    for _ in range(warmup):
        booster.inplace_predict(row)
    latencies = np.empty(requests, dtype=np.int64)
    started = time.perf_counter()
    for i in range(requests):
        t0 = time.perf_counter_ns()
        booster.inplace_predict(row)
        latencies[i] = time.perf_counter_ns() - t0
    wall = time.perf_counter() - started
    ms = latencies.astype(np.float64) / 1e6
    return Level(1, requests, float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), requests / wall)


@contextmanager
def _floor_server(model_json: Path) -> Iterator[str]:
    from tests.support.processes import stop_process

    process = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "floor_server.py"), str(model_json)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        first = process.stdout.readline()  # blocks until ready (or the process exits: "")
        if not first.startswith("floor ready: "):
            raise RuntimeError(f"floor server did not start: {first}{process.stdout.read()}")
        drain = threading.Thread(target=process.stdout.read, daemon=True)  # keep its pipe from filling
        drain.start()
        yield first.removeprefix("floor ready: ").strip()
    finally:
        stop_process(process)
        process.stdout.close()


def _versions(mlserver_venv: Path) -> str:
    from importlib.metadata import version

    mine = ", ".join(f"{name} {version(name)}" for name in ("xgboost-cpu", "grpcio", "tritonclient"))
    probe = subprocess.run(
        [
            str(mlserver_venv / "bin" / "python"),
            "-c",
            "from importlib.metadata import version as v; print(v('mlserver'), v('xgboost'), v('grpcio'))",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    ml = probe.stdout.split() if probe.returncode == 0 else ["?", "?", "?"]
    return (
        f"Python {platform.python_version()}, {mine}; MLServer {ml[0]} (its xgboost {ml[1]}, grpcio {ml[2]})"
    )


def _fmt(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _table(results: dict[str, list[Level]]) -> str:
    lines = [
        "| target | concurrency | p50 latency (ms) | p99 latency (ms) | throughput (req/s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for target, levels in results.items():
        for level in levels:
            lines.append(
                f"| {target} | {level.concurrency} | {_fmt(level.p50_ms)} | {_fmt(level.p99_ms)} "
                f"| {level.rps:,.0f} |"
            )
    return "\n".join(lines)


def _at(levels: list[Level], concurrency: int) -> Level:
    return next(level for level in levels if level.concurrency == concurrency)


def _verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def _ratios(results: dict[str, list[Level]]) -> str:
    direct, aisf = _at(results["direct"], 1), _at(results["aisf gRPC"], 1)
    floor_one = _at(results["floor gRPC"], 1)
    top = max(level.concurrency for level in results["aisf gRPC"])
    aisf_top, rest_top = _at(results["aisf gRPC"], top), _at(results["aisf REST"], top)
    ml_top, floor_top = _at(results["MLServer gRPC"], top), _at(results["floor gRPC"], top)
    unfrozen = _at(results[UNFROZEN], top)
    added = aisf.p50_ms - floor_one.p50_ms
    return "\n".join(
        [
            f"- goal c=1 p50 ≤ floor + 0.15 ms: aisf {aisf.p50_ms:.3f} ms, floor {floor_one.p50_ms:.3f} ms "
            f"({added:+.3f} ms): {_verdict(added <= 0.15)}",
            f"- goal c={top} p99 ≤ the floor's: aisf {_fmt(aisf_top.p99_ms)} ms, "
            f"floor {_fmt(floor_top.p99_ms)} ms: {_verdict(aisf_top.p99_ms <= floor_top.p99_ms)}",
            f"- goal c={top} throughput ≥ 1.2x the floor's: {aisf_top.rps / floor_top.rps:.2f}x: "
            f"{_verdict(aisf_top.rps >= 1.2 * floor_top.rps)}",
            f"- the tail's cause: with the collector free to walk start-up's objects (AISF_GC_FREEZE=false) "
            f"aisf's c={top} p99 is {_fmt(unfrozen.p99_ms)} ms (p50 {_fmt(unfrozen.p50_ms)} ms), frozen "
            f"{_fmt(aisf_top.p99_ms)} ms",
            f"- aisf gRPC overhead over the engine alone at c=1: p50 +{aisf.p50_ms - direct.p50_ms:.3f} ms, "
            f"p99 +{aisf.p99_ms - direct.p99_ms:.3f} ms",
            f"- aisf gRPC / MLServer gRPC throughput at c={top}: {aisf_top.rps / ml_top.rps:.2f}x",
            f"- aisf REST / aisf gRPC throughput at c={top}: {rest_top.rps / aisf_top.rps:.2f}x",
        ]
    )


def _document(table: str, ratios: str, command: str, versions: str, args: argparse.Namespace) -> str:
    cores, cpu = machine()
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""## KServe V2 inference: engine, floor, aisf gRPC and REST, MLServer

KServe V2 inference on the sample `tabular-demo` model (XGBoost binary classifier, 10 trees of depth 3),
one FP32 `[1, 4]` row per request. Written by `bench/v2_bench.py`; see `bench/README.md`.

- Date: {today}
- Machine: {cores} CPUs (nproc), {cpu}
- Software: {versions}
- Command: `{command}`
- Load: one client process (tritonclient `grpc.aio`, or `http.aio` with binary tensors for REST), one
  channel/connection pool, {args.requests} timed requests per concurrency level after {args.warmup}
  warm-up requests. Server and client share the same cores.

{table}

`direct` is `Booster.inplace_predict` called in-process with `nthread=1` (no server, no serialisation):
the floor any server adds to. `floor gRPC` is `bench/floor_server.py`, a bare `grpc.aio` ModelInfer with
no validation, metrics or batching.

Ratios:

{ratios}

Notes:

- aisf serves the sample config as is: dynamic batching with `max_queue_delay_microseconds: 0` and one
  instance, JSON logs on. REST goes through aisf's gateway, which calls the router in the same process.
- The floor does not batch: every request is its own `inplace_predict` on a worker thread. aisf's batcher
  coalesces requests that arrive while the engine is busy (in a check at c=32, 2001 inferences ran as 328
  executions, ~6 rows each), which is how aisf can out-run the floor at c>1 while costing more at c=1.
- MLServer runs with `parallel_workers: 0` (inference on its main event loop; its worker pool is not used)
  and its XGBoost runtime's own thread settings.
- On a 2-core machine the load client competes with the server for CPU, so absolute numbers are low and
  the c=32 rows measure CPU saturation more than queueing; compare rows from the same run only.
- The c=32 tail (p99 ~150 ms against a p50 of ~10 ms in earlier runs) was the garbage collector: a
  `gc.callbacks` probe on the server during a c=32 run counted 5 full (generation-2) collections of
  70-113 ms each, walking ~240,000 long-lived objects that start-up created (modules, engines, the
  Temporal worker's sandbox); generation-0/1 collections stayed under 1.4 ms. aisf now collects once
  and `gc.freeze()`s those objects when it starts serving (and again after a reload unloads engines),
  so full collections only walk what requests allocate. The `GC freeze off` row reruns the same server
  with `AISF_GC_FREEZE=false`, side by side.
- aisf runs `--role all`, which also runs an embedded Temporal dev server and a job worker on the same
  two cores; every request also passes the dataplane's breaker, deadline and shadow checks and its
  metrics.
"""


def _orchestrate(args: argparse.Namespace) -> None:
    from aisf.services.samples import build_tabular_demo, tabular_training_data
    from tests.support.mlserver import mlserver_venv, running_mlserver, write_xgboost_model
    from tests.support.processes import running_aisf

    results: dict[str, list[Level]] = {}
    answers: dict[str, float] = {}

    def step(name: str) -> None:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="aisf-bench-") as tmp:
        root = Path(tmp)
        model_json = build_tabular_demo(root / "models") / "1" / "model.json"
        row = np.ascontiguousarray(tabular_training_data()[0][:1], dtype=np.float32)

        step("direct (in-process Booster.inplace_predict)")
        results["direct"] = [_direct(model_json, row, args.requests, args.warmup)]

        step("floor gRPC")
        with _floor_server(model_json) as url:
            answers["floor gRPC"], results["floor gRPC"] = _drive("grpc", url, MODEL, "output__0", row, args)

        step("aisf gRPC + REST")
        (root / "data").mkdir()
        with running_aisf(root / "models", root / "data") as aisf:
            answers["aisf gRPC"], results["aisf gRPC"] = _drive(
                "grpc", aisf.grpc_url, MODEL, "output__0", row, args
            )
            answers["aisf REST"], results["aisf REST"] = _drive(
                "http", aisf.http_url, MODEL, "output__0", row, args
            )

        step("aisf gRPC with AISF_GC_FREEZE=false (the tail's cause, for comparison)")
        top = argparse.Namespace(**{**vars(args), "concurrency": args.concurrency.split(",")[-1]})
        (root / "data-unfrozen").mkdir()
        with running_aisf(root / "models", root / "data-unfrozen", env={"AISF_GC_FREEZE": "false"}) as aisf:
            answers[UNFROZEN], results[UNFROZEN] = _drive("grpc", aisf.grpc_url, MODEL, "output__0", row, top)

        step("MLServer gRPC")
        write_xgboost_model(root / "mlserver", MODEL, model_json)
        with running_mlserver(root / "mlserver") as mlserver:
            answers["MLServer gRPC"], results["MLServer gRPC"] = _drive(
                "grpc", mlserver.grpc_url, MODEL, "predict", row, args
            )

        import xgboost

        booster = xgboost.Booster()
        booster.load_model(str(model_json))
        expected = float(np.asarray(booster.inplace_predict(row)).reshape(-1)[0])
        wrong = {t: a for t, a in answers.items() if not np.isclose(a, expected, rtol=1e-6, atol=0)}
        if wrong:
            raise RuntimeError(f"targets answered differently from xgboost ({expected}): {wrong}")

    table = _table(results)
    ratios = _ratios(results)
    print(table)
    print()
    print(ratios)
    if args.out:
        command = command_line()
        out = Path(args.out)
        write_section(out, "v2-bench", _document(table, ratios, command, _versions(mlserver_venv()), args))
        print(f"\n[bench] wrote {out}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per concurrency level")
    parser.add_argument("--warmup", type=int, default=200, help="untimed requests before each level")
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)), help="e.g. 1,8,32")
    parser.add_argument("--out", help="rewrite this markdown file (e.g. docs/benchmarks.md) with the results")
    # The load client (spawned by the benchmark itself, one process per target):
    parser.add_argument("--client", choices=["grpc", "http"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--model", default=MODEL, help=argparse.SUPPRESS)
    parser.add_argument("--output", default="output__0", help=argparse.SUPPRESS)
    parser.add_argument("--row", help=argparse.SUPPRESS)
    parser.add_argument("--key", default="", help=argparse.SUPPRESS)
    parser.add_argument("--tls-ca", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.requests < 1 or args.warmup < 0:
        parser.error("--requests must be >= 1 and --warmup >= 0")
    if args.client:
        print(json.dumps(asyncio.run(_client(args))))
    else:
        _orchestrate(args)


if __name__ == "__main__":
    main()
