import logging

import pytest

from aisf.services.common import call_context
from aisf.services.common.request_log import RequestLog, describe_parameters, describe_tensors
from aisf.services.common.tensors import Tensor


def _lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "aisf.requests"]


def test_only_serving_parameters_and_flags_keep_their_values() -> None:
    described = describe_parameters(
        {"priority": 3, "sequence_start": True, "user": "alice@example.com", "customer_id": 123, "score": 0.5}
    )
    assert described == {
        "priority": 3,
        "sequence_start": True,
        "user": "<str 17>",
        "customer_id": "<int>",
        "score": "<float>",
    }


def test_tensors_are_described_by_name_dtype_and_shape_without_their_values() -> None:
    tensor = Tensor("input__0", "FP32", [2, 4], [123.5] * 8)
    assert describe_tensors([tensor]) == [{"name": "input__0", "datatype": "FP32", "shape": [2, 4]}]


def test_a_line_carries_the_calls_context_outcome_and_duration(caplog: pytest.LogCaptureFixture) -> None:
    call_context.bind([("x-request-id", "r-9"), ("x-aisf-tenant", "acme")])
    with caplog.at_level(logging.INFO, logger="aisf.requests"):
        RequestLog().write("v2 request", "success", 1_500_000, {"model": "m"})
    (line,) = _lines(caplog)
    fields = line.__dict__
    assert (fields["model"], fields["outcome"], fields["duration_ms"], fields["lane"]) == (
        "m",
        "success",
        1.5,
        "realtime",
    )


def test_sampling_drops_fast_successes_but_never_failures_or_slow_requests(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sampled = RequestLog(sample=0.0, slow_ms=100)
    with caplog.at_level(logging.INFO, logger="aisf.requests"):
        for outcome, duration_ns in [("success", 1_000_000)] * 50 + [
            ("engine_unavailable", 1_000_000),
            ("success", 150_000_000),
        ]:
            if sampled.keeps(outcome, duration_ns):
                sampled.write("v2 request", outcome, duration_ns, {})
        sampled.write("llm request", "success", 1_000_000, {})  # off the hot path: always
    assert [(r.getMessage(), r.__dict__["outcome"], r.__dict__["duration_ms"]) for r in _lines(caplog)] == [
        ("v2 request", "engine_unavailable", 1.0),
        ("v2 request", "success", 150.0),
        ("llm request", "success", 1.0),
    ]


def test_a_partial_sample_keeps_about_that_share(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aisf.requests")
    sampled = RequestLog(sample=0.25)
    kept = sum(sampled.keeps("success", 1000) for _ in range(4000))
    assert 800 < kept < 1200
