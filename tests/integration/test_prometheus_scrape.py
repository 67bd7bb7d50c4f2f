"""A real Prometheus scraping a real `aisf serve --role all` under load: the series the dashboards and
alerts read arrive with the expected values, the recording rules evaluate, and every dashboard query
parses and names only series Prometheus really holds."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml
from openai import OpenAI

from aisf.adapters.onnx_embedding import build_sample
from aisf.services.feature_samples import build_recsys_demo
from aisf.services.samples import build_samples
from tests.support.features import materialized_repo
from tests.support.processes import AisfProcess, running_aisf
from tests.support.prometheus import Prometheus, PrometheusError, running_prometheus
from tests.support.promql import label_values_selector, metric_names, substitute_grafana
from tests.support.python_models import flaky_sum

pytestmark = pytest.mark.integration

DASHBOARDS = sorted(
    (Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards").glob("*.json")
)
ROW = [1.0, 2.0, 3.0, 4.0]
# Opens during the second round of load, so the failures show in its rates.
BREAKER_FAILURES = 10
FIRST_ROUND = 3
# Distinct questions: a semantic-cache hit replays without engine timings.
QUESTIONS = ("What is the capital of France?", "Describe how rainbows form after rain.")
# Series being added to aisf alongside these dashboards; listed so a failure names them.
NEWER_SERIES = [
    "aisf_jobs",
    "aisf_job_backlog_age_seconds",
    "aisf_temporal_backlog",
    "aisf_db_pool_checked_out",
    "aisf_db_pool_size",
    "aisf_http_requests_total",
    "aisf_http_request_duration_seconds_bucket",
    "aisf_model_info",
    "aisf_build_info",
]


@dataclass(frozen=True)
class Load:
    successes: int  # of tabular-demo
    invalid: int  # tabular-demo requests naming a wrong input
    llm: int = 1  # streamed chats on llm-demo


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("scrape-models")
    build_samples(repository)
    build_sample(repository)  # the semantic cache's embedder
    build_recsys_demo(repository)
    # Fails from the start (FAIL flag); its breaker opens and tabular-demo answers as its fallback.
    breaker = {"failures": BREAKER_FAILURES, "window_s": 600, "cooldown_s": 600}
    flaky = flaky_sum(repository, "flaky", circuit_breaker=breaker, fallback={"model": "tabular-demo"})
    (flaky / "1" / "FAIL").touch()
    # tabular-demo under another name, every request copied to tabular-demo as its shadow.
    shadowed = repository / "tabular-shadowed"
    (shadowed / "1").mkdir(parents=True)
    demo = repository / "tabular-demo"
    (shadowed / "1" / "model.json").write_bytes((demo / "1" / "model.json").read_bytes())
    config = yaml.safe_load((demo / "config.yaml").read_text())
    config["shadow"] = {"model": "tabular-demo", "sample": 1.0}
    (shadowed / "config.yaml").write_text(yaml.safe_dump(config))
    return repository


@pytest.fixture(scope="module")
def server(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AisfProcess]:
    env = {
        "AISF_FEATURE_REPO": str(materialized_repo(tmp_path_factory.mktemp("features"))),
        "AISF_SEMANTIC_CACHE_EMBEDDING_MODEL": "minilm-embed",
        "AISF_SEMANTIC_CACHE_REDIS_URL": "redis://127.0.0.1:6379/0",
    }
    with running_aisf(models, tmp_path_factory.mktemp("data"), env=env) as process:
        yield process


@pytest.fixture(scope="module")
def prometheus(server: AisfProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    with running_prometheus(tmp_path_factory.mktemp("prometheus"), [f"127.0.0.1:{server.metrics_port}"]) as p:
        yield p


def _v2(values: list[float], name: str = "input__0") -> dict[str, object]:
    return {"inputs": [{"name": name, "shape": [1, len(values)], "datatype": "FP32", "data": values}]}


def _drive(server: AisfProcess, rounds: int, question: str, tenant: str) -> Load:
    """`rounds` requests of each kind on every lane, and one streamed chat asking `question`."""
    successes = invalid = 0
    with httpx.Client(base_url=f"http://{server.http_url}", timeout=60) as rest:
        for _ in range(rounds):
            assert rest.post("/v2/models/tabular-demo/infer", json=_v2(ROW)).status_code == 200
            assert rest.post("/v2/models/tabular-demo/infer", json=_v2(ROW, "wrong")).status_code == 400
            assert rest.post("/v2/models/tabular-shadowed/infer", json=_v2(ROW)).status_code == 200
            # The first failures open the circuit; later calls are answered by the fallback.
            rest.post("/v2/models/flaky/infer", json=_v2(ROW))
            ranked = rest.post(
                "/v2/models/recsys-demo/infer",
                json={
                    "inputs": [
                        {"name": "user_id", "shape": [1], "datatype": "INT64", "data": [5]},
                        {"name": "item_id", "shape": [3], "datatype": "INT64", "data": [1, 2, 3]},
                    ]
                },
            )
            assert ranked.status_code == 200, ranked.text
            successes += 1
            invalid += 1
    with grpcclient.InferenceServerClient(server.grpc_url) as triton:
        for _ in range(rounds):
            tensor = grpcclient.InferInput("input__0", [1, 4], "FP32")
            tensor.set_data_from_numpy(np.asarray([ROW], dtype=np.float32))
            triton.infer("tabular-demo", [tensor])
            successes += 1
    with OpenAI(base_url=f"http://{server.http_url}/v1", api_key="unused", max_retries=0) as llm:
        stream = llm.chat.completions.create(
            model="llm-demo",
            messages=[{"role": "user", "content": question}],
            max_tokens=16,
            temperature=0,  # deterministic: the semantic cache is consulted (and misses)
            stream=True,
            extra_headers={"X-Aisf-Tenant": tenant},  # entries of earlier runs stay out of reach
        )
        with stream:
            assert "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    return Load(successes, invalid)


def _scraped(prometheus: Prometheus, load: Load) -> None:
    prometheus.wait_for(
        f'aisf_inference_requests_total{{model="tabular-demo", outcome="success"}} >= {load.successes}', 60
    )
    prometheus.wait_for(f'aisf_llm_requests_total{{model="llm-demo", outcome="success"}} >= {load.llm}', 30)


@pytest.fixture(scope="module")
def load(server: AisfProcess, prometheus: Prometheus) -> Load:
    """Traffic on every lane in two rounds, each waited for until scraped. Prometheus counts no
    increase for a series first seen already incremented, so the first round only creates the series
    and the second gives every rate something to see."""
    tenant = f"scrape-{uuid.uuid4().hex[:8]}"
    first = _drive(server, FIRST_ROUND, QUESTIONS[0], tenant)
    _scraped(prometheus, first)
    second = _drive(server, 20, QUESTIONS[1], tenant)
    total = Load(first.successes + second.successes, first.invalid + second.invalid, 2)
    _scraped(prometheus, total)
    # Recording rules run after the scrape: wait for them to see the second round.
    prometheus.wait_for('aisf:inference_requests:rate5m{model="tabular-demo"} > 0', timeout=30)
    prometheus.wait_for('aisf:inference_errors:ratio_rate5m{model="flaky"} > 0', timeout=30)
    prometheus.wait_for('aisf:llm_requests:rate5m{model="llm-demo"} > 0', timeout=30)
    return total


def _value(prometheus: Prometheus, expr: str) -> float:
    result = prometheus.query(expr)
    assert len(result) == 1, f"{expr}: {result}"
    return float(result[0]["value"][1])


def test_inference_series_arrive_with_the_counts_sent(prometheus: Prometheus, load: Load) -> None:
    success = 'aisf_inference_requests_total{model="tabular-demo", version="1", outcome="success"}'
    assert _value(prometheus, success) >= load.successes
    invalid = 'aisf_inference_requests_total{model="tabular-demo", version="1", outcome="invalid_input"}'
    assert _value(prometheus, invalid) == load.invalid
    buckets = 'rate(aisf_inference_duration_seconds_bucket{model="tabular-demo"}[1m])'
    p99 = f"histogram_quantile(0.99, sum by (le) ({buckets}))"
    latency = _value(prometheus, p99)
    assert math.isfinite(latency) and 0 < latency < 10
    assert _value(prometheus, 'aisf_queue_depth{model="tabular-demo", version="1"}') >= 0
    assert _value(prometheus, 'aisf_breaker_state{model="tabular-demo", version="1"}') == 0


def test_the_open_circuit_its_fallback_and_its_alert_are_visible(prometheus: Prometheus, load: Load) -> None:
    assert _value(prometheus, 'aisf_breaker_state{model="flaky"}') == 2
    assert _value(prometheus, 'aisf_breaker_opened_total{model="flaky"}') == 1
    assert _value(prometheus, 'sum(aisf_fallback_answers_total{model="flaky"})') >= 1
    # `for: 1m` keeps it pending this early; what matters is that the rule matched.
    alert = prometheus.wait_for('ALERTS{alertname="AisfCircuitOpen", model="flaky"}', timeout=15)
    assert alert[0]["metric"]["alertstate"] in {"pending", "firing"}
    assert alert[0]["metric"]["severity"] == "critical"


def test_llm_feature_and_shadow_series_arrive(prometheus: Prometheus, load: Load) -> None:
    assert _value(prometheus, 'aisf_llm_time_to_first_token_seconds_count{model="llm-demo"}') >= 1
    assert _value(prometheus, 'sum(aisf_llm_completion_tokens_sum{model="llm-demo"})') == 16 * load.llm
    misses = 'aisf_llm_semantic_cache_lookups_total{model="llm-demo", result="miss"}'
    assert _value(prometheus, misses) == load.llm
    assert _value(prometheus, "sum(aisf_feature_lookups_total)") >= 1
    prometheus.wait_for('sum(aisf_shadow_requests_total{model="tabular-shadowed", outcome="agreed"}) > 0', 30)


def test_recording_rules_evaluate_on_the_scraped_series(prometheus: Prometheus, load: Load) -> None:
    assert _value(prometheus, 'aisf:inference_requests:rate5m{model="tabular-demo", version="1"}') > 0
    # invalid_input is the caller's mistake: no server error ratio for tabular-demo.
    assert _value(prometheus, 'aisf:inference_errors:ratio_rate5m{model="tabular-demo"}') == 0
    assert _value(prometheus, 'aisf:inference_errors:ratio_rate5m{model="flaky"}') > 0
    assert 0 < _value(prometheus, 'aisf:inference_latency_seconds:p99_5m{model="tabular-demo"}') < 10
    ttft = prometheus.wait_for('aisf:llm_ttft_seconds:p99_5m{model="llm-demo"}', timeout=15)
    assert math.isfinite(float(ttft[0]["value"][1]))


@pytest.mark.parametrize("name", NEWER_SERIES)
def test_the_series_jobs_http_and_placement_panels_read_are_exported(
    prometheus: Prometheus, load: Load, name: str
) -> None:
    assert name in prometheus.series_names()


def _dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel or variable, PromQL) of every query the dashboards run."""
    found: list[tuple[str, str, str]] = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            found += [(path.name, panel["title"], target["expr"]) for target in panel["targets"]]
        for variable in board["templating"]["list"]:
            query = variable["query"]
            selector = label_values_selector(query["query"] if isinstance(query, dict) else query)
            if selector:
                found.append((path.name, f"${variable['name']}", selector))
    return found


def test_every_dashboard_query_runs_and_reads_only_live_series(prometheus: Prometheus, load: Load) -> None:
    live = prometheus.series_names()
    problems: list[str] = []
    for dashboard, where, expr in _dashboard_queries():
        runnable = substitute_grafana(expr)
        try:
            prometheus.query(runnable)
        except PrometheusError as error:
            problems.append(f"{dashboard} / {where}: {error}\n    {runnable}")
            continue
        # No GPU here, so no dcgm-exporter: DCGM_* names (and the GPU rule built on them) are exempt;
        # tests/unit/test_dashboards.py checks them against counters.csv instead.
        names = {
            n
            for n in metric_names(expr)
            if n.startswith(("aisf_", "aisf:")) and n != "aisf:gpu_memory_used:ratio"
        }
        if missing := sorted(names - live):
            problems.append(f"{dashboard} / {where}: no series {missing}")
    assert not problems, "\n".join(problems)
