"""Prometheus metrics of the dataplane; label children are cached so the hot path stays cheap."""

from __future__ import annotations

from functools import lru_cache

from prometheus_client import CollectorRegistry, Counter, Histogram

_LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class InferenceMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
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
        self._children = lru_cache(maxsize=4096)(self._labelled)

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
