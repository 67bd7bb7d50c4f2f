"""A real Prometheus (the Debian package's binary) for tests: deploy/prometheus/'s config and rules,
scraping the given targets every second, and a small client of its HTTP API."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.processes import free_port, stop_process

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


class PrometheusError(RuntimeError):
    """Prometheus answered `status: error` (a parse error, a bad matcher...)."""


class Prometheus:
    def __init__(self, url: str, process: subprocess.Popen[str], log: Path) -> None:
        self.url = url
        self.process = process
        self.log = log
        self._http = httpx.Client(base_url=url, timeout=30)

    def close(self) -> None:
        self._http.close()

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        body = self._http.get(path, params=params).json()
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query: the result vector ([] when nothing matched); scalars come back as one sample."""
        data = self._get("/api/v1/query", {"query": expr})
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def series_names(self) -> set[str]:
        return set(self._get("/api/v1/label/__name__/values"))

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self._get("/api/v1/targets")["activeTargets"]
        return active

    def wait_for(self, expr: str, timeout: float = 30) -> list[dict[str, Any]]:
        """The first non-empty result of `expr` within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expr!r} stayed empty for {timeout} s; targets: {self.targets()}")
            time.sleep(0.25)


def scrape_config(targets: Sequence[str]) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with the `aisf` job scraping `targets` and everything every
    second; rules from the deploy folder by absolute path; no Alertmanager to send to."""
    config: dict[str, Any] = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(DEPLOY / "rules" / "*.yml")]
    config.pop("alerting", None)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["aisf"]["static_configs"] = [{"targets": list(targets)}]
    # No GPU here: a dcgm job would only log failed scrapes.
    config["scrape_configs"] = [jobs["aisf"]]
    return config


@contextmanager
def running_prometheus(
    directory: Path, targets: Sequence[str], timeout_s: float = 30
) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    assert binary is not None, "prometheus not found: .ci/bootstrap installs Debian's `prometheus` package"
    directory.mkdir(parents=True, exist_ok=True)
    config_file = directory / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(scrape_config(targets)))
    port = free_port()
    log = directory / "prometheus.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                # Debian's default console paths may not exist; nothing here needs them.
                f"--web.console.templates={directory}",
                f"--web.console.libraries={directory}",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    prometheus = Prometheus(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + timeout_s
        while not _ready(prometheus.url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not become ready:\n{log.read_text()}")
            time.sleep(0.1)
        yield prometheus
    finally:
        prometheus.close()
        stop_process(process)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
