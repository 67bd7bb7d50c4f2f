"""LLM lane benchmark: time to first token and tokens/s for the sample llm-demo, and semantic-cache hits.

    .venv/bin/python bench/llm_bench.py [--requests N] [--max-tokens T] [--out docs/benchmarks.md]

One run, one model (llm-demo: the tiny GGUF built into a temp dir, speculative decoding with its draft,
one llama.cpp context with n_threads 1), one chat prompt, `max_tokens` tokens per request (the sample
never samples end-of-sequence, so every request generates exactly that many). Targets, each at
concurrency 1 and 8 with the same request count:

  direct       LlamaCppAdapter.stream() in this process (no server)
  direct, no draft   the same without the draft model (c=1): speculative decoding on vs off
  aisf gRPC    `aisf serve --role all`, aisf.llm.v1.LlmService/ChatCompletion (server stream)
  aisf REST    the same process, POST /v1/chat/completions with stream=true (SSE), via httpx
  aisf gRPC, json_schema / tool call (required)   structured output and a tool call (c=1)

The served requests send cache bypass so they reach the engine. Then the semantic cache (MiniLM
embeddings, in-process index; with --redis-url a second server with Redis as the index) is primed with
one greedy answer and hit by REST (non-streaming) requests: their end-to-end latency is the cache-hit
latency. Everything binds 127.0.0.1; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # reuse the test suite's process helpers (tests/support)
    sys.path.insert(0, str(ROOT))

from bench.report import command_line, machine, write_section  # noqa: E402 - needs ROOT on sys.path

MODEL = "llm-demo"
PROMPT = "hello world, tell me about the model"
VERDICT = json.dumps(
    {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}, "score": {"type": "integer"}},
        "required": ["answer", "score"],
    }
)
WEATHER = json.dumps(
    {"type": "object", "properties": {"city": {"type": "string", "maxLength": 16}}, "required": ["city"]}
)
HEADING = "## LLM lane: time to first token, tokens/s, semantic cache"

# One request: yields once per streamed chunk that carries text; returns nothing.
Generate = Callable[[], AsyncIterator[str | int]]  # text as it arrives, then the token count if known


@dataclass
class Level:
    target: str
    concurrency: int
    requests: int
    ttft_p50_ms: float
    ttft_p99_ms: float
    tokens_per_s: float
    gap_p99_ms: float


async def _level(target: str, generate: Generate, concurrency: int, requests: int) -> Level:
    ttfts: list[float] = []
    gaps: list[float] = []
    tokens = 0

    async def one() -> None:
        nonlocal tokens
        started = time.perf_counter()
        arrivals = [started]
        counted = 0  # the generation's own token count, when it reports one (chunks may carry several)
        async for piece in generate():
            if isinstance(piece, int):
                counted = piece
            else:
                arrivals.append(time.perf_counter())
        ttfts.append((arrivals[1] - started) * 1000)
        gaps.extend((b - a) * 1000 for a, b in zip(arrivals[1:], arrivals[2:], strict=False))
        tokens += counted or len(arrivals) - 1

    async def worker(count: int) -> None:
        for _ in range(count):
            await one()

    quotas = [requests // concurrency + (1 if k < requests % concurrency else 0) for k in range(concurrency)]
    started = time.perf_counter()
    await asyncio.gather(*(worker(q) for q in quotas))
    wall = time.perf_counter() - started
    p50, p99 = np.percentile(ttfts, [50, 99])
    gap_p99 = float(np.percentile(gaps, 99)) if gaps else 0.0
    return Level(target, concurrency, requests, float(p50), float(p99), tokens / wall, gap_p99)


async def _direct(
    repository: Path, max_tokens: int, requests: int, draft: bool = True
) -> tuple[list[Level], float | None]:
    """The engine alone at c=1 and 8 (with `draft` False: c=1 without the draft model); and the draft's
    acceptance rate over the run (None without one)."""
    from aisf.adapters.base import GenerativeAdapter, ModelSpec
    from aisf.adapters.registry import AdapterRegistry
    from aisf.services.common.llm_types import ChatMessage, GenerateRequest, SamplingParams
    from aisf.services.common.model_config import load_model_config

    config = load_model_config(repository / MODEL)
    if not draft:
        config = config.model_copy(
            update={"parameters": {k: v for k, v in config.parameters.items() if k != "draft_model"}}
        )
    adapter = AdapterRegistry.from_entry_points().create(config.backend)
    assert isinstance(adapter, GenerativeAdapter)
    await adapter.load(ModelSpec(MODEL, 1, repository / MODEL / "1", config))
    request = GenerateRequest(
        MODEL, messages=(ChatMessage("user", PROMPT),), params=SamplingParams(max_tokens, temperature=0.0)
    )

    async def generate() -> AsyncIterator[str | int]:
        async for chunk in adapter.stream(request):
            if chunk.text:
                yield chunk.text
            if chunk.usage is not None:
                yield chunk.usage.completion_tokens

    target = "direct" if draft else "direct, no draft"
    try:
        await _level(target, generate, 1, 2)  # warm-up
        stats = getattr(adapter, "speculative_stats", dict)()
        levels = [await _level(target, generate, c, requests) for c in ((1, 8) if draft else (1,))]
        after = getattr(adapter, "speculative_stats", dict)()
        proposed = after.get("proposed", 0) - stats.get("proposed", 0)
        accepted = after.get("accepted", 0) - stats.get("accepted", 0)
        return levels, accepted / proposed if proposed else None
    finally:
        await adapter.unload()


async def _served(grpc_url: str, http_url: str, max_tokens: int, requests: int) -> list[Level]:
    import grpc
    import httpx
    import orjson

    from aisf.llm.v1 import llm_pb2 as pb
    from aisf.llm.v1 import llm_pb2_grpc as pb_grpc

    params = pb.SamplingParams(max_tokens=max_tokens, temperature=0.0)
    message = pb.ChatMessage(role=pb.ROLE_USER, content=PROMPT)
    request = pb.ChatCompletionRequest(
        model=MODEL, messages=[message], params=params, cache_mode=pb.CACHE_MODE_BYPASS
    )
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with grpc.aio.insecure_channel(grpc_url) as channel, httpx.AsyncClient(timeout=120) as http:
        stub = pb_grpc.LlmServiceStub(channel)

        async def over_grpc() -> AsyncIterator[str | int]:
            async for reply in stub.ChatCompletion(request, timeout=120):
                if reply.choice.text:
                    yield reply.choice.text
                if reply.HasField("usage"):
                    yield reply.usage.completion_tokens

        async def over_rest() -> AsyncIterator[str | int]:
            url = f"http://{http_url}/v1/chat/completions"
            async with http.stream("POST", url, json=body, headers={"X-Aisf-Cache": "bypass"}) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: {"):
                        event = orjson.loads(line[6:])
                        choices = event["choices"]
                        if choices and choices[0]["delta"].get("content"):
                            yield choices[0]["delta"]["content"]
                        if event.get("usage"):
                            yield int(event["usage"]["completion_tokens"])

        def constrained(**fields: Any) -> Generate:
            asked = pb.ChatCompletionRequest()
            asked.CopyFrom(request)
            for name, value in fields.items():
                if name == "response_format":
                    asked.params.response_format.CopyFrom(value)
                elif name == "tools":
                    asked.tools.extend(value)
                else:
                    getattr(asked, name).CopyFrom(value)

            async def generate() -> AsyncIterator[str | int]:
                async for reply in stub.ChatCompletion(asked, timeout=120):
                    if reply.choice.text or reply.choice.tool_calls:
                        yield reply.choice.text
                    if reply.HasField("usage"):
                        yield reply.usage.completion_tokens

            return generate

        schema = pb.ResponseFormat(
            type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, json_schema=VERDICT, name="verdict"
        )
        tool = pb.Tool(name="get_weather", description="The weather in a city", parameters_json=WEATHER)
        required = pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED)
        levels = []
        for target, generate, levels_at in (
            ("aisf gRPC", over_grpc, (1, 8)),
            ("aisf REST", over_rest, (1, 8)),
            ("aisf gRPC, json_schema", constrained(response_format=schema), (1,)),
            ("aisf gRPC, tool call (required)", constrained(tools=[tool], tool_choice=required), (1,)),
        ):
            await _level(target, generate, 1, 2)  # warm-up
            levels += [await _level(target, generate, c, requests) for c in levels_at]
        return levels


async def _cache_hits(http_url: str, max_tokens: int, requests: int) -> tuple[float, float, float]:
    """(miss ms, hit p50 ms, hit p99 ms) of non-streaming REST requests for one greedy prompt."""
    import httpx

    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens}
    body["temperature"] = 0
    url = f"http://{http_url}/v1/chat/completions"
    tenant = f"bench-{time.time_ns()}"  # a Redis index outlives the run: a fresh scope misses first
    async with httpx.AsyncClient(timeout=120) as http:

        async def timed() -> tuple[float, bool]:
            started = time.perf_counter()
            response = await http.post(url, json=body, headers={"X-Aisf-Tenant": tenant})
            response.raise_for_status()
            return (time.perf_counter() - started) * 1000, response.headers.get("x-aisf-cache") == "hit"

        miss, hit = await timed()
        assert not hit, "the cache was primed before the benchmark"
        latencies = []
        for _ in range(requests):
            elapsed, hit = await timed()
            assert hit, "a repeated greedy prompt missed the semantic cache"
            latencies.append(elapsed)
    p50, p99 = np.percentile(latencies, [50, 99])
    return miss, float(p50), float(p99)


def _overheads(levels: Sequence[Level]) -> str:
    """Per-token time aisf adds at c=1, and TTFT at c=8 against the engine's (the issue's goals)."""
    at = {(level.target, level.concurrency): level for level in levels}
    direct = at[("direct", 1)]
    lines = []
    for target in ("aisf gRPC", "aisf REST"):
        added = 1000 / at[(target, 1)].tokens_per_s - 1000 / direct.tokens_per_s
        verdict = "met" if added <= 0.1 else "**missed**"
        lines.append(
            f"- {target}, c=1: {added:+.3f} ms per token over the engine alone (goal ≤ 0.1 ms: {verdict})"
        )
    rest, engine = at[("aisf REST", 8)].ttft_p99_ms, at[("direct", 8)].ttft_p99_ms
    verdict = "met" if rest <= engine * 1.1 else "**missed**"
    lines.append(
        f"- TTFT p99 at c=8, REST {rest:.1f} ms against the engine's own {engine:.1f} ms "
        f"(goal ≤ +10 %: {verdict})"
    )
    return "\n".join(lines)


def _table(levels: Sequence[Level]) -> str:
    rows = [
        "| target | concurrency | requests | TTFT p50 (ms) | TTFT p99 (ms) | tokens/s | chunk gap p99 (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    rows += [
        f"| {x.target} | {x.concurrency} | {x.requests} | {x.ttft_p50_ms:.1f} | {x.ttft_p99_ms:.1f} "
        f"| {x.tokens_per_s:,.0f} | {x.gap_p99_ms:.1f} |"
        for x in levels
    ]
    return "\n".join(rows)


def _document(
    levels: Sequence[Level],
    caches: dict[str, tuple[float, float, float]],
    acceptance: float | None,
    load: str,
    args: argparse.Namespace,
) -> str:
    command = command_line()
    cores, cpu = machine()
    software = ", ".join(
        f"{name} {version(name)}" for name in ("llama-cpp-python", "grpcio", "onnxruntime", "usearch")
    )
    return f"""{HEADING}

Chat streaming on the sample `llm-demo` (a tiny random-weight llama GGUF, 2 layers, speculative decoding
with its 1-layer draft, one llama.cpp context, `n_threads: 1`), {args.max_tokens} tokens per request. Written
by `bench/llm_bench.py`.

- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC
- Machine: {cores} CPUs, {cpu}
- Software: Python {platform.python_version()}, {software}
- Command: `.venv/bin/python {command}`
- Load: this script, asyncio; {args.requests} requests per level after a warm-up. Server and client share
  the same cores.

{_table(levels)}

TTFT is from sending the request to the first chunk with text; tokens/s is every generated token of the
level (the generation's own count: a chunk may carry several tokens when the client reads slower than the
engine writes) over its wall time; a chunk gap is the time between two chunks of one stream as the client
sees them.

{_overheads(levels)}

The engine runs one generation at a time (`instance_count: 1`), so at concurrency 8 requests queue for it:
TTFT grows with the queue while throughput stays the engine's. `aisf serve --role all` also runs the
embedded Temporal dev server and the job worker on the same 2 cores; load average over the run:
{load}.

Speculative decoding: `direct` runs with the draft model, `direct, no draft` the same target without it;
the draft's tokens accepted by the target over the `direct` levels: {_rate(acceptance)}.

Structured output and tool calls (gRPC, c=1): `json_schema` constrains decoding with a GBNF grammar of a
small schema, `tool call (required)` with the grammar of one tool's call plus the tool's description in
the prompt. Both answers end when the grammar does (a few dozen tokens, not {args.max_tokens}); a tool
call arrives as one piece when its choice ends, so its TTFT is the whole call.

Semantic cache (REST, non-streaming, the prompt embedded by the sample `minilm-embed`: all-MiniLM-L6-v2 on
ONNX Runtime; one tenant, so in process its scope is small and searched exactly; in Redis brute force):
first request (miss, generated) then {args.cache_requests} hits. Goal: hit p99 ≤ 10 ms, embedding included.

| index | miss (ms) | hit p50 (ms) | hit p99 (ms) |
|---|---:|---:|---:|
{_cache_rows(caches)}
"""


def _rate(acceptance: float | None) -> str:
    return "no draft proposals" if acceptance is None else f"{acceptance:.1%}"


def _cache_rows(caches: dict[str, tuple[float, float, float]]) -> str:
    return "\n".join(f"| {name} | {c[0]:.1f} | {c[1]:.1f} | {c[2]:.1f} |" for name, c in caches.items())


async def _main(args: argparse.Namespace) -> None:
    from aisf.adapters.onnx_embedding import build_sample
    from aisf.services.llm_samples import build_llm_demo
    from tests.support.processes import running_aisf

    loads = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        repository = Path(scratch) / "models"
        build_llm_demo(repository)
        build_sample(repository)
        levels, acceptance = await _direct(repository, args.max_tokens, args.requests)
        levels += (await _direct(repository, args.max_tokens, args.requests, draft=False))[0]
        env = {"AISF_SEMANTIC_CACHE_EMBEDDING_MODEL": "minilm-embed", "AISF_LOG_LEVEL": "WARNING"}
        caches = {}
        with running_aisf(repository, Path(scratch) / "data", env=env) as server:
            levels += await _served(server.grpc_url, server.http_url, args.max_tokens, args.requests)
            caches["in process"] = await _cache_hits(server.http_url, args.max_tokens, args.cache_requests)
        if args.redis_url:
            env["AISF_SEMANTIC_CACHE_REDIS_URL"] = args.redis_url
            with running_aisf(repository, Path(scratch) / "data-redis", env=env) as server:
                caches["Redis"] = await _cache_hits(server.http_url, args.max_tokens, args.cache_requests)
    load = f"{loads[0]:.1f} → {os.getloadavg()[0]:.1f} (1-minute, start → end)"
    section = _document(levels, caches, acceptance, load, args)
    print(section)
    if args.out:
        write_section(Path(args.out), "llm-bench", section)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=40, help="timed requests per level (default 40)")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per request (default 64)")
    parser.add_argument("--cache-requests", type=int, default=200, help="cache hits timed (default 200)")
    parser.add_argument(
        "--redis-url",
        default="",
        help="also time cache hits with this Redis as the index (e.g. redis://127.0.0.1:6379/15)",
    )
    parser.add_argument("--out", help="markdown file whose LLM section to write (e.g. docs/benchmarks.md)")
    asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
