"""Domain types of a durable job (no protobuf, no Temporal)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import orjson

from aisf.services.common.errors import AisfError
from aisf.services.common.openai_responses import error_body


class JobKind(StrEnum):
    """What a job's items are: V2 inference requests (protobuf), or OpenAI request bodies (JSON)."""

    V2 = "v2"
    CHAT = "chat"
    COMPLETION = "completion"
    EMBEDDING = "embedding"

    @property
    def llm(self) -> bool:
        return self is not JobKind.V2


# The endpoint an OpenAI request body (a batch line, a job item) is for.
ENDPOINTS = {
    "/v1/chat/completions": JobKind.CHAT,
    "/v1/completions": JobKind.COMPLETION,
    "/v1/embeddings": JobKind.EMBEDDING,
}


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
    kind: JobKind = JobKind.V2
    batch: bool = False  # an OpenAI batch: items fail one by one, and it expires at expires_at
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class NewItem:
    """One request of a new job; an item already answered at submit (a malformed batch line) comes
    with its status and response."""

    request: bytes
    custom_id: str | None = None
    status: int | None = None
    response: bytes | None = None


@dataclass(frozen=True, slots=True)
class StoredItem:
    idx: int
    request: bytes
    custom_id: str | None
    status: int | None
    response: bytes | None


@dataclass(frozen=True, slots=True)
class Answer:
    """What one item got: its response and, where items fail one by one, its status."""

    idx: int
    response: bytes
    status: int | None = None
    # Set once the pii role redacted this answer: the item's request, redacted too. Both are then kept
    # plain; an answer without it is sealed and its request stays sealed.
    redacted_request: bytes | None = None


def item_error_body(error: AisfError, kind: JobKind) -> bytes:
    """An item's own failure as its answer: OpenAI's error object for LLM work, V2's {"error"} else."""
    return orjson.dumps(error_body(error) if kind.llm else {"error": error.message})


def item_request_id(job_id: str, idx: int) -> str:
    """The request id of a job's item `idx` (engines, logs, traces and a batch's output line share it)."""
    return f"{job_id}-{idx}"


@dataclass(frozen=True, slots=True)
class JobFilter:
    state: JobState | None = None
    model_name: str = ""
    tenant: str = ""
    batch: bool = False  # the jobs API lists jobs; a batch's job belongs to the Batch API
