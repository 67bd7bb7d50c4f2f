"""Prometheus metrics of the feature lane: lookups by online store and outcome, rows read, latency."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_BUCKETS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class FeatureMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._lookups = Counter(
            "aisf_feature_lookups", "Online-feature lookups", ["store", "outcome"], registry=registry
        )
        self._rows = Counter("aisf_feature_rows", "Entity rows looked up", ["store"], registry=registry)
        self._seconds = Histogram(
            "aisf_feature_lookup_seconds",
            "Online-feature lookup latency",
            ["store"],
            buckets=_BUCKETS,
            registry=registry,
        )

    def answered(self, store: str, rows: int, seconds: float) -> None:
        self._lookups.labels(store, "ok").inc()
        self._rows.labels(store).inc(rows)
        self._seconds.labels(store).observe(seconds)

    def failed(self, store: str, reason: str, seconds: float) -> None:
        self._lookups.labels(store, reason).inc()
        self._seconds.labels(store).observe(seconds)
