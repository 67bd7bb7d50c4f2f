"""The one settings object: AISF_* environment variables, overridden by CLI flags in main()."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Role = Literal["all", "router", "gateway"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AISF_", extra="forbid", use_attribute_docstrings=True)

    host: str = "0.0.0.0"
    """Address the REST, gRPC and metrics listeners bind."""
    http_port: int = Field(8000, ge=0, le=65535)
    """REST edge (KServe V2 REST; OpenAI API later). 0 picks a free port."""
    grpc_port: int = Field(8001, ge=0, le=65535)
    """gRPC (inference.GRPCInferenceService and aisf.*.v1). 0 picks a free port."""
    metrics_port: int = Field(8002, ge=0, le=65535)
    """Prometheus /metrics. 0 picks a free port."""
    model_repository: Path = Path("models")
    """Folder of models/<name>/config.yaml + <version>/ artifacts."""
    data_dir: Path = Path(".aisf")
    """Where the embedded default keeps its SQLite database and sockets."""
    database_url: str = ""
    """SQLAlchemy URL of the metadata database; empty means SQLite in data_dir."""
    router_address: str = ""
    """gRPC target of the inference router for the gateway role; empty means the co-located one."""
    max_request_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    """Largest accepted request body / gRPC message; larger ones get 413 / RESOURCE_EXHAUSTED."""
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    shutdown_grace_s: float = Field(5.0, ge=0)
    """How long in-flight calls may finish after SIGINT/SIGTERM."""

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'aisf.db').resolve()}"

    def router_socket(self) -> Path:
        """The co-located router's Unix socket (one per process, so instances can sit side by side)."""
        return (self.data_dir / f"router-{os.getpid()}.sock").resolve()
