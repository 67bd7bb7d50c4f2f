"""Per-request accounting of the LLM lane (REQ-OPS-02): Prometheus series and one log line each."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from time import perf_counter_ns

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from aisf.services.common.llm_types import SamplingParams, Usage
from aisf.services.common.request_log import RequestLog

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536)


@dataclass(frozen=True, slots=True)
class EngineCounters:
    """Counters an engine keeps itself (absent ones are None): speculative decoding and tokens sampled."""

    model: str
    version: str
    speculative: dict[str, int] | None = None
    tokens_generated: int | None = None


EngineSource = Callable[[], Iterable[EngineCounters]]


class _EngineCollector(Collector):
    """Reads the engines' own counters at scrape time, so the hot path pays nothing for them."""

    def __init__(self, source: EngineSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        speculative = CounterMetricFamily(
            "aisf_llm_speculative",
            "Speculative decoding counters reported by the engine (draft tokens proposed, accepted)",
            labels=["model", "version", "stat"],
        )
        tokens = CounterMetricFamily(
            "aisf_llm_engine_tokens",
            "Tokens the engine sampled, counted by the engine itself (cancelled generations included)",
            labels=["model", "version"],
        )
        for engine in self._source():
            for stat, value in sorted((engine.speculative or {}).items()):
                speculative.add_metric([engine.model, engine.version, stat], value)
            if engine.tokens_generated is not None:
                tokens.add_metric([engine.model, engine.version], engine.tokens_generated)
        yield speculative
        yield tokens


# Engines that keep their own Prometheus series in the process's default registry (vLLM: speculative
# acceptance, KV-cache use, queue times); aisf serves its own registry, so it forwards theirs.
_ENGINE_PREFIXES = ("vllm:", "sglang:")


class _InProcessEngineSeries(Collector):
    """The in-process engines' own series from prometheus_client's default registry, read at scrape."""

    def __init__(self, source: CollectorRegistry = REGISTRY) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        for family in self._source.collect():
            if family.name.startswith(_ENGINE_PREFIXES):
                yield family


class LlmMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        engines: EngineSource | None = None,
        request_log: RequestLog | None = None,
    ) -> None:
        self.request_log = request_log or RequestLog()
        labels = ["model", "version"]
        self.requests = Counter(
            "aisf_llm_requests",
            "LLM requests by kind and outcome",
            [*labels, "kind", "outcome"],
            registry=registry,
        )
        self.ttft = Histogram(
            "aisf_llm_time_to_first_token_seconds",
            "From request accepted to the engine's first token",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.itl = Histogram(
            "aisf_llm_inter_token_latency_seconds",
            "Time between consecutive streamed chunks of one request",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.duration = Histogram(
            "aisf_llm_request_duration_seconds",
            "From request accepted to its last chunk",
            labels,
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.prompt_tokens = Histogram(
            "aisf_llm_prompt_tokens",
            "Prompt tokens per request",
            labels,
            buckets=_TOKEN_BUCKETS,
            registry=registry,
        )
        self.completion_tokens = Histogram(
            "aisf_llm_completion_tokens",
            "Generated tokens per request (every choice)",
            labels,
            buckets=_TOKEN_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "aisf_llm_generations_in_flight", "Engine generations running now", labels, registry=registry
        )
        self.cache_writes_skipped = Counter(
            "aisf_llm_semantic_cache_writes_skipped",
            "Answers the semantic cache did not keep: personal_data, pii_unavailable, backlog",
            ["reason"],
            registry=registry,
        )
        self.cache_lookups = Counter(
            "aisf_llm_semantic_cache_lookups",
            "Semantic cache decisions: hit, miss, bypass, uncacheable, unavailable",
            ["model", "result"],
            registry=registry,
        )
        self.cache_seconds = Histogram(
            "aisf_llm_semantic_cache_lookup_seconds",
            "Embedding the prompt plus searching the index",
            ["result"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        if engines is not None:
            registry.register(_EngineCollector(engines))
            if registry is not REGISTRY:
                registry.register(_InProcessEngineSeries())
        self._children = lru_cache(maxsize=4096)(self._labelled)

    def _labelled(self, model: str, version: str) -> tuple[Histogram, Histogram, Gauge]:
        return (
            self.ttft.labels(model, version),
            self.itl.labels(model, version),
            self.in_flight.labels(model, version),
        )

    def trace(self, model: str, version: str, kind: str, params: SamplingParams | None = None) -> Trace:
        return Trace(self, model, version, kind, params)

    def cache_write_skipped(self, reason: str) -> None:
        self.cache_writes_skipped.labels(reason).inc()

    def cache_result(self, model: str, result: str, elapsed_ns: int | None = None) -> None:
        """`elapsed_ns` of the lookup, None when the cache was not consulted."""
        self.cache_lookups.labels(model, result).inc()
        if elapsed_ns is not None:
            self.cache_seconds.labels(result).observe(elapsed_ns / 1e9)


class Trace:
    """One request's timings: observe chunks as they stream, then `finish` once with the outcome."""

    def __init__(
        self, metrics: LlmMetrics, model: str, version: str, kind: str, params: SamplingParams | None
    ) -> None:
        self._metrics = metrics
        self._model = model
        self._version = version
        self._kind = kind
        self._params = params
        self.started_ns = perf_counter_ns()
        self._first_ns = 0
        self._last_ns = 0
        self._chunks = 0
        self._after_first = 0  # pieces (tokens) that came after the first chunk
        self.cache = "off"

    def engine_started(self) -> None:
        self._metrics._children(self._model, self._version)[2].inc()

    def engine_stopped(self) -> None:
        self._metrics._children(self._model, self._version)[2].dec()

    def chunk(self, pieces: int = 1) -> None:
        """A streamed chunk of `pieces` tokens (merged when the reader was slower than the engine): the
        inter-token latency is per token, so a merged chunk's gap counts once for each of its tokens.
        Latencies describe the engine, so a cache replay records none."""
        now = perf_counter_ns()
        if self.cache != "hit":
            ttft, itl, _ = self._metrics._children(self._model, self._version)
            if self._chunks == 0:
                ttft.observe((now - self.started_ns) / 1e9)
            else:
                gap = (now - self._last_ns) / 1e9 / pieces
                for _ in range(pieces):
                    itl.observe(gap)
        if self._chunks == 0:
            self._first_ns = now
        else:
            self._after_first += pieces
        self._last_ns = now
        self._chunks += 1

    def finish(self, outcome: str, usage: Usage | None) -> None:
        elapsed_ns = perf_counter_ns() - self.started_ns
        metrics, labels = self._metrics, (self._model, self._version)
        metrics.requests.labels(*labels, self._kind, outcome).inc()
        if outcome == "success":
            metrics.duration.labels(*labels).observe(elapsed_ns / 1e9)
        if usage is not None:
            metrics.prompt_tokens.labels(*labels).observe(usage.prompt_tokens)
            metrics.completion_tokens.labels(*labels).observe(usage.completion_tokens)
        self._log(outcome, usage, elapsed_ns)

    def _log(self, outcome: str, usage: Usage | None, elapsed_ns: int) -> None:
        """The request's one line: parameters, token counts and timings, never the prompt or the output."""
        fields: dict[str, object] = {
            "model": self._model,
            "version": self._version,
            "kind": self._kind,
            "cache": self.cache,
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
            "ttft_ms": round((self._first_ns - self.started_ns) / 1e6, 3) if self._chunks else None,
            "itl_mean_ms": (
                round((self._last_ns - self._first_ns) / self._after_first / 1e6, 3)
                if self._after_first
                else None
            ),
        }
        if self._params is not None:
            p = self._params
            fields["params"] = {
                "max_tokens": p.max_tokens,
                "temperature": p.temperature,
                "top_p": p.top_p,
                "n": p.n,
                "seed": p.seed,
                "stop_count": len(p.stop),
            }
        self._metrics.request_log.write("llm request", outcome, elapsed_ns, fields)
