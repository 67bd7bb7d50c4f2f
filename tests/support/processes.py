"""Starts real servers (aisf, MLServer, ...) as child processes on free ports, and stops them."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

AISF = str(Path(sys.executable).with_name("aisf"))
_PORTS = {
    "http": re.compile(r"REST http://[^:\s]+:(\d+)"),
    "grpc": re.compile(r"gRPC [^:\s]+:(\d+)"),
    "metrics": re.compile(r"metrics http://[^:\s]+:(\d+)/metrics"),
}


_handed_out: set[int] = set()


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port free now, for a server that must be told its port before it starts.

    Drawn below the kernel's ephemeral range: a port the kernel picked for `bind(0)` can be handed
    to some client's outgoing connection before our server binds it (CI lost a run to that)."""
    floor = _ephemeral_floor()
    for _ in range(200):
        port = random.randrange(max(1024, floor - 12000), floor)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free loopback port below the ephemeral range")


def any_port_flags() -> list[str]:
    """`aisf serve` flags binding each listener to port 0: the kernel picks atomically and the
    ready line names the ports."""
    return [flag for name in ("http", "grpc", "metrics") for flag in (f"--{name}-port", "0")]


@dataclass
class ServerProcess:
    """A server child process on loopback ports, with everything it printed."""

    process: subprocess.Popen[str]
    http_port: int
    grpc_port: int
    metrics_port: int
    output: list[str] = field(default_factory=list)

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def log_text(self) -> str:
        return "".join(self.output)

    def wait_logged(self, needle: str, timeout_s: float = 60) -> str:
        """Everything it printed, once `needle` is among it (fails the test after `timeout_s`)."""
        deadline = time.monotonic() + timeout_s
        while needle not in (text := self.log_text()):
            assert time.monotonic() < deadline, f"never logged {needle!r}:\n{text[-3000:]}"
            time.sleep(0.1)
        return text

    def stop(self) -> int:
        """Stop it early (e.g. to test a peer going away); stopping again is a no-op."""
        return stop_process(self.process)


class AisfProcess(ServerProcess):
    """`aisf serve`; ports of listeners its role lacks are 0."""


def collect_output(process: subprocess.Popen[str], sink: list[str]) -> threading.Thread:
    """Append every line the child prints (stdout, with stderr merged into it) to `sink`, from a thread
    of its own; join it once the child has stopped."""

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            sink.append(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    return reader


@contextmanager
def running_aisf(
    repository: Path,
    data_dir: Path,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout_s: float = 90,
    role: str = "all",
) -> Iterator[AisfProcess]:
    """`aisf serve --role ROLE` on free ports; yields once it printed its ready line (ports of
    listeners the role lacks are 0)."""
    command = [
        AISF,
        "serve",
        "--role",
        role,
        "--host",
        "127.0.0.1",
        "--model-repository",
        str(repository),
        "--data-dir",
        str(data_dir),
        *any_port_flags(),
        *args,
    ]
    queue = f"aisf-jobs-{uuid.uuid4().hex[:8]}"
    child_env = {
        **os.environ,
        "AISF_LOG_FORMAT": "json",
        # Keys are tested on their own (test_auth); tests of other lanes reach them without one.
        "AISF_AUTH": "off",
        # The PII models (seconds of CPU, ~500 MB) load only where a test asks for them (test_pii_service).
        "AISF_PII_SERVICE": "false",
        "AISF_JOB_TASK_QUEUE": queue,
        "AISF_JOB_LARGE_TASK_QUEUE": f"{queue}-large",
        **(env or {}),
    }
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_env,
        start_new_session=True,
    )
    output: list[str] = []
    assert process.stdout is not None
    reader = collect_output(process, output)
    deadline = time.monotonic() + timeout_s
    ports: list[int] | None = None
    while ports is None:
        for line in list(output):
            if line.startswith("aisf ready:"):
                ports = [int(m[1]) if (m := pattern.search(line)) else 0 for pattern in _PORTS.values()]
        if ports is None:
            if process.poll() is not None or time.monotonic() > deadline:
                stop_process(process)
                reader.join(timeout=5)
                process.stdout.close()
                raise RuntimeError("aisf did not start:\n" + "".join(output))
            time.sleep(0.05)
    try:
        yield AisfProcess(process, *ports, output=output)
    finally:
        stop_process(process)
        reader.join(timeout=5)
        process.stdout.close()


def stop_process(process: subprocess.Popen[str], grace_s: float = 15) -> int:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode
