"""Traces across processes: a REST edge (`--role gateway`) in front of a second aisf process (router, job
service and workers), both exporting OTLP/gRPC to a real trace receiver; W3C trace context crosses HTTP
headers, gRPC metadata and Temporal headers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests.support.otlp import OtlpCollector, ReceivedSpan, running_otlp_collector
from tests.support.processes import AisfProcess, running_aisf

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
ROW = {"name": "input__0", "datatype": "FP32", "shape": [1, 4], "data": [0.1, 0.2, 0.3, 0.4]}


@pytest.fixture(scope="module")
def collector() -> Iterator[OtlpCollector]:
    with running_otlp_collector() as running:
        yield running


def _traced(collector: OtlpCollector, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        "AISF_TRACING": "otlp",
        "AISF_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s, not the default 5 s
        **(extra or {}),
    }


@pytest.fixture(scope="module")
def backend(
    collector: OtlpCollector, sample_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AisfProcess]:
    with running_aisf(sample_repository, tmp_path_factory.mktemp("data"), env=_traced(collector)) as server:
        yield server


@pytest.fixture(scope="module")
def edge(
    collector: OtlpCollector,
    backend: AisfProcess,
    sample_repository: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AisfProcess]:
    env = _traced(collector, {"AISF_ROUTER_ADDRESS": backend.grpc_url, "AISF_JOB_ADDRESS": backend.grpc_url})
    with running_aisf(sample_repository, tmp_path_factory.mktemp("edge"), env=env, role="gateway") as server:
        yield server


def _one_trace(spans: list[ReceivedSpan], root_name: str, trace_id: str = "") -> list[ReceivedSpan]:
    roots = [s for s in spans if s.name == root_name and (not trace_id or s.trace_id == trace_id)]
    assert roots, f"no {root_name!r} span among {sorted({s.name for s in spans})}"
    return [s for s in spans if s.trace_id == roots[-1].trace_id]


def _child(trace: list[ReceivedSpan], parent: ReceivedSpan, name: str, service: str) -> ReceivedSpan:
    found = [s for s in trace if s.parent_id == parent.span_id and s.name == name]
    assert found, f"{parent.name!r} has no child {name!r}: {[(s.name, s.parent_id) for s in trace]}"
    assert found[0].service == service, (found[0].name, found[0].service)
    return found[0]


def _has(*names: str, trace_id: str = "") -> Callable[[list[ReceivedSpan]], bool]:
    """Every span of `names` arrived: each process exports its spans in its own batches, so the edge's
    root may come after the backend's last span."""
    return lambda spans: all(
        any(s.name == name and (not trace_id or s.trace_id == trace_id) for s in spans) for name in names
    )


def test_a_rest_inference_is_one_trace_from_the_callers_span_to_the_engine(
    edge: AisfProcess, collector: OtlpCollector
) -> None:
    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    reply = httpx.post(
        f"http://{edge.http_url}/v2/models/tabular-demo/infer",
        json={"inputs": [ROW]},
        headers={"traceparent": traceparent},
        timeout=30,
    )
    assert reply.status_code == 200
    spans = collector.wait_for(
        _has("engine tabular-demo", "POST /v2/models/{model}/infer", trace_id=CALLER_TRACE)
    )
    trace = _one_trace(spans, "POST /v2/models/{model}/infer", CALLER_TRACE)
    (root,) = [s for s in trace if s.name == "POST /v2/models/{model}/infer"]
    assert (root.service, root.parent_id) == ("aisf-gateway", CALLER_SPAN)
    assert root.attributes["http.route"] == "/v2/models/{model}/infer"
    assert root.attributes["http.response.status_code"] == 200
    call = _child(trace, root, "inference.GRPCInferenceService/ModelInfer", "aisf-gateway")
    served = _child(trace, call, "inference.GRPCInferenceService/ModelInfer", "aisf-all")
    engine = _child(trace, served, "engine tabular-demo", "aisf-all")
    assert engine.attributes["aisf.engine"] == "xgboost" and engine.attributes["aisf.device"] == "cpu"


def test_a_rejected_request_marks_its_spans_with_the_reason(
    edge: AisfProcess, collector: OtlpCollector
) -> None:
    bad = {**ROW, "shape": [1, 3], "data": [1, 2, 3]}
    reply = httpx.post(
        f"http://{edge.http_url}/v2/models/tabular-demo/infer", json={"inputs": [bad]}, timeout=30
    )
    assert reply.status_code == 400
    spans = collector.wait_for(
        lambda found: any(s.attributes.get("aisf.reason") == "invalid_input" for s in found)
    )
    served = [s for s in spans if s.attributes.get("aisf.reason") == "invalid_input"]
    assert served and all(s.error for s in served)
    assert {s.service for s in served} >= {"aisf-all"}


def test_a_job_is_one_trace_through_temporal_to_the_router(
    edge: AisfProcess, collector: OtlpCollector
) -> None:
    reply = httpx.post(
        f"http://{edge.http_url}/v1/jobs",
        json={"model": "tabular-demo", "requests": [{"inputs": [ROW]}]},
        timeout=30,
    )
    assert reply.status_code == 202, reply.text
    spans = collector.wait_for(_has("RunActivity:aisf.finish_job", "POST /v1/jobs"), timeout_s=60)
    trace = _one_trace(spans, "POST /v1/jobs")
    (root,) = [s for s in trace if s.name == "POST /v1/jobs"]
    submit = _child(trace, root, "aisf.job.v1.JobService/SubmitJob", "aisf-gateway")
    accepted = _child(trace, submit, "aisf.job.v1.JobService/SubmitJob", "aisf-all")
    started = _child(trace, accepted, "StartWorkflow:aisf.BatchInference", "aisf-all")
    activity = _child(trace, started, "StartActivity:aisf.infer_items", "aisf-all")
    ran = _child(trace, activity, "RunActivity:aisf.infer_items", "aisf-all")
    call = _child(trace, ran, "inference.GRPCInferenceService/ModelInfer", "aisf-all")
    served = _child(trace, call, "inference.GRPCInferenceService/ModelInfer", "aisf-all")
    _child(trace, served, "engine tabular-demo", "aisf-all")


def test_a_streamed_chat_is_one_trace_down_to_the_generation(
    edge: AisfProcess, collector: OtlpCollector
) -> None:
    with OpenAI(base_url=f"http://{edge.http_url}/v1", api_key="unused") as client:
        stream = client.chat.completions.create(
            model="llm-demo", messages=[{"role": "user", "content": "hello"}], max_tokens=4, stream=True
        )
        assert sum(1 for _ in stream) > 1
    spans = collector.wait_for(_has("generate llm-demo", "POST /v1/chat/completions"))
    trace = _one_trace(spans, "POST /v1/chat/completions")
    (root,) = [s for s in trace if s.name == "POST /v1/chat/completions"]
    call = _child(trace, root, "aisf.llm.v1.LlmService/ChatCompletion", "aisf-gateway")
    served = _child(trace, call, "aisf.llm.v1.LlmService/ChatCompletion", "aisf-all")
    generation = _child(trace, served, "generate llm-demo", "aisf-all")
    assert generation.attributes["aisf.engine"] == "llama_cpp"
