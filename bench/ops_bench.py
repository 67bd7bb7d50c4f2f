"""What operations cost the real-time lane: the request log, metrics and tracing, on vs off.

    .venv/bin/python bench/ops_bench.py [--requests N] [--rounds R] [--out docs/benchmarks.md]

One aisf router (`aisf serve --role router`) per configuration, all started at once over the sample
`tabular-demo` model, then loaded in turns (round-robin, `--rounds` times, each round starting one
configuration later) by bench/v2_bench.py's load client (tritonclient.grpc.aio, its own process) at
concurrency 32, so drift on a shared machine falls on every configuration alike; a configuration's
figure is the median of its rounds. Configurations:

  log off            AISF_REQUEST_LOG_SAMPLE=0 and no slow threshold: no request-log line at all
  log off, a second  the same again in another process: the noise floor of the comparison
  log default        the defaults: a line for 10 % of the fast successes (and every failure or slow one)
  log every request  AISF_REQUEST_LOG_SAMPLE=1: one JSON line per request
  tracing, all       the default log plus AISF_TRACING=otlp, every trace sampled, exported over OTLP/gRPC
                     to a receiver in this process (a collector on the same cores: a cost a real one
                     elsewhere would not add)
  tracing, 10 %      the same at AISF_TRACING_SAMPLE=0.1

Metrics cannot be switched off (the dataplane always counts); their cost is measured in process instead:
the time of the dataplane's per-request metric updates, against the time one request takes at the
measured throughput.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.report import command_line, in_turns, machine, write_section  # noqa: E402
from bench.v2_bench import MODEL, Level, _drive  # noqa: E402

CONCURRENCY = 32
BASELINE = "log off"
CONTROL = "log off, a second process"  # the same configuration: how far two processes differ anyway
DEFAULT = "log default (10 %)"


def _configurations(otlp: str) -> dict[str, dict[str, str]]:
    tracing = {"AISF_TRACING": "otlp", "AISF_OTLP_ENDPOINT": otlp}
    off = {"AISF_REQUEST_LOG_SAMPLE": "0", "AISF_REQUEST_LOG_SLOW_MS": "1000000"}
    return {
        BASELINE: off,
        CONTROL: off,
        DEFAULT: {},
        "log every request": {"AISF_REQUEST_LOG_SAMPLE": "1"},
        "tracing, all": {**tracing, "AISF_TRACING_SAMPLE": "1"},
        "tracing, 10 %": {**tracing, "AISF_TRACING_SAMPLE": "0.1"},
    }


def metrics_cost_us(calls: int = 200_000) -> float:
    """Microseconds the dataplane's metric updates add to one successful request (counter, three
    histograms through cached label children, and the per-model statistics)."""
    from prometheus_client import CollectorRegistry

    from aisf.services.common.metrics import InferenceMetrics
    from aisf.services.router.statistics import ExecutionTiming, ModelStatistics

    metrics = InferenceMetrics(CollectorRegistry())
    stats = ModelStatistics(MODEL, "1")
    timing = ExecutionTiming(50_000, 10_000, 300_000, 10_000, 1)
    started = time.perf_counter_ns()
    for _ in range(calls):
        stats.record_success(400_000, 1, timing)
        metrics.success(MODEL, "1", 400_000, timing.queue_ns, 1)
    return (time.perf_counter_ns() - started) / calls / 1e3


def log_line_cost_us(lines: int = 50_000) -> float:
    """Microseconds one `v2 request` line costs in process: its fields, the record, the JSON formatter
    and a write to /dev/null (the pipe and whatever reads it come on top)."""
    import logging
    import os

    from aisf.services.common.logging import JsonFormatter
    from aisf.services.common.request_log import RequestLog, describe_parameters, describe_tensors
    from aisf.services.common.tensors import Tensor

    with open(os.devnull, "w") as sink:
        handler = logging.StreamHandler(sink)
        handler.setFormatter(JsonFormatter())
        logger = logging.getLogger("aisf.requests")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        request_log, inputs = RequestLog(sample=1.0), [Tensor("input__0", "FP32", [1, 4], None)]
        started = time.perf_counter_ns()
        for _ in range(lines):
            if request_log.keeps("success", 400_000):
                fields = {
                    "model": MODEL,
                    "version": "1",
                    "inputs": describe_tensors(inputs),
                    "parameters": describe_parameters({}),
                    "outputs": ["output__0"],
                    "rows": 1,
                    "queue_ms": 0.05,
                    "compute_ms": 0.3,
                    "batch_size": 1,
                }
                request_log.write("v2 request", "success", 400_000, fields)
        elapsed = time.perf_counter_ns() - started
        logger.removeHandler(handler)
    return elapsed / lines / 1e3


@contextmanager
def _routers(models: Path, data: Path, otlp: str) -> Iterator[dict[str, str]]:
    from tests.support.processes import running_aisf

    with ExitStack() as stack:
        urls = {}
        for index, (name, env) in enumerate(_configurations(otlp).items()):
            folder = data / f"data-{index}"
            folder.mkdir()
            server = stack.enter_context(running_aisf(models, folder, env=env, role="router"))
            urls[name] = server.grpc_url
        yield urls


def _verdict(in_process: float, measured: float) -> str:
    return "met" if in_process <= 0.03 and measured <= 0.03 else "**missed**"


def _document(
    rows: dict[str, list[Level]], metrics_us: float, line_us: float, args: argparse.Namespace
) -> str:
    cores, cpu = machine()
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    base = statistics.median(level.rps for level in rows[BASELINE])
    lines = [
        "| configuration | throughput (req/s, median of rounds) | vs log off | p50 (ms) | p99 (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, levels in rows.items():
        rps = statistics.median(level.rps for level in levels)
        p50 = statistics.median(level.p50_ms for level in levels)
        p99 = statistics.median(level.p99_ms for level in levels)
        lines.append(f"| {name} | {rps:,.0f} | {rps / base - 1:+.1%} | {p50:.2f} | {p99:.2f} |")

    def cost(name: str) -> float:
        return 1 - statistics.median(level.rps for level in rows[name]) / base

    default = statistics.median(level.rps for level in rows[DEFAULT])
    per_request_us = 1e6 / default * cores  # CPU time one request may take at that throughput
    log_cost = cost(DEFAULT)
    metrics_share = metrics_us / per_request_us
    line_share = 0.1 * line_us / per_request_us  # the default sample
    return f"""## Operations: request log, metrics and tracing on vs off (bench/ops_bench.py)

V2 gRPC `ModelInfer` of one `[1, 4]` FP32 row on the sample `tabular-demo` XGBoost model, concurrency
{CONCURRENCY}, {args.requests} timed requests per round after {args.warmup} of warm-up, {args.rounds} rounds
taken in turns; one `aisf serve --role router` per configuration.

- Date: {today}
- Machine: {cores} CPUs (nproc), {cpu}; Python {platform.python_version()}
- Command: `{command_line()}`

{chr(10).join(lines)}

- Throughput the request log costs, measured: {log_cost:.1%} at the default sampling,
  {cost("log every request"):.1%} logging every request; two processes of the same configuration differ
  by {cost(CONTROL):+.1%}, so the in-process figures below are the steadier measure.
- In process: a request-log line costs {line_us:.1f} µs ({line_share:.1%} of the {per_request_us:.0f} µs of
  CPU one request takes at the default throughput, at the default 10 % sample); the metric updates
  {metrics_us:.2f} µs per request ({metrics_share:.1%}).
- Goal ≤ 3 % for logs + metrics at the defaults: measured {max(log_cost, 0) + metrics_share:.1%},
  in process {line_share + metrics_share:.1%}: {_verdict(line_share + metrics_share, log_cost)}.
- Tracing (off by default) costs {cost("tracing, all"):.1%} of the throughput with every trace recorded
  and {cost("tracing, 10 %"):.1%} at 10 % (a server span and an engine span per request, batched OTLP
  export; the receiver shares the cores).
"""


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--warmup", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", help="rewrite this markdown file's ops-bench section")
    args = parser.parse_args(argv)

    from aisf.services.samples import build_tabular_demo, tabular_training_data
    from tests.support.otlp import running_otlp_collector

    load = argparse.Namespace(requests=args.requests, warmup=args.warmup, concurrency=str(CONCURRENCY))
    rows: dict[str, list[Level]] = {}
    with tempfile.TemporaryDirectory(prefix="aisf-ops-bench-") as tmp, running_otlp_collector() as otlp:
        root = Path(tmp)
        build_tabular_demo(root / "models")
        row = np.ascontiguousarray(tabular_training_data()[0][:1], dtype=np.float32)
        with _routers(root / "models", root, otlp.endpoint) as urls:
            for name, url in in_turns(urls, args.rounds):
                _, levels = _drive("grpc", url, MODEL, "output__0", row, load)
                rows.setdefault(name, []).extend(levels)
        spans = len(otlp.spans())
    metrics_us = metrics_cost_us()
    section = (
        _document(rows, metrics_us, log_line_cost_us(), args) + f"- Spans the receiver got: {spans:,}.\n"
    )
    print(section)
    if args.out:
        write_section(Path(args.out), "ops-bench", section)


if __name__ == "__main__":
    main()
