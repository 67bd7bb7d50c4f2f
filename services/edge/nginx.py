"""Renders the edge's nginx config (deploy/nginx/aisf.conf.template) and runs nginx as a child process."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from aisf.services.common.settings import WILDCARD_HOSTS, Settings
from aisf.services.edge.certificates import self_signed

log = logging.getLogger(__name__)
TEMPLATE = Path(__file__).with_name("aisf.conf.template")
_PLACEHOLDER = re.compile(r"\{\{ (\w+) \}\}")


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    listen: str
    gateway: str
    router: str
    prefix: Path
    certificate: Path
    certificate_key: Path


def _origins(origins: list[str]) -> str:
    if "*" in origins:
        return '        "~." "*";'
    return "\n".join(f'        "{origin}" "{origin}";' for origin in origins)


def _rate(per_second: float) -> str:
    """nginx takes whole requests a second or a minute."""
    if per_second >= 1:
        return f"{round(per_second)}r/s"
    return f"{max(1, round(per_second * 60))}r/m"


def render(settings: Settings, config: EdgeConfig, as_this_user: bool = False) -> str:
    """The nginx config for `config`'s upstreams, with the limits `settings` name; `as_this_user`: its
    workers run as this process's user (nginx started as root would drop them to `nobody`, who cannot
    write the temp folders aisf made)."""
    user = "user root;" if as_this_user and os.geteuid() == 0 else ""
    values = {
        "user": user,
        "workers": str(settings.edge_workers or "auto"),
        "prefix": str(config.prefix),
        "listen": config.listen,
        "gateway": config.gateway,
        "router": config.router,
        "certificate": str(config.certificate),
        "certificate_key": str(config.certificate_key),
        "address_rate": _rate(settings.edge_rate_per_address),
        "address_burst": str(settings.edge_burst_per_address),
        "key_rate": _rate(settings.edge_rate_per_key),
        "key_burst": str(settings.edge_burst_per_key),
        "max_body_bytes": str(settings.max_request_bytes),
        "files_max_bytes": str(settings.files_max_bytes),
        "stream_timeout_s": str(int(settings.stream_timeout_s)),
        "cors_origins": _origins(settings.edge_cors_origins),
    }
    return _PLACEHOLDER.sub(lambda found: values[found[1]], TEMPLATE.read_text())


def edge_config(settings: Settings, gateway: str, router: str) -> EdgeConfig:
    """Where the edge listens and what it fronts (`gateway` REST and `router` gRPC, host:port each)."""
    prefix = (settings.data_dir / "edge").resolve()
    if settings.edge_tls_cert is not None and settings.edge_tls_key is not None:
        certificate, key = settings.edge_tls_cert.resolve(), settings.edge_tls_key.resolve()
    else:
        certificate, key = self_signed(prefix / "tls")
    return EdgeConfig(
        f"{settings.host}:{settings.edge_port}",
        gateway,
        router,
        prefix,
        certificate,
        key,
    )


@dataclass(slots=True)
class EdgeProcess:
    process: subprocess.Popen[bytes]
    url: str

    async def stop(self) -> None:
        """A graceful stop (SIGQUIT: open requests finish), killed after a few seconds."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                await asyncio.to_thread(self.process.wait, 10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await asyncio.to_thread(self.process.wait)


def _nginx(settings: Settings) -> str:
    # Debian installs it in /usr/sbin, which a non-root PATH often lacks.
    found = shutil.which(settings.edge_nginx) or shutil.which(settings.edge_nginx, path="/usr/sbin")
    if found is None:
        raise RuntimeError(
            f"--edge needs nginx ({settings.edge_nginx!r} not found): apt-get install nginx, "
            "or name it with AISF_EDGE_NGINX"
        )
    return found


async def start_edge(settings: Settings, http_port: int, router: str, display_host: str) -> EdgeProcess:
    """nginx on settings.edge_port in front of this process's REST port and `router`; ready once it
    listens."""
    binary = _nginx(settings)
    config = edge_config(settings, f"127.0.0.1:{http_port}", router)
    for folder in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (config.prefix / folder).mkdir(parents=True, exist_ok=True)
    conf = config.prefix / "nginx.conf"
    conf.write_text(render(settings, config, as_this_user=True))
    checked = await asyncio.to_thread(
        subprocess.run, [binary, "-t", "-q", "-p", str(config.prefix), "-c", str(conf)], capture_output=True
    )
    if checked.returncode != 0:
        raise RuntimeError(f"nginx refused its config {conf}: {checked.stderr.decode().strip()}")
    process = subprocess.Popen(
        [binary, "-p", str(config.prefix), "-c", str(conf), "-g", "daemon off;"],
        start_new_session=True,  # Ctrl-C reaches aisf, which stops nginx gracefully
    )
    edge = EdgeProcess(process, f"https://{display_host}:{settings.edge_port}")
    host = "127.0.0.1" if settings.host in WILDCARD_HOSTS else settings.host
    for _ in range(200):
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited with status {process.returncode} (config {conf})")
        try:
            with socket.create_connection((host, settings.edge_port), timeout=0.2):
                break
        except OSError:
            await asyncio.sleep(0.05)
    else:
        await edge.stop()
        raise RuntimeError(f"nginx did not listen on port {settings.edge_port}")
    log.info("edge started", extra={"edge": edge.url, "config": str(conf)})
    return edge
