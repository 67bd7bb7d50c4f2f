"""The Grafana dashboards and the dcgm-exporter setup in deploy/, read statically (no Grafana here):
well-formed panels on the aisf datasource, every variable used, and every metric name a query reads
one aisf exports, a recording rule records, or dcgm-exporter is configured to export."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.promql import (
    grafana_variables,
    label_values_selector,
    metric_names,
    substitute_grafana,
)

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
DATASOURCE_UID = "aisf-prometheus"

# What aisf exposes (prometheus_client: counters gain _total, histograms _bucket/_sum/_count).
_COUNTERS = {
    "aisf_inference_requests",
    "aisf_breaker_opened",
    "aisf_breaker_rejected",
    "aisf_shadow_requests",
    "aisf_fallback_answers",
    "aisf_llm_requests",
    "aisf_llm_semantic_cache_lookups",
    "aisf_llm_speculative",
    "aisf_llm_engine_tokens",
    "aisf_feature_lookups",
    "aisf_feature_rows",
    "aisf_http_requests",
}
_HISTOGRAMS = {
    "aisf_inference_duration_seconds",
    "aisf_inference_queue_seconds",
    "aisf_engine_batch_size",
    "aisf_llm_time_to_first_token_seconds",
    "aisf_llm_inter_token_latency_seconds",
    "aisf_llm_request_duration_seconds",
    "aisf_llm_prompt_tokens",
    "aisf_llm_completion_tokens",
    "aisf_llm_semantic_cache_lookup_seconds",
    "aisf_feature_lookup_seconds",
    "aisf_http_request_duration_seconds",
}
_GAUGES = {
    "aisf_queue_depth",
    "aisf_engine_in_flight",
    "aisf_breaker_state",
    "aisf_llm_generations_in_flight",
    "aisf_jobs",
    "aisf_job_backlog_age_seconds",
    "aisf_temporal_backlog",
    "aisf_db_pool_checked_out",
    "aisf_db_pool_size",
    "aisf_model_info",
    "aisf_build_info",
}
AISF_METRICS = frozenset(
    {f"{name}_total" for name in _COUNTERS}
    | {f"{name}_{suffix}" for name in _HISTOGRAMS for suffix in ("bucket", "sum", "count")}
    | _GAUGES
)

# dcgm-exporter's shipped field lists: etc/default-counters.csv plus the profiling fields of
# etc/dcp-metrics-included.csv (github.com/NVIDIA/dcgm-exporter). A name outside them is a typo.
DCGM_DOCUMENTED = frozenset(
    {
        "DCGM_FI_DEV_SM_CLOCK",
        "DCGM_FI_DEV_MEM_CLOCK",
        "DCGM_FI_DEV_MEMORY_TEMP",
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_MEM_COPY_UTIL",
        "DCGM_FI_DEV_ENC_UTIL",
        "DCGM_FI_DEV_DEC_UTIL",
        "DCGM_FI_DEV_XID_ERRORS",
        "DCGM_FI_DEV_FB_FREE",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        "DCGM_FI_DEV_ROW_REMAP_FAILURE",
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        "DCGM_FI_PROF_SM_ACTIVE",
        "DCGM_FI_PROF_SM_OCCUPANCY",
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
        "DCGM_FI_PROF_DRAM_ACTIVE",
        "DCGM_FI_PROF_PIPE_FP64_ACTIVE",
        "DCGM_FI_PROF_PIPE_FP32_ACTIVE",
        "DCGM_FI_PROF_PIPE_FP16_ACTIVE",
        "DCGM_FI_PROF_PCIE_TX_BYTES",
        "DCGM_FI_PROF_PCIE_RX_BYTES",
    }
)
DCGM_REQUIRED = {
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_PROF_PCIE_TX_BYTES",
    "DCGM_FI_PROF_PCIE_RX_BYTES",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
    "DCGM_FI_PROF_SM_ACTIVE",
    "DCGM_FI_DEV_XID_ERRORS",
}


def recording_rules() -> set[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules" / "aisf.rules.yml").read_text())
    return {rule["record"] for group in rules["groups"] for rule in group["rules"] if "record" in rule}


def counters(text: str) -> list[list[str]]:
    """dcgm-exporter's counters format: `field, type, help` rows; `#` lines are comments."""
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [[cell.strip() for cell in row] for row in csv.reader(lines)]


def exported_dcgm_fields() -> set[str]:
    return {row[0] for row in counters((DEPLOY / "dcgm-exporter" / "counters.csv").read_text())}


def load(path: Path) -> dict[str, Any]:
    board = json.loads(path.read_text())
    assert isinstance(board, dict)
    return board


def targets(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [target for panel in board["panels"] for target in panel.get("targets", [])]


def variable_queries(board: dict[str, Any]) -> dict[str, str]:
    """Each template variable's query text (Grafana stores a string or {"query": ...})."""
    found: dict[str, str] = {}
    for variable in board["templating"]["list"]:
        query = variable.get("query", "")
        found[variable["name"]] = query["query"] if isinstance(query, dict) else str(query)
    return found


def dashboard_exprs(board: dict[str, Any]) -> list[str]:
    return [target["expr"] for target in targets(board)]


# --- the PromQL reader -----------------------------------------------------------------------------


def test_metric_names_skip_functions_labels_ranges_strings_and_keywords() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (model, le) (rate(aisf_x_bucket{model=~"$model", a="b{c}"}[5m])))'
        " / ignoring (outcome) group_left (model) sum without (pod) (aisf_y_total offset 1h)"
        ' > bool 0.5 and on (gpu) DCGM_FI_DEV_GPU_UTIL or label_replace(up, "dst", "$1", "src", "(.*)")'
    )
    assert metric_names(expr) == {"aisf_x_bucket", "aisf_y_total", "DCGM_FI_DEV_GPU_UTIL", "up"}


def test_metric_names_keep_recording_rule_names_and_skip_numbers_and_grafana_variables() -> None:
    assert metric_names("aisf:inference_errors:ratio_rate5m > 1e-3") == {"aisf:inference_errors:ratio_rate5m"}
    assert metric_names("rate(a[$__rate_interval:1m]) * $scale + 5m") == {"a"}
    assert metric_names("sum(rate(b[5m])) by (model)") == {"b"}
    assert metric_names("count(c == 2) or vector(0)") == {"c"}


def test_label_values_selector_is_the_series_part_of_a_variable_query() -> None:
    assert (
        label_values_selector('label_values(aisf_x{model=~"$model"}, version)') == 'aisf_x{model=~"$model"}'
    )
    assert label_values_selector("label_values(model)") is None
    assert label_values_selector("query_result(up)") is None


def test_grafana_variables_are_found_and_substituted() -> None:
    expr = 'rate(x{model=~"$model", version=~"${version}", gpu=~"[[gpu]]"}[$__rate_interval])'
    assert grafana_variables(expr) == {"model", "version", "gpu"}
    assert substitute_grafana(expr) == 'rate(x{model=~".+", version=~".+", gpu=~".+"}[1m])'


# --- dashboards -------------------------------------------------------------------------------------


def test_the_four_dashboards_exist_with_unique_uids() -> None:
    assert {path.name for path in DASHBOARDS} == {
        "serving-overview.json",
        "llm.json",
        "jobs.json",
        "gpu.json",
    }
    uids = [load(path)["uid"] for path in DASHBOARDS]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_panels_have_unique_ids_and_titles_and_query_the_aisf_datasource(path: Path) -> None:
    board = load(path)
    assert board["schemaVersion"] >= 36 and board["title"]
    panels = board["panels"]
    assert panels
    ids = [panel["id"] for panel in panels]
    titles = [panel["title"] for panel in panels]
    assert len(set(ids)) == len(ids), f"duplicate panel ids in {path.name}"
    assert len(set(titles)) == len(titles), f"duplicate panel titles in {path.name}"
    for panel in panels:
        assert panel["type"] in {"timeseries", "stat"}, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(set(refs)) == len(refs), panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_every_variable_is_defined_used_and_matched_as_a_regex(path: Path) -> None:
    board = load(path)
    queries = variable_queries(board)
    texts = dashboard_exprs(board) + list(queries.values())
    used = set().union(*(grafana_variables(text) for text in texts))
    assert set(queries) <= used, f"unused variables in {path.name}: {set(queries) - used}"
    assert used <= set(queries), f"undefined variables in {path.name}: {used - set(queries)}"
    for variable in board["templating"]["list"]:
        assert variable["datasource"]["uid"] == DATASOURCE_UID, variable["name"]
    # Multi-value and "All" send regexes: `label="$var"` would match nothing then.
    for text in texts:
        assert not re.search(r'(?<![=!])[=!]"[^"]*\$', text), f"{path.name}: match variables with =~: {text}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_every_metric_a_query_reads_is_known(path: Path) -> None:
    known = AISF_METRICS | recording_rules() | DCGM_DOCUMENTED
    board = load(path)
    selectors = [s for q in variable_queries(board).values() if (s := label_values_selector(q))]
    names = set().union(*(metric_names(text) for text in dashboard_exprs(board) + selectors))
    assert names, path.name
    assert names <= known, f"{path.name} reads unknown metrics: {sorted(names - known)}"


def test_the_dashboards_together_show_the_gpu_and_join_it_to_aisf_models() -> None:
    exprs = [expr for path in DASHBOARDS for expr in dashboard_exprs(load(path))]
    names = set().union(*(metric_names(expr) for expr in exprs))
    assert DCGM_REQUIRED <= names
    assert any(
        "aisf_model_info" in expr and "DCGM_FI_DEV_GPU_UTIL" in expr and "on (node, gpu)" in expr
        for expr in exprs
    )
    assert all("[5m]" not in expr for expr in exprs), "use $__rate_interval, not a fixed window"


def test_dcgm_fields_the_dashboards_and_rules_read_are_ones_the_exporter_is_configured_to_export() -> None:
    texts = [expr for path in DASHBOARDS for expr in dashboard_exprs(load(path))]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules" / "aisf.rules.yml").read_text())
    texts += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    read = {name for text in texts for name in metric_names(text) if name.startswith("DCGM_")}
    assert read and read <= exported_dcgm_fields(), f"not in counters.csv: {read - exported_dcgm_fields()}"


def test_grafana_provisioning_names_the_datasource_the_dashboards_use() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert [(d["uid"], d["type"], d["url"]) for d in datasources] == [
        (DATASOURCE_UID, "prometheus", "${PROMETHEUS_URL}")
    ]
    providers = yaml.safe_load((provisioning / "dashboards" / "aisf.yml").read_text())["providers"]
    assert [p["type"] for p in providers] == ["file"] and providers[0]["options"]["path"]
    compose = yaml.safe_load((DEPLOY / "grafana" / "docker-compose.yml").read_text())
    assert "PROMETHEUS_URL" in compose["services"]["grafana"]["environment"]


# --- dcgm-exporter ----------------------------------------------------------------------------------


def test_counters_csv_lists_the_required_fields_in_dcgm_exporters_format() -> None:
    rows = counters((DEPLOY / "dcgm-exporter" / "counters.csv").read_text())
    assert all(len(row) == 3 and row[1] in {"gauge", "counter"} and row[2] for row in rows), rows
    fields = [row[0] for row in rows]
    assert len(set(fields)) == len(fields)
    assert DCGM_REQUIRED <= set(fields) <= DCGM_DOCUMENTED


def test_the_daemonset_ships_counters_csv_and_is_scraped_on_9400() -> None:
    documents = list(yaml.safe_load_all((DEPLOY / "dcgm-exporter" / "daemonset.yaml").read_text()))
    by_kind = {document["kind"]: document for document in documents}
    assert {"ConfigMap", "DaemonSet", "Service"} <= set(by_kind)
    shipped = by_kind["ConfigMap"]["data"]["counters.csv"]
    assert shipped == (DEPLOY / "dcgm-exporter" / "counters.csv").read_text()
    assert {"DCGM_FI_PROF_PCIE_TX_BYTES", "DCGM_FI_PROF_PCIE_RX_BYTES"} <= {
        row[0] for row in counters(shipped)
    }
    pod = by_kind["DaemonSet"]["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9400"
    assert pod["spec"]["nodeSelector"]
    (container,) = pod["spec"]["containers"]
    assert container["args"] == ["-f", "/etc/dcgm-exporter/counters.csv"]
    assert {"name": "metrics", "containerPort": 9400} in container["ports"]
    # What prometheus-kubernetes.yml keeps: this pod label and the port name.
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "dcgm-exporter"


def test_the_compose_and_systemd_examples_use_the_counters_file() -> None:
    compose = yaml.safe_load((DEPLOY / "dcgm-exporter" / "docker-compose.yml").read_text())
    service = compose["services"]["dcgm-exporter"]
    assert service["command"] == ["-f", "/etc/dcgm-exporter/counters.csv"]
    assert "./counters.csv:/etc/dcgm-exporter/counters.csv:ro" in service["volumes"]
    unit = (DEPLOY / "dcgm-exporter" / "dcgm-exporter.service").read_text()
    assert re.search(r"^ExecStart=\S*dcgm-exporter -f /etc/dcgm-exporter/counters.csv", unit, re.M)
