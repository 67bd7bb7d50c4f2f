"""deploy/prometheus/ as Prometheus's own promtool reads it: the configs load, the rules parse, and
the rules' unit tests (synthetic series: each alert fires when it must and stays silent on healthy
series) pass."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    # A failure, not a skip: without promtool nothing here is checked at all.
    assert promtool is not None, (
        "promtool not found: .ci/bootstrap installs Debian's `prometheus` package, which ships it"
    )
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120, cwd=PROMETHEUS)


def _assert_succeeds(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{' '.join(result.args)} failed:\n{result.stdout}\n{result.stderr}"


def test_prometheus_config_is_valid_and_finds_its_rule_files() -> None:
    result = _promtool("check", "config", "prometheus.yml")
    _assert_succeeds(result)
    assert "1 rule files found" in result.stdout + result.stderr


def test_rule_files_parse() -> None:
    files = sorted(str(path.relative_to(PROMETHEUS)) for path in (PROMETHEUS / "rules").glob("*.yml"))
    assert files, "no rule files in deploy/prometheus/rules"
    _assert_succeeds(_promtool("check", "rules", *files))


def test_rule_unit_tests_pass() -> None:
    files = sorted(str(path.relative_to(PROMETHEUS)) for path in (PROMETHEUS / "tests").glob("*.yml"))
    assert files, "no promtool tests in deploy/prometheus/tests"
    _assert_succeeds(_promtool("test", "rules", *files))


def test_every_alert_has_a_unit_test_and_the_labels_and_annotations_on_call_reads() -> None:
    rules = yaml.safe_load((PROMETHEUS / "rules" / "aisf.rules.yml").read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]
    tests = yaml.safe_load((PROMETHEUS / "tests" / "aisf.rules.test.yml").read_text())
    tested = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]  # a test that only expects silence proves nothing fires
    }
    assert {alert["alert"] for alert in alerts} <= tested
    for alert in alerts:
        assert alert.get("for"), alert["alert"]
        assert alert["labels"]["severity"] in {"warning", "critical"}, alert["alert"]
        assert {"summary", "description"} <= set(alert["annotations"]), alert["alert"]


def test_the_kubernetes_config_scrapes_the_same_jobs_and_rules() -> None:
    # Debian's Prometheus is built without Kubernetes discovery, so promtool cannot load this file here.
    static = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    kubernetes = yaml.safe_load((PROMETHEUS / "prometheus-kubernetes.yml").read_text())
    assert kubernetes["rule_files"] == static["rule_files"]
    jobs = {job["job_name"]: job for job in kubernetes["scrape_configs"]}
    assert set(jobs) == {job["job_name"] for job in static["scrape_configs"]} == {"aisf", "dcgm"}
    for job in jobs.values():
        assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
        # Both jobs get `node`, which the GPU panels join on.
        assert any(r.get("target_label") == "node" for r in job["relabel_configs"]), job["job_name"]
