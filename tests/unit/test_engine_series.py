"""An in-process engine's own Prometheus series (vLLM keeps its speculative-decoding acceptance there)
reach aisf's /metrics, which serves aisf's own registry, not the process's default one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest

from aisf.services.common.llm_metrics import LlmMetrics


@pytest.fixture
def engine_counter() -> Iterator[Counter]:
    counter = Counter(
        "vllm:spec_decode_num_accepted_tokens", "as vLLM names it", ["model_name"], registry=REGISTRY
    )
    counter.labels("llm").inc(42)
    yield counter
    REGISTRY.unregister(counter)


def test_the_engines_own_series_are_served_with_aisfs(engine_counter: Counter) -> None:
    registry = CollectorRegistry()
    LlmMetrics(registry, engines=lambda: [])
    text = generate_latest(registry).decode()
    assert 'vllm:spec_decode_num_accepted_tokens_total{model_name="llm"} 42.0' in text
    assert "python_gc_objects_collected_total" not in text  # only engine series are forwarded
