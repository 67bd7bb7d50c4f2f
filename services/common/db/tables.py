"""Table definitions shared by the stores and the Alembic migrations."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class ModelVersionRow(Base):
    """Current state of each model version the repository knows."""

    __tablename__ = "model_versions"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    version: Mapped[str] = mapped_column(String(32), primary_key=True)
    backend: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ModelEventRow(Base):
    """Append-only load history: loaded, unloaded, load_failed."""

    __tablename__ = "model_events"
    __table_args__ = (Index("ix_model_events_name_id", "name", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255))
    version: Mapped[str] = mapped_column(String(32))
    backend: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class JobRow(Base):
    """A durable job's queryable history; Temporal's workflow (id = job_id) is the source of truth."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("tenant", "idempotency_key", name="uq_jobs_tenant_idempotency_key"),
        Index("ix_jobs_create_time", "create_time", "job_id"),
        Index("ix_jobs_state_create_time", "state", "create_time"),
    )

    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # What the items are: v2 (inference requests), chat, completion or embedding (LLM request bodies).
    kind: Mapped[str] = mapped_column(String(16), default="v2")
    tenant: Mapped[str] = mapped_column(String(128))
    tier: Mapped[str] = mapped_column(String(32))
    priority: Mapped[int] = mapped_column(Integer)
    idempotency_key: Mapped[str | None] = mapped_column(String(256), nullable=True)
    model_name: Mapped[str] = mapped_column(String(255))
    model_version: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    items_total: Mapped[int] = mapped_column(Integer)
    items_done: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    resumed_from: Mapped[int] = mapped_column(Integer, default=0)
    error_type: Mapped[str] = mapped_column(String(64), default="")
    error_message: Mapped[str] = mapped_column(Text, default="")
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    start_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    end_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # An OpenAI batch: its items fail one by one, and it expires (unfinished lines fail) at expires_at.
    batch: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class JobItemRow(Base):
    """One request of a job and, once answered, its response: serialized V2 protobuf for v2 jobs, JSON
    bodies for LLM jobs. `status` is the answer's HTTP-like status where items fail one by one
    (OpenAI batches); `custom_id` is the batch line's."""

    __tablename__ = "job_items"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.job_id", ondelete="CASCADE"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    request: Mapped[bytes] = mapped_column(LargeBinary)
    response: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    custom_id: Mapped[str | None] = mapped_column(String(512), nullable=True)


class JobOutboxRow(Base):
    """A job accepted but whose workflow is not started yet: written with the job in one transaction,
    removed once Temporal has the workflow (the transactional outbox)."""

    __tablename__ = "job_outbox"
    __table_args__ = (Index("ix_job_outbox_due", "next_attempt_at"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.job_id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")


class FileRow(Base):
    """An uploaded or produced file (OpenAI Files API); its bytes live in the file storage."""

    __tablename__ = "files"
    __table_args__ = (Index("ix_files_tenant_created", "tenant", "created_at"),)

    file_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128))
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(512))
    size: Mapped[int] = mapped_column(Integer)
    storage_key: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class BatchRow(Base):
    """An OpenAI batch: the job (same id) runs its lines; this row keeps what the Batch API shows."""

    __tablename__ = "batches"
    __table_args__ = (Index("ix_batches_tenant_created", "tenant", "created_at"),)

    batch_id: Mapped[str] = mapped_column(ForeignKey("jobs.job_id", ondelete="CASCADE"), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128))
    endpoint: Mapped[str] = mapped_column(String(255))
    input_file_id: Mapped[str] = mapped_column(String(64))
    completion_window: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    metadata_json: Mapped[str] = mapped_column(Text, default="{}")
    output_file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # When each status was reached (in_progress_at, finalizing_at, completed_at, ...), as JSON.
    times_json: Mapped[str] = mapped_column(Text, default="{}")


class TenantRow(Base):
    """A tenant: whose jobs, files and cache entries are whose, and the tier it is served at."""

    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    tier: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApiKeyRow(Base):
    """An API key, stored as a salted digest of its secret (the key itself is shown once, at creation)."""

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_tenant", "tenant"),)

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), ForeignKey("tenants.name"))
    name: Mapped[str] = mapped_column(String(128), default="")
    salt: Mapped[str] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(128))
    roles: Mapped[str] = mapped_column(String(128))
    """Comma-separated: infer, admin."""
    models: Mapped[str] = mapped_column(Text, default="")
    """Comma-separated model names the key may use; empty: every model."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ServiceSecretRow(Base):
    """Secrets the roles share through the database they already share (the internal gRPC token)."""

    __tablename__ = "service_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class MeshReplicaRow(Base):
    """A replica of the mesh: registered with the control plane, alive while it heartbeats."""

    __tablename__ = "mesh_replicas"

    replica_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(300))
    models: Mapped[str] = mapped_column(Text, default="")
    """Newline-separated names of the models it has ready."""
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
