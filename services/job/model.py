"""Domain types of a durable job (no protobuf, no Temporal)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True, slots=True)
class Job:
    job_id: str
    state: JobState
    model_name: str
    model_version: str
    tenant: str
    tier: str
    priority: int
    items_total: int
    items_done: int
    attempts: int
    resumed_from: int
    error_type: str
    error_message: str
    create_time: datetime
    start_time: datetime | None
    end_time: datetime | None
    idempotency_key: str | None


@dataclass(frozen=True, slots=True)
class JobFilter:
    state: JobState | None = None
    model_name: str = ""
    tenant: str = ""
