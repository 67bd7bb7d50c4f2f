"""What the edge and the keys cost the real-time lane: nginx (TLS) in front vs straight to aisf, and a key
checked per request vs none.

    .venv/bin/python bench/edge_bench.py [--requests N] [--rounds R] [--out docs/benchmarks.md]

Three `aisf serve --role all` over the sample `tabular-demo`, started at once: two with AISF_AUTH=off (the
second says how far two processes of one configuration differ anyway), one with keys and `--edge`
(Debian's nginx, TLS, HTTP/2 for gRPC). Each path below is loaded in turns
(`--rounds` rounds, each starting one path later) by bench/v2_bench.py's load client (tritonclient's aio
clients, their own process) at concurrency 32; a path's figure is the median of its rounds:

  gRPC, no key          V2 ModelInfer to the router's port, AISF_AUTH=off
  gRPC, key             the same with `authorization: Bearer <key>` (AISF_AUTH=keys)
  gRPC via nginx (TLS)  the same through the edge: TLS + HTTP/2 to nginx, nginx to the router
  REST, no key / key / via nginx (TLS)   the same over KServe V2 REST (binary tensors); REST with a key
                        also pays the router's check of the forwarded principal (the gRPC hop)

In process: one cached key check (the authenticator), and the gRPC guard's admission of a call carrying
the roles' token and a forwarded principal (what every hop behind the gateway pays).
"""

from __future__ import annotations

import argparse
import asyncio
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

CONCURRENCY = 32


def auth_costs_us(calls: int = 100_000) -> tuple[float, float]:
    """(µs of one cached key check, µs of admitting one call from another role), in process."""
    from aisf.services.common import call_context
    from aisf.services.common.auth.authenticator import Authenticator
    from aisf.services.common.auth.grpc_guard import GrpcGuard
    from aisf.services.common.auth.key_store import KeyStore
    from aisf.services.common.auth.permissions import rule_for
    from aisf.services.common.auth.principal import Principal
    from aisf.services.common.auth.rate_limits import TierRateLimits
    from aisf.services.common.db.engine import open_database

    async def measure(folder: str) -> tuple[float, float]:
        database = open_database(f"sqlite:///{folder}/keys.db", 1)
        store = KeyStore(database, frozenset({"standard"}))
        store.create_tenant("bench", "standard")
        _, token = store.create_key("bench", ("infer",))
        authenticator = Authenticator(store, 3600.0, TierRateLimits({}))
        authorization = f"Bearer {token}"
        await authenticator.principal(authorization)
        started = time.perf_counter_ns()
        for _ in range(calls):
            await authenticator.principal(authorization)
        key_us = (time.perf_counter_ns() - started) / calls / 1e3
        guard, rule = (
            GrpcGuard(authenticator, "internal-token"),
            rule_for("/inference.GRPCInferenceService/ModelInfer"),
        )
        forwarded = Principal("bench", "standard", frozenset({"infer"}), key_id="0123456789ab").encoded
        metadata = (("authorization", "Bearer internal-token"), (call_context.PRINCIPAL_KEY, forwarded))
        started = time.perf_counter_ns()
        for _ in range(calls):
            await guard.admit(metadata, rule)
        hop_us = (time.perf_counter_ns() - started) / calls / 1e3
        database.close()
        return key_us, hop_us

    with tempfile.TemporaryDirectory() as folder:
        return asyncio.run(measure(folder))


def _document(rows: dict[str, list[Level]], costs: tuple[float, float], args: argparse.Namespace) -> str:
    cores, cpu = machine()
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "| path | throughput (req/s) | vs no key | p50 (ms) | p99 (ms) | p99 vs no key |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, levels in rows.items():
        base = rows["gRPC, no key" if name.startswith("gRPC") else "REST, no key"]
        rps, base_rps = (statistics.median(level.rps for level in ls) for ls in (levels, base))
        p50 = statistics.median(level.p50_ms for level in levels)
        p99, base_p99 = (statistics.median(level.p99_ms for level in ls) for ls in (levels, base))
        change, extra = rps / base_rps - 1, p99 - base_p99
        lines.append(f"| {name} | {rps:,.0f} | {change:+.1%} | {p50:.2f} | {p99:.2f} | {extra:+.2f} ms |")
    return f"""## The edge and keys: nginx (TLS) and a key per request vs none (bench/edge_bench.py)

V2 `ModelInfer` of one `[1, 4]` FP32 row on the sample `tabular-demo` XGBoost model, concurrency
{CONCURRENCY}, {args.requests} timed requests per round after {args.warmup} of warm-up, {args.rounds} rounds
taken in turns; three `aisf serve --role all` (keys off twice; keys on with `--edge`, nginx
{_nginx_version()}).

- Date: {today}
- Machine: {cores} CPUs (nproc), {cpu}; Python {platform.python_version()}
- Command: `{command_line()}`

{chr(10).join(lines)}

- In process: a cached key check costs {costs[0]:.2f} µs; admitting a call from another role (the shared
  token and a forwarded principal) {costs[1]:.2f} µs.
- Two processes of the same configuration differ by as much as a key seems to cost: the in-process
  figures are the measure of the key check (a microsecond of the {1e6 / _rps(rows["gRPC, key"]):.0f} µs
  one request takes at that throughput).
- nginx shares these {cores} cores with aisf and the load client: on a machine of its own, the edge's
  cost is its TLS and proxy hop, not CPU taken from the engine.
"""


def _rps(levels: list[Level]) -> float:
    return statistics.median(level.rps for level in levels)


def _nginx_version() -> str:
    import subprocess

    done = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False)
    return done.stderr.strip().split("/")[-1] if done.returncode == 0 else "?"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--warmup", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", help="rewrite this markdown file's edge-bench section")
    args = parser.parse_args(argv)

    from aisf.services.samples import build_tabular_demo, tabular_training_data
    from tests.support.keys import create_key
    from tests.support.processes import free_port, running_aisf

    load = argparse.Namespace(requests=args.requests, warmup=args.warmup, concurrency=str(CONCURRENCY))
    rows: dict[str, list[Level]] = {}
    with tempfile.TemporaryDirectory(prefix="aisf-edge-bench-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        build_tabular_demo(root / "models")
        row = np.ascontiguousarray(tabular_training_data()[0][:1], dtype=np.float32)
        (root / "keys").mkdir()
        key = create_key(root / "keys", "bench")
        edge_port = free_port()
        quiet = {
            "AISF_LOG_LEVEL": "WARNING",
            "AISF_EDGE_RATE_PER_KEY": "1000000",
            "AISF_EDGE_RATE_PER_ADDRESS": "1000000",
        }
        plain = stack.enter_context(running_aisf(root / "models", root / "plain", env=quiet))
        control = stack.enter_context(running_aisf(root / "models", root / "control", env=quiet))
        keyed = stack.enter_context(
            running_aisf(
                root / "models",
                root / "keys",
                args=["--edge"],
                env={**quiet, "AISF_AUTH": "keys", "AISF_EDGE_PORT": str(edge_port)},
            )
        )
        ca = str(root / "keys" / "edge" / "tls" / "edge.crt")
        edge = f"localhost:{edge_port}"
        paths = {
            "gRPC, no key": ("grpc", plain.grpc_url, "", ""),
            "gRPC, no key, another process": ("grpc", control.grpc_url, "", ""),
            "gRPC, key": ("grpc", keyed.grpc_url, key, ""),
            "gRPC via nginx (TLS), key": ("grpc", edge, key, ca),
            "REST, no key": ("http", plain.http_url, "", ""),
            "REST, no key, another process": ("http", control.http_url, "", ""),
            "REST, key": ("http", keyed.http_url, key, ""),
            "REST via nginx (TLS), key": ("http", edge, key, ca),
        }
        for name, (protocol, url, with_key, tls) in in_turns(paths, args.rounds):
            _, levels = _drive(protocol, url, MODEL, "output__0", row, load, with_key, tls)
            rows.setdefault(name, []).extend(levels)
    ordered = {name: rows[name] for name in paths}
    section = _document(ordered, auth_costs_us(), args)
    print(section)
    if args.out:
        write_section(Path(args.out), "edge-bench", section)


if __name__ == "__main__":
    main()
