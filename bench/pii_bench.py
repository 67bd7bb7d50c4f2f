"""What the pii role does a second, and what it costs the hot path.

    .venv/bin/python bench/pii_bench.py [--seconds S] [--requests N] [--out docs/benchmarks.md]

- Analyzer throughput in process: the corpus of tests/support/pii_corpus.py (Korean and English, with
  near-misses), sentence by sentence, per language.
- The pii role over gRPC (`aisf serve --role pii`): Detect of one sentence a call, and of 64 a call.
- The log redaction queue's drain rate: records with an error detail (half English, half Korean) through
  log_redaction.LogRedactor with the pii role in process (what a burst of rejected requests costs).
- Answered job items kept redacted: chat requests carrying the corpus and their answers through the job
  workers' PayloadRedactor, a group of 16 at a time, the pii role in process.
- The hot path with the pii role on vs off: V2 gRPC ModelInfer at concurrency 32 (bench/v2_bench.py's
  load client) against two `aisf serve --role all`, AISF_PII_SERVICE true and false, in turns.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.report import command_line, in_turns, machine, write_section  # noqa: E402
from bench.v2_bench import MODEL, Level, _drive  # noqa: E402

if TYPE_CHECKING:
    from aisf.services.pii.servicer import PiiLane


def _sentences(language: str) -> list[str]:
    from aisf.services.pii.analyzer import language_of
    from tests.support.pii_corpus import CORPUS

    return [text for text, _ in CORPUS if language_of(text) == language]


def analyzer_rates(folder: Path, seconds: float) -> dict[str, float]:
    from aisf.services.pii.analyzer import PiiAnalyzer

    analyzer = PiiAnalyzer(folder)
    rates = {}
    for language in ("ko", "en"):
        texts, done, started = _sentences(language), 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            for text in texts:
                analyzer.detect(text)
            done += len(texts)
        rates[language] = done / (time.perf_counter() - started)
    return rates


def grpc_rates(url: str, seconds: float) -> dict[int, float]:
    from aisf.pii.v1 import pii_service_pb2 as pb
    from aisf.pii.v1 import pii_service_pb2_grpc as pb_grpc

    texts = _sentences("ko") + _sentences("en")
    rates = {}
    with grpc.insecure_channel(url) as channel:
        stub = pb_grpc.PiiServiceStub(channel)
        stub.Detect(pb.DetectRequest(texts=texts[:1]), timeout=120)  # waits for the models to load
        for batch in (1, 64):
            cycle = texts * (batch // len(texts) + 2)  # the same Korean/English mix at either size
            done, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                offset = done % len(texts)
                stub.Detect(pb.DetectRequest(texts=cycle[offset : offset + batch]), timeout=60)
                done += batch
            rates[batch] = done / (time.perf_counter() - started)
    return rates


def _wait_loaded(url: str) -> None:
    from aisf.pii.v1 import pii_service_pb2 as pb
    from aisf.pii.v1 import pii_service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(url) as channel:
        pb_grpc.PiiServiceStub(channel).Detect(pb.DetectRequest(texts=["warm up"]), timeout=120)
    time.sleep(2)  # and the one collection after it


@contextmanager
def _pii_lane(folder: Path) -> Iterator[tuple[PiiLane, asyncio.AbstractEventLoop]]:
    """The pii role in process, loaded, its event loop on a thread of its own."""
    from aisf.services.common.settings import Settings
    from aisf.services.pii.servicer import PiiLane

    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    lane = PiiLane(Settings(data_dir=folder))

    async def start() -> None:
        lane.start()
        await lane.analyzer()

    asyncio.run_coroutine_threadsafe(start(), loop).result(120)
    try:
        yield lane, loop
    finally:
        asyncio.run_coroutine_threadsafe(lane.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        runner.join(5)
        loop.close()


def payload_rate(lane: PiiLane, loop: asyncio.AbstractEventLoop, items: int) -> float:
    """Answered chat items a second the job workers' redaction keeps (request and response of each, in
    groups of the activity's size), the pii role in process."""
    import orjson
    from prometheus_client import CollectorRegistry

    from aisf.services.job.model import JobKind
    from aisf.services.job.payload_redaction import PayloadRedactor
    from aisf.workflows.activities import GROUP

    texts = _sentences("ko") + _sentences("en")
    requests = [
        orjson.dumps(
            {"messages": [{"role": "user", "content": f"{texts[i % len(texts)]} #{i}"}], "max_tokens": 16}
        )
        for i in range(items)
    ]
    responses = [
        orjson.dumps(
            {
                "object": "chat.completion",
                "choices": [{"message": {"role": "assistant", "content": f"Noted, case {i}."}}],
            }
        )
        for i in range(items)
    ]
    redactor = PayloadRedactor(lane.redact, 256, 100_000, CollectorRegistry())

    async def run() -> None:
        for start in range(0, items, GROUP):
            await redactor.clean(
                JobKind.CHAT, requests[start : start + GROUP], responses[start : start + GROUP]
            )

    started = time.perf_counter()
    asyncio.run_coroutine_threadsafe(run(), loop).result(600)
    return items / (time.perf_counter() - started)


def drain_rate(lane: PiiLane, records: int) -> float:
    """Records a second the log redaction queue writes, its pii role in process."""
    from aisf.services.common.log_redaction import LogRedactor

    # One wake-up at the end: a semaphore released per record had the waiting thread fight the redacting
    # one for the GIL (it measured a third of the rate).
    count, finished = [0], threading.Event()

    def written(record: logging.LogRecord) -> None:
        count[0] += 1
        if count[0] == records:
            finished.set()

    redactor = LogRedactor(lane.redact_blocking, written, capacity=records)
    started = time.perf_counter()
    for index in range(records):
        redactor.submit(
            logging.makeLogRecord(
                {"msg": "request rejected", "detail": f"unknown model 'm-{index}' from 010-1234-5678"}
            )
        )
    finished.wait(600)
    rate = records / (time.perf_counter() - started)
    redactor.close()
    return rate


def _document(
    analyzer: dict[str, float],
    remote: dict[int, float],
    drain: float,
    payloads: float,
    hot: dict[str, list[Level]],
    args: argparse.Namespace,
) -> str:
    cores, cpu = machine()
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    off, on = hot["pii role off"], hot["pii role on"]
    rps_off, rps_on = (statistics.median(level.rps for level in levels) for levels in (off, on))
    p99_off, p99_on = (statistics.median(level.p99_ms for level in levels) for levels in (off, on))
    return f"""## PII: the pii role's throughput and its cost to the hot path (bench/pii_bench.py)

- Date: {today}
- Machine: {cores} CPUs (nproc), {cpu}; Python {platform.python_version()}
- Command: `{command_line()}`

| measure | result |
|---|---:|
| analyzer in process, Korean sentences | {analyzer["ko"]:,.0f} /s |
| analyzer in process, English sentences (spaCy NER) | {analyzer["en"]:,.0f} /s |
| pii role over gRPC, Detect of 1 sentence a call | {remote[1]:,.0f} sentences/s |
| pii role over gRPC, Detect of 64 sentences a call | {remote[64]:,.0f} sentences/s |
| log redaction queue drain (records with an error detail) | {drain:,.0f} records/s |
| answered chat job items kept redacted (request + response, groups of 16) | {payloads:,.0f} items/s |
| hot path, pii role off: V2 gRPC at c=32 | {rps_off:,.0f} req/s, p99 {p99_off:.2f} ms |
| hot path, pii role on | {rps_on:,.0f} req/s, p99 {p99_on:.2f} ms ({rps_on / rps_off - 1:+.1%}) |

- Goal: the hot path unchanged within noise with redaction on: its request-log lines (successes) never
  wait for the pii role; only lines with free text (rejections, exceptions) do. {args.rounds} rounds each,
  in turns, {args.requests} timed requests a round.
"""


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--items", type=int, default=640)
    parser.add_argument("--out", help="rewrite this markdown file's pii-bench section")
    args = parser.parse_args(argv)

    from aisf.services.samples import build_tabular_demo, tabular_training_data
    from tests.support.processes import running_aisf

    with tempfile.TemporaryDirectory(prefix="aisf-pii-bench-") as tmp:
        root = Path(tmp)
        analyzer = analyzer_rates(root / "analyzer", args.seconds)
        with _pii_lane(root / "drain") as (lane, loop):
            drain = drain_rate(lane, args.records)
            payloads = payload_rate(lane, loop, args.items)
        build_tabular_demo(root / "models")
        with running_aisf(root / "models", root / "pii", role="pii") as pii:
            remote = grpc_rates(pii.grpc_url, args.seconds)
        row = np.ascontiguousarray(tabular_training_data()[0][:1], dtype=np.float32)
        load = argparse.Namespace(requests=args.requests, warmup=args.warmup, concurrency="32")
        hot: dict[str, list[Level]] = {}
        quiet = {"AISF_LOG_LEVEL": "WARNING"}
        with ExitStack() as stack:
            urls = {
                "pii role off": stack.enter_context(
                    running_aisf(root / "models", root / "off", env=quiet)
                ).grpc_url,
                "pii role on": stack.enter_context(
                    running_aisf(root / "models", root / "on", env={**quiet, "AISF_PII_SERVICE": "true"})
                ).grpc_url,
            }
            _wait_loaded(urls["pii role on"])  # its models load in the background: measure after
            for name, url in in_turns(urls, args.rounds):
                hot.setdefault(name, []).extend(_drive("grpc", url, MODEL, "output__0", row, load)[1])
    section = _document(analyzer, remote, drain, payloads, hot, args)
    print(section)
    if args.out:
        write_section(Path(args.out), "pii-bench", section)


if __name__ == "__main__":
    main()
