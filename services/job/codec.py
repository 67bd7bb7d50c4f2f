"""aisf.job.v1 messages <-> job domain types (protobuf stops here)."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from aisf.job.v1 import job_service_pb2 as pb
from aisf.services.job.model import Job, JobKind, JobState
from aisf.services.job.service import JobView

_STATES = {
    JobState.QUEUED: pb.JOB_STATE_QUEUED,
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: pb.JOB_STATE_SUCCEEDED,
    JobState.FAILED: pb.JOB_STATE_FAILED,
    JobState.CANCELLED: pb.JOB_STATE_CANCELLED,
}
_STATES_BACK = {v: k for k, v in _STATES.items()}
_KINDS = {
    JobKind.V2: pb.JOB_KIND_V2,
    JobKind.CHAT: pb.JOB_KIND_CHAT,
    JobKind.COMPLETION: pb.JOB_KIND_COMPLETION,
    JobKind.EMBEDDING: pb.JOB_KIND_EMBEDDING,
}
_KINDS_BACK = {v: k for k, v in _KINDS.items()}


def timestamp(moment: datetime | None) -> Timestamp | None:
    """A protobuf Timestamp for a moment that may not have happened yet."""
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def job_to_proto(job: Job, responses: list[bytes] | None = None) -> pb.Job:
    return pb.Job(
        job_id=job.job_id,
        state=_STATES[job.state],
        model_name=job.model_name,
        model_version=job.model_version,
        tenant=job.tenant,
        tier=job.tier,
        priority=job.priority,
        items_done=job.items_done,
        items_total=job.items_total,
        attempts=job.attempts,
        error_type=job.error_type,
        error_message=job.error_message,
        create_time=timestamp(job.create_time),
        start_time=timestamp(job.start_time),
        end_time=timestamp(job.end_time),
        idempotency_key=job.idempotency_key or "",
        responses=responses or [],
        result_inline=responses is not None,
        resumed_from=job.resumed_from,
        kind=_KINDS[job.kind],
    )


def view_to_proto(view: JobView) -> pb.Job:
    return job_to_proto(view.job, view.responses)


def state_from_proto(state: pb.JobState.ValueType) -> JobState | None:
    return _STATES_BACK.get(state)


def kind_to_proto(kind: JobKind) -> pb.JobKind.ValueType:
    return _KINDS[kind]


def kind_from_proto(kind: pb.JobKind.ValueType) -> JobKind:
    return _KINDS_BACK.get(kind, JobKind.V2)
