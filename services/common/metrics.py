"""Prometheus metrics of the dataplane; label children are cached so the hot path stays cheap."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True, slots=True)
class EngineGauges:
    """One model version's live numbers, read at scrape time (nothing on the hot path)."""

    model: str
    version: str
    queue_depth: int
    in_flight: int
    breaker_state: int  # 0 closed, 1 half-open, 2 open
    breaker_opened: int
    breaker_rejected: int
    platform: str = ""
    device: str = "cpu"


@dataclass(frozen=True, slots=True)
class ShadowCounts:
    model: str
    shadow: str
    agreed: int
    disagreed: int
    errors: int
    shed: int


def physical_gpu(device: str, visible: str | None = None) -> str:
    """DCGM's `gpu` label for a "cuda:N" device: N counts the GPUs CUDA_VISIBLE_DEVICES lists, DCGM counts
    the machine's. "" off the GPU (and for a UUID list, which only the GPU's own UUID label matches)."""
    if not device.startswith("cuda:"):
        return ""
    index = device.removeprefix("cuda:")
    mask = os.environ.get("CUDA_VISIBLE_DEVICES", "") if visible is None else visible
    listed = [d.strip() for d in mask.split(",")]
    if listed != [""] and index.isdigit() and int(index) < len(listed):
        return listed[int(index)] if listed[int(index)].isdigit() else ""
    return index


class DataplaneCollector(Collector):
    """Queue depth (the autoscaling signal of REQ-SCALE-01), engine calls in flight, circuit breakers and
    shadow comparisons, as the dataplane holds them when Prometheus scrapes."""

    def __init__(
        self, engines: Callable[[], Iterable[EngineGauges]], shadows: Callable[[], Iterable[ShadowCounts]]
    ) -> None:
        self._engines = engines
        self._shadows = shadows

    def collect(self) -> Iterator[Metric]:
        labels = ["model", "version"]
        depth = GaugeMetricFamily("aisf_queue_depth", "Requests waiting for the engine", labels=labels)
        flight = GaugeMetricFamily("aisf_engine_in_flight", "Engine calls running", labels=labels)
        state = GaugeMetricFamily(
            "aisf_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open", labels=labels
        )
        opened = CounterMetricFamily("aisf_breaker_opened", "Times the circuit opened", labels=labels)
        rejected = CounterMetricFamily(
            "aisf_breaker_rejected", "Requests the open circuit kept from the engine", labels=labels
        )
        engines = list(self._engines())  # one reading for every family of this scrape
        for row in engines:
            key = [row.model, row.version]
            depth.add_metric(key, row.queue_depth)
            flight.add_metric(key, row.in_flight)
            state.add_metric(key, row.breaker_state)
            opened.add_metric(key, row.breaker_opened)
            rejected.add_metric(key, row.breaker_rejected)
        yield from (depth, flight, state, opened, rejected)
        info = GaugeMetricFamily(
            "aisf_model_info",
            "Served model versions, their engine and where it computes (gpu: DCGM's index, to join on)",
            labels=["model", "version", "engine", "device", "gpu"],
        )
        for row in engines:
            info.add_metric([row.model, row.version, row.platform, row.device, physical_gpu(row.device)], 1)
        yield info
        copies = CounterMetricFamily(
            "aisf_shadow_requests", "Shadow copies by outcome", labels=["model", "shadow", "outcome"]
        )
        for shadow in self._shadows():
            for outcome in ("agreed", "disagreed", "errors", "shed"):
                copies.add_metric([shadow.model, shadow.shadow, outcome], getattr(shadow, outcome))
        yield copies


class InferenceMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.fallbacks = Counter(
            "aisf_fallback_answers",
            "Requests answered by a fallback while the model's circuit was open",
            ["model", "version", "fallback"],
            registry=registry,
        )
        self.requests = Counter(
            "aisf_inference_requests",
            "Inference requests by outcome",
            ["model", "version", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "aisf_inference_duration_seconds",
            "End-to-end dataplane time of successful requests",
            ["model", "version"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue = Histogram(
            "aisf_inference_queue_seconds",
            "Time a request waited for an engine slot or batch",
            ["model", "version"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "aisf_engine_batch_size",
            "Requests' rows per engine execution they were part of",
            ["model", "version"],
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.pipeline_steps = Counter(
            "aisf_pipeline_steps",
            "Steps of pipeline requests by outcome (success, skipped by a condition, or the error reason)",
            ["model", "step", "outcome"],
            registry=registry,
        )
        self.pipeline_step_duration = Histogram(
            "aisf_pipeline_step_duration_seconds",
            "Time of a pipeline's successful steps (a model step's includes its queue and batch wait)",
            ["model", "step"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self._children = lru_cache(maxsize=4096)(self._labelled)
        self._step_children = lru_cache(maxsize=4096)(self._step_labelled)

    def _step_labelled(self, model: str, step: str, outcome: str) -> tuple[Counter, Histogram]:
        return self.pipeline_steps.labels(model, step, outcome), self.pipeline_step_duration.labels(
            model, step
        )

    def pipeline_step(self, model: str, step: str, elapsed_ns: int, outcome: str) -> None:
        count, duration = self._step_children(model, step, outcome)
        count.inc()
        if outcome == "success":
            duration.observe(elapsed_ns / 1e9)

    def _labelled(
        self, model: str, version: str, outcome: str
    ) -> tuple[Counter, Histogram, Histogram, Histogram]:
        return (
            self.requests.labels(model, version, outcome),
            self.duration.labels(model, version),
            self.queue.labels(model, version),
            self.batch_size.labels(model, version),
        )

    def success(self, model: str, version: str, duration_ns: int, queue_ns: int, batch_size: int) -> None:
        count, duration, queue, batch = self._children(model, version, "success")
        count.inc()
        duration.observe(duration_ns / 1e9)
        queue.observe(queue_ns / 1e9)
        batch.observe(batch_size)

    def failure(self, model: str, version: str, reason: str, duration_ns: int) -> None:
        self._children(model, version, reason)[0].inc()

    def fallback(self, model: str, version: str, fallback: str) -> None:
        self.fallbacks.labels(model, version, fallback).inc()


def register_build_info(registry: CollectorRegistry, version: str, role: str) -> None:
    Gauge(
        "aisf_build_info", "The aisf release and role of this process", ["version", "role"], registry=registry
    ).labels(version, role).set(1)


class DatabasePoolCollector(Collector):
    """The metadata database's connection pool as SQLAlchemy holds it at scrape time."""

    def __init__(self, pool: Any, dialect: str) -> None:
        self._pool = pool
        self._dialect = dialect

    def collect(self) -> Iterator[Metric]:
        size = GaugeMetricFamily("aisf_db_pool_size", "Connections the pool keeps", labels=["dialect"])
        out = GaugeMetricFamily(
            "aisf_db_pool_checked_out", "Connections in use now (overflow included)", labels=["dialect"]
        )
        reads = getattr(self._pool, "size", None), getattr(self._pool, "checkedout", None)
        if callable(reads[0]) and callable(reads[1]):
            size.add_metric([self._dialect], float(reads[0]()))
            out.add_metric([self._dialect], float(reads[1]()))
        yield from (size, out)
