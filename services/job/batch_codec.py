"""aisf.job.v1 FileService/BatchService messages <-> files and batches (protobuf stops here)."""

from __future__ import annotations

from aisf.job.v1 import batch_service_pb2 as pb
from aisf.services.job.batch_store import FileInfo
from aisf.services.job.batches import BatchView
from aisf.services.job.codec import timestamp

_STATUSES = {
    "validating": pb.BATCH_STATUS_VALIDATING,
    "failed": pb.BATCH_STATUS_FAILED,
    "in_progress": pb.BATCH_STATUS_IN_PROGRESS,
    "finalizing": pb.BATCH_STATUS_FINALIZING,
    "completed": pb.BATCH_STATUS_COMPLETED,
    "expired": pb.BATCH_STATUS_EXPIRED,
    "cancelling": pb.BATCH_STATUS_CANCELLING,
    "cancelled": pb.BATCH_STATUS_CANCELLED,
}


def file_to_proto(info: FileInfo) -> pb.File:
    return pb.File(
        file_id=info.file_id,
        size=info.size,
        create_time=timestamp(info.created_at),
        filename=info.filename,
        purpose=info.purpose,
        tenant=info.tenant,
    )


def batch_to_proto(view: BatchView) -> pb.Batch:
    batch, job, times = view.batch, view.job, view.batch.times
    failed_as_a_whole = batch.status in ("failed", "expired") and job.error_type not in ("", "expired")
    return pb.Batch(
        batch_id=batch.batch_id,
        endpoint=batch.endpoint,
        input_file_id=batch.input_file_id,
        completion_window=batch.completion_window,
        status=_STATUSES[batch.status],
        output_file_id=batch.output_file_id or "",
        error_file_id=batch.error_file_id or "",
        create_time=timestamp(batch.created_at),
        in_progress_time=timestamp(times.get("in_progress_at")),
        expires_time=timestamp(batch.expires_at),
        finalizing_time=timestamp(times.get("finalizing_at")),
        completed_time=timestamp(times.get("completed_at")),
        failed_time=timestamp(times.get("failed_at")),
        expired_time=timestamp(times.get("expired_at")),
        cancelling_time=timestamp(times.get("cancelling_at")),
        cancelled_time=timestamp(times.get("cancelled_at")),
        total_requests=job.items_total,
        completed_requests=view.completed,
        failed_requests=view.failed,
        metadata=batch.metadata,
        tenant=batch.tenant,
        model_name=job.model_name,
        error_code=job.error_type if failed_as_a_whole else "",
        error_message=job.error_message if failed_as_a_whole else "",
    )
