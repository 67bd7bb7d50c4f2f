"""Feature lane benchmark: online-feature lookups (Feast's SDK, `feast serve`, a raw Redis pipeline, aisf's
fast path in process, over gRPC and over REST) and recsys-demo ranking 100 candidates end to end.

    .venv/bin/python bench/feature_bench.py [--lookups N] [--seconds S] [--out docs/benchmarks.md]

One run: the sample Feast repository (users x items, 8 features in the `ranker_features` service) is
written to a temp dir, applied and materialized into the local Redis (db 12, flushed), and every target
reads the same keys one request at a time (c=1) after a warm-up, with start-up's objects frozen out of the
garbage collector for every target (what `aisf serve` does): 1 entity row, and 100 rows (100 users
and 100 items: 200 Redis hashes, 800 values). Then `aisf serve --role all` ranks 100 candidates for one
user per request (tritonclient-style V2 gRPC, entity ids only), open-loop at increasing rates.
Everything binds 127.0.0.1; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.loads import open_loop  # noqa: E402 - needs ROOT on sys.path
from bench.report import command_line, machine, write_section  # noqa: E402

DB = 12
RATES = (50, 100, 150, 200, 300)


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _rows(count: int, offset: int) -> tuple[list[int], list[int]]:
    users = [((offset + i) % 200) + 1 for i in range(count)]
    items = [((offset * 7 + i) % 500) + 1 for i in range(count)]
    return users, items


async def _time(call: Callable[[int], Awaitable[Any]], lookups: int, warmup: int = 50) -> tuple[float, float]:
    for i in range(warmup):
        await call(i)
    latencies = []
    for i in range(lookups):
        started = time.perf_counter()
        await call(i)
        latencies.append((time.perf_counter() - started) * 1000)
    return _pct(latencies, 50), _pct(latencies, 99)


def _lookup_targets(repo: Path, store: Any, grpc_url: str, http_url: str, feast_url: str) -> dict[str, Any]:
    import grpc
    import httpx
    import redis
    from feast.protos.feast.types.Value_pb2 import Value
    from prometheus_client import CollectorRegistry

    from aisf.feature.v1 import feature_service_pb2 as pb
    from aisf.feature.v1 import feature_service_pb2_grpc as pb_grpc
    from aisf.services.feature import feast_layout
    from aisf.services.feature.catalog import load_catalog
    from aisf.services.feature.metrics import FeatureMetrics
    from aisf.services.feature.online import FeatureLookup
    from aisf.services.feature.server import online_store
    from aisf.services.feature.types import FeatureQuery

    catalog = load_catalog(store)
    service = store.get_feature_service("ranker_features")
    lookup = FeatureLookup(
        catalog, online_store(catalog, store, 1.0), FeatureMetrics(CollectorRegistry()), 1000
    )
    channel = grpc.aio.insecure_channel(grpc_url)
    stub = pb_grpc.FeatureServiceStub(channel)
    http = httpx.AsyncClient(base_url=f"http://{http_url}")
    feast_http = httpx.AsyncClient(base_url=feast_url)
    raw = redis.Redis(db=DB)
    views = [catalog.views["user_features"], catalog.views["item_features"]]
    fields = {
        v.name: [feast_layout.field_hash(v.name, f.name) for f in v.features]
        + [feast_layout.timestamp_field(v.name)]
        for v in views
    }

    def make(rows: int) -> dict[str, Callable[[int], Awaitable[Any]]]:
        def entities(i: int) -> dict[str, list[int]]:
            users, items = _rows(rows, i)
            return {"user_id": users, "item_id": items}

        async def feast_sdk(i: int) -> Any:
            e = entities(i)
            return store.get_online_features(
                features=service,
                entity_rows=[
                    {"user_id": u, "item_id": v} for u, v in zip(e["user_id"], e["item_id"], strict=True)
                ],
            )

        async def feast_serve(i: int) -> Any:
            answer = await feast_http.post(
                "/get-online-features", json={"feature_service": "ranker_features", "entities": entities(i)}
            )
            answer.raise_for_status()

        async def raw_pipeline(i: int) -> Any:
            e = entities(i)
            with raw.pipeline(transaction=False) as pipe:
                for view, key in zip(views, ("user_id", "item_id"), strict=True):
                    for value in e[key]:
                        pipe.hmget(
                            feast_layout.entity_key([key], ["INT64"], [value]) + catalog.project.encode(),
                            fields[view.name],
                        )
                replies = pipe.execute()
            decoded = []
            for reply in replies:
                for data in reply[:-1]:
                    message = Value()
                    message.ParseFromString(data or b"")
                    decoded.append(message)
            return decoded

        async def aisf_in_process(i: int) -> Any:
            return await lookup.get(FeatureQuery(entities(i), feature_service="ranker_features"))

        async def aisf_grpc(i: int) -> Any:
            request = pb.GetOnlineFeaturesRequest(feature_service="ranker_features")
            for key, values in entities(i).items():
                request.entities[key].int64_values.values.extend(values)
            return await stub.GetOnlineFeatures(request)

        async def aisf_rest(i: int) -> Any:
            answer = await http.post(
                "/v1/features/get-online-features",
                json={"feature_service": "ranker_features", "entities": entities(i)},
            )
            answer.raise_for_status()

        return {
            "Feast SDK (in process)": feast_sdk,
            "feast serve (HTTP)": feast_serve,
            "raw Redis pipeline + ValueProto decode": raw_pipeline,
            "aisf fast path (in process)": aisf_in_process,
            "aisf gRPC": aisf_grpc,
            "aisf REST": aisf_rest,
        }

    return {"make": make, "close": [lookup.close, channel.close, http.aclose, feast_http.aclose]}


async def _lookups(targets: dict[str, Any], lookups: int) -> dict[int, dict[str, tuple[float, float]]]:
    results: dict[int, dict[str, tuple[float, float]]] = {}
    for rows in (1, 100):
        results[rows] = {}
        for name, call in targets["make"](rows).items():
            results[rows][name] = await _time(call, lookups)
            p50, p99 = results[rows][name]
            print(f"{rows:>3} rows  {name:<40} p50 {p50:.3f}  p99 {p99:.3f} ms", flush=True)
    return results


async def _ranking(grpc_url: str, seconds: float) -> list[dict[str, float]]:
    """recsys-demo through tritonclient's asyncio gRPC client: one user, 100 candidate ids per request."""
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(grpc_url)
    counter = iter(range(10**9))

    def inputs(i: int) -> list[Any]:
        user, items = (
            grpcclient.InferInput("user_id", [1], "INT64"),
            grpcclient.InferInput("item_id", [100], "INT64"),
        )
        user.set_data_from_numpy(np.asarray([(i % 200) + 1], np.int64))
        items.set_data_from_numpy(((np.arange(100) + i) % 500 + 1).astype(np.int64))
        return [user, items]

    async def rank() -> Any:
        return await client.infer("recsys-demo", inputs(next(counter)), client_timeout=10)

    for _ in range(100):
        await rank()
    levels = []
    for rate in RATES:
        sample = await open_loop(rank, rate, seconds)
        level = {
            "rate": rate,
            "achieved": sample.rate(),
            "p50": sample.percentile(50),
            "p99": sample.percentile(99),
            "p999": sample.percentile(99.9),
            "failed": sample.failed + sample.refused,
        }
        print(f"rate {rate}: {level}", flush=True)
        levels.append(level)
    await client.close()
    return levels


def _document(
    lookups: dict[int, dict[str, tuple[float, float]]],
    levels: list[dict[str, float]],
    args: argparse.Namespace,
) -> str:
    cpus, model = machine()
    versions = [metadata.version("feast"), metadata.version("redis")]
    server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    redis_version = server[2].removeprefix("v=") if len(server) > 2 else "?"
    lines = [
        "## Feature lane (bench/feature_bench.py)",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {cpus} CPUs ({model}); "
        f"Feast {versions[0]}, redis-py {versions[1]}, Redis {redis_version}. Command: `{command_line()}`",
        "",
        f"Online-feature lookups, `ranker_features` (8 features over 2 views), one at a time, "
        f"{args.lookups} per cell after 50 warm-up:",
        "",
        "| target | 1 row p50 | 1 row p99 | 100 rows p50 | 100 rows p99 |",
        "|---|---|---|---|---|",
    ]
    for name in lookups[1]:
        one, hundred = lookups[1][name], lookups[100][name]
        lines.append(f"| {name} | {one[0]:.3f} | {one[1]:.3f} | {hundred[0]:.3f} | {hundred[1]:.3f} |")
    lines += [
        "",
        "(ms.) 100 rows = 100 users + 100 items = 200 Redis hashes, 800 values.",
        "",
        "recsys-demo, 100 candidates per request (entity ids only; the router fetches 101 entities' "
        f"features and runs the XGBoost ranker), aisf gRPC, open loop, {args.seconds:.0f} s per rate:",
        "",
        "| offered rate (req/s) | achieved (req/s) | p50 ms | p99 ms | p99.9 ms | failed |",
        "|---|---|---|---|---|---|",
    ]
    for level in levels:
        cells = [f"{level['rate']:.0f}", f"{level['achieved']:.0f}"]
        cells += [f"{level[k]:.2f}" for k in ("p50", "p99", "p999")] + [f"{level['failed']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from aisf.services.common import heap
    from aisf.services.feature.server import open_feature_store
    from aisf.services.feature_samples import build_recsys_demo
    from tests.support.features import materialized_repo
    from tests.support.processes import free_port, running_aisf, stop_process

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        repo = materialized_repo(root / "features", db=DB)
        models = root / "models"
        build_recsys_demo(models)
        store = open_feature_store(repo)
        feast_port = free_port()
        feast = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("feast")),
                "-c",
                str(repo),
                "serve",
                "-h",
                "127.0.0.1",
                "-p",
                str(feast_port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        try:
            _wait_http(f"http://127.0.0.1:{feast_port}/health")
            with running_aisf(models, root / "data", env={"AISF_FEATURE_REPO": str(repo)}) as server:
                feast_url = f"http://127.0.0.1:{feast_port}"

                async def run() -> tuple[Any, Any]:
                    targets = _lookup_targets(repo, store, server.grpc_url, server.http_url, feast_url)
                    heap.freeze()  # as `aisf serve` does once started (AISF_GC_FREEZE): Feast's objects too
                    try:
                        found = await _lookups(targets, args.lookups)
                        return found, await _ranking(server.grpc_url, args.seconds)
                    finally:
                        for close in targets["close"]:
                            await close()

                lookups, levels = asyncio.run(run())
        finally:
            stop_process(feast)  # feast serve's gunicorn master and its workers
    document = _document(lookups, levels, args)
    print(document)
    if args.out:
        write_section(args.out, "feature-bench", document)


def _wait_http(url: str, timeout_s: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


if __name__ == "__main__":
    main()
