"""The one settings object: AISF_* environment variables, overridden by CLI flags in main()."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aisf.services.common.deadlines import MAX_TIMEOUT_S
from aisf.services.common.sealing import key_from_text

WILDCARD_HOSTS = ("0.0.0.0", "::", "")
"""Values of `host` that bind every interface (no address another process could dial)."""
Role = Literal["all", "router", "gateway", "job", "worker", "feature", "pii", "control-plane"]


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
    database_threads: int = Field(8, ge=1, le=64)
    """Threads for metadata-database calls (their own pool: busy engines never hold them up)."""
    # --- dataplane under faults: deadlines, backpressure, drains ---
    request_timeout_s: float = Field(60.0, gt=0, le=MAX_TIMEOUT_S)
    """Deadline of a unary call that brings none (gRPC deadline, X-Aisf-Timeout-Ms, Triton's timeout)."""
    stream_timeout_s: float = Field(600.0, gt=0, le=MAX_TIMEOUT_S)
    """Deadline of a streamed generation that brings none."""
    max_queue_size: int = Field(256, ge=0)
    """Requests that may wait for one model version's engine unless its config.yaml says otherwise;
    more get 429 / RESOURCE_EXHAUSTED with Retry-After."""
    drain_timeout_s: float = Field(30.0, ge=0)
    """How long a reload or unload lets open streams finish before cancelling them (calls that already
    reached an engine always finish)."""
    gc_freeze: bool = True
    """Freeze start-up's objects out of the garbage collector once serving (docs/benchmarks.md: without it,
    full collections paused the event loop 70-110 ms under load, the whole c=32 p99 tail)."""
    # --- end dataplane under faults ---
    job_address: str = ""
    """gRPC target of the job service for the gateway role; empty means the router's address."""
    temporal_address: str = ""
    """Temporal frontend host:port; empty starts an embedded dev server (SQLite in data_dir)."""
    temporal_namespace: str = "default"
    temporal_tls: bool = False
    """Connect to Temporal over TLS (with the client certificate below, if given)."""
    temporal_tls_client_cert: Path | None = None
    temporal_tls_client_key: Path | None = None
    temporal_tls_ca_cert: Path | None = None
    temporal_port: int = Field(7233, ge=0, le=65535)
    """Frontend port of the embedded Temporal dev server."""
    temporal_ui_port: int = Field(8233, ge=0, le=65535)
    """Web UI port of the embedded Temporal dev server; 0 runs it headless."""
    job_task_queue: str = "aisf-jobs"
    """Temporal task queue of job workflows and their inference activities."""
    job_large_task_queue: str = "aisf-jobs-large"
    """Queue of the large-GPU worker pool, where work goes that runs out of memory at batch size 1."""
    worker_task_queues: list[str] = []
    """Queues this process's workers poll; empty means job_task_queue."""
    worker_max_concurrent_activities: int = Field(4, ge=1)
    job_gauges_interval_s: float = Field(10.0, gt=0, le=3600)
    """How often the job role recounts jobs by state and asks Temporal for its backlog (metrics)."""
    job_item_concurrency: int = Field(8, ge=1, le=256)
    """Items of one job a worker answers at once (a dynamic batcher merges them)."""
    job_max_attempts: int = Field(4, ge=1, le=10)
    """Attempts of the inference activity on system errors (exponential backoff from 1 s, x2)."""
    job_heartbeat_timeout_s: float = Field(30.0, gt=0)
    job_max_items: int = Field(100_000, ge=1)
    """Most requests one job may hold; more is a 400."""
    job_inline_result_bytes: int = Field(1024 * 1024, ge=0)
    """Results up to this size come back inline with the job; larger ones page via /result."""
    files_storage: Literal["local", "s3"] = "local"
    """Where the bytes of batch files live: a folder (files_dir), or an S3-compatible bucket."""
    files_dir: Path | None = None
    """Folder of the local file storage; empty means data_dir/files."""
    files_s3_bucket: str = ""
    files_s3_prefix: str = "aisf/files/"
    files_s3_endpoint_url: str = ""
    """S3-compatible endpoint (MinIO, Ceph, ...); empty means AWS. Credentials: boto3's (AWS_* variables)."""
    files_s3_region: str = ""
    files_max_bytes: int = Field(200 * 1024 * 1024, ge=1024)
    """Largest file an upload may be (OpenAI's batch input limit by default)."""
    job_ack: Literal["durable", "started"] = "durable"
    """When a submit is answered: once the job is durable in the metadata DB (its workflow starts right
    after, from the transactional outbox, even if Temporal is down), or only once Temporal started it."""
    # --- tenants and API keys (REQ-SEC-01, REQ-ORC-03) ---
    auth: Literal["keys", "off"] = "keys"
    """keys: every endpoint but health and metrics needs an API key (Authorization: Bearer on REST,
    `authorization` metadata on gRPC), and the key names the tenant and tier. off: no keys, the tenant
    is the X-Aisf-Tenant header and tenant_tiers gives its tier (trusted networks and tests only)."""
    auth_cache_s: float = Field(5.0, gt=0, le=300)
    """How long a checked key is trusted without asking the database again: revoking a key or changing
    a tenant's tier takes effect within this."""
    internal_token: SecretStr = SecretStr("")
    """Secret the roles present to each other over gRPC; empty: one generated once and kept in the
    metadata database, which every role shares."""
    tier_rate_limits: dict[str, float] = {"free": 10.0}
    """Tier -> requests a second one process lets a tenant send (bursts of twice that); tiers not named
    are not limited here (nginx still limits per key and per address)."""
    tenant_tiers: dict[str, str] = {}
    """With auth=off only: tenant -> tier, e.g. {"acme": "gold"}; unknown tenants get default_tier (with
    keys, the tenants table holds each tenant's tier)."""
    default_tier: str = "standard"
    tier_priorities: dict[str, int] = {"gold": 1, "standard": 3, "free": 5}
    """Tier -> Temporal priority key (1 runs first, 5 last)."""
    # --- end tenants and API keys ---
    # --- the PII service (REQ-SEC-01) ---
    pii_service: bool = True
    """Serve aisf.pii.v1.PiiService inside --role all (--role pii always does). Its models load in the
    background after start-up (~500 MB with Korean names)."""
    pii_korean_names: bool = True
    """Find Korean person names with kiwipiepy's morphological analyser (most of the role's memory)."""
    pii_min_score: float = Field(0.5, gt=0, le=1)
    """Findings scoring below this are not reported (a check digit or a context word raises a score)."""
    pii_threads: int = Field(2, ge=1, le=64)
    """Threads analysing texts (CPU-bound: about one per core the role may use)."""
    pii_max_texts: int = Field(256, ge=1, le=10_000)
    """Most texts one Detect or Redact call may carry."""
    pii_max_text_chars: int = Field(100_000, ge=1)
    pii_address: str = ""
    """gRPC target of the pii role for roles in another process (the semantic cache asks it before it
    keeps an answer, the job workers redact answered items, the log handler redacts free text); empty:
    the co-located one, if any."""
    pii_stored_payloads: Literal["redact", "seal"] = "redact"
    """What a job keeps of an answered item where a pii role is reachable. redact: its request and
    response with personal data replaced by placeholders (results are the redacted answers). seal: both
    whole, sealed (results are the answers as the model gave them). Without a pii role, always seal."""
    payload_key: SecretStr = SecretStr("")
    """AES-256 key (32 bytes, URL-safe base64) that seals stored job payloads and files at rest; empty:
    one generated once and kept in the metadata database (then the database alone opens them: set
    this from a secret store in production)."""
    # --- end the PII service ---
    # --- the nginx edge (TLS, rate limits, CORS) ---
    edge: bool = False
    """Start nginx in front of this process (roles all and gateway): REST, SSE and gRPC over TLS on
    edge_port."""
    edge_port: int = Field(8443, ge=1, le=65535)
    edge_tls_cert: Path | None = None
    """PEM certificate (chain) the edge serves; empty: a self-signed one made in data_dir/edge/tls."""
    edge_tls_key: Path | None = None
    edge_cors_origins: list[str] = ["*"]
    """Origins browsers may call from (exact, e.g. https://app.example.com), or "*"."""
    edge_rate_per_address: float = Field(200.0, gt=0)
    """Requests a second per client address (bursts of edge_burst_per_address more); then 429."""
    edge_burst_per_address: int = Field(400, ge=0)
    edge_rate_per_key: float = Field(100.0, gt=0)
    """Requests a second per API key, across addresses (bursts of edge_burst_per_key more); then 429."""
    edge_burst_per_key: int = Field(200, ge=0)
    edge_workers: int = Field(0, ge=0, le=256)
    """nginx worker processes; 0: one per core."""
    edge_nginx: str = "nginx"
    """The nginx binary (a name on PATH or a path)."""
    # --- end the nginx edge ---
    # --- LLM lane: semantic cache and admission (REQ-OPT-04) ---
    semantic_cache_embedding_model: str = ""
    """Served embedding model (e.g. minilm-embed) that keys the semantic cache; empty turns the cache off."""
    semantic_cache_redis_url: str = ""
    """Redis URL of the semantic cache index (e.g. redis://127.0.0.1:6379/0); empty keeps it in-process."""
    semantic_cache_threshold: float = Field(0.9, gt=0, le=1)
    """Cosine similarity of prompt embeddings at or above which a cached answer is reused."""
    semantic_cache_ttl_s: float = Field(3600.0, gt=0)
    """How long a cached answer may be reused."""
    semantic_cache_max_entries: int = Field(1000, ge=1)
    """Answers kept per scope (tenant, model, version, parameters); a lookup compares all of them."""
    semantic_cache_max_scopes: int = Field(10_000, ge=1)
    """Scopes the in-process index keeps; the least recently used go first."""
    semantic_cache_timeout_s: float = Field(0.25, gt=0, le=10)
    """Bound on one index read or write (Redis socket and call): a slower cache is skipped."""
    semantic_cache_cooldown_s: float = Field(5.0, ge=0, le=3600)
    """After a cache failure (index or embedder), requests skip the cache this long, then try it again."""
    llm_stream_idle_s: float = Field(60.0, ge=0, le=86_400)
    """A token stream whose reader has not taken a chunk this long is cut and its engine freed (0: never)."""
    llm_max_waiting: int = Field(32, ge=0)
    """Requests that may queue for a busy generative engine; more get 429 with Retry-After."""
    # --- end LLM lane ---
    # --- feature lane: Feast online features (REQ-OPT-02) ---
    feature_repo: Path | None = None
    """Feast feature repository (feature_store.yaml) the feature role serves; empty: no feature role."""
    feature_address: str = ""
    """gRPC target of the feature service for the router and gateway roles; empty means the co-located one."""
    feature_max_entities: int = Field(1000, ge=1, le=100_000)
    """Most entity rows one online-feature request may ask for; more is a 400."""
    feature_store_timeout_s: float = Field(0.5, gt=0, le=30)
    """Bound on one online-store round trip (Redis socket connect and read)."""
    # --- end feature lane ---
    # --- operations: logs and traces (REQ-OPS-02) ---
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "text"] = "auto"
    """auto: readable text when stderr is a terminal, JSON lines otherwise."""
    request_log_sample: float = Field(0.1, ge=0, le=1)
    """Share of successful, fast V2 inferences that get a request-log line (failures, slow ones, LLM
    requests and job activities always do); 1 logs every one, at a cost docs/operations.md gives."""
    request_log_slow_ms: float = Field(100.0, ge=0)
    """A V2 inference slower than this is always logged, whatever the sampling."""
    tracing: Literal["off", "otlp", "console"] = "off"
    """OpenTelemetry spans with W3C trace context across every hop: off, OTLP/gRPC, or stderr."""
    otlp_endpoint: str = "http://127.0.0.1:4317"
    """Where `tracing=otlp` sends spans (an OpenTelemetry Collector, Jaeger, Tempo)."""
    tracing_sample: float = Field(1.0, ge=0, le=1)
    """Share of new traces recorded (parent-based: a caller's decision is kept)."""
    # --- end operations ---
    # --- the mesh: Envoy fed by aisf's xDS control plane (REQ-SCALE-01) ---
    mesh_address: str = ""
    """gRPC target of the control plane (--role control-plane) this process registers with and heartbeats
    to, so Envoy routes to it; empty: not in a mesh."""
    mesh_advertise_address: str = ""
    """host:port Envoy reaches this process's gRPC server at (in Kubernetes: the pod IP and port); empty:
    this host's address (the bound host, or the host name's address when bound to every interface)."""
    mesh_replica_id: str = ""
    """This replica's id in the mesh; empty: <role>-<host name>-<process id>."""
    mesh_heartbeat_s: float = Field(1.0, gt=0, le=60)
    """(control plane) How often replicas heartbeat; one silent for three of these leaves the endpoints."""
    mesh_probe_timeout_s: float = Field(2.0, gt=0, le=30)
    """(control plane) Bound on one gRPC health check of a replica (three failed in a row take it out;
    lenient on purpose: a replica slow under load must not be ejected onto the others, and Envoy's
    outlier detection takes out one that fails calls within a second)."""
    mesh_envoy_port: int = Field(10000, ge=1, le=65535)
    """(control plane) The port of the gRPC listener it gives Envoy."""
    mesh_envoy_http_port: int = Field(10080, ge=0, le=65535)
    """(control plane) The port of the REST listener it gives Envoy in front of the gateways; 0: none."""
    mesh_retries: int = Field(3, ge=0, le=10)
    """(control plane) Times Envoy retries a call on another replica (idempotent calls on UNAVAILABLE or
    a reset; every call when the connection failed)."""
    mesh_max_requests: int = Field(4096, ge=1)
    """(control plane) Envoy's circuit breaker per cluster: requests in flight (and pending) at once."""
    # --- end the mesh ---
    shutdown_grace_s: float = Field(5.0, ge=0)
    """How long in-flight calls may finish after SIGINT/SIGTERM."""

    @field_validator("payload_key")
    @classmethod
    def _payload_key_decodes(cls, value: SecretStr) -> SecretStr:
        """A malformed key is a settings error at start-up, not a traceback at the first sealed write."""
        if value.get_secret_value():
            key_from_text(value.get_secret_value())
        return value

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'aisf.db').resolve()}"

    def router_socket(self) -> Path:
        """The co-located router's Unix socket (one per process, so instances can sit side by side)."""
        return (self.data_dir / f"router-{os.getpid()}.sock").resolve()
