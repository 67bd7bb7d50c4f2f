"""The job workflow: run every item through the inference activity, recover from OOM, record the outcome.

Deterministic: no I/O here; the activities (workflows/activities.py) do it all.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from aisf.workflows.types import (
        FINALIZE_BATCH,
        FINISH_JOB,
        INFER_ITEMS,
        NON_RETRYABLE,
        OUT_OF_MEMORY,
        WORKFLOW_NAME,
        FinalizeBatchInput,
        FinishJobInput,
        InferItemsInput,
        JobInput,
    )

# A batch's final status after each job outcome (an expiry is a failed job, an expired batch).
_BATCH_STATUS = {"succeeded": "completed", "failed": "failed", "cancelled": "cancelled", "expired": "expired"}


def _system_retry(maximum_attempts: int = 0, non_retryable: list[str] | None = None) -> RetryPolicy:
    """Exponential backoff for system errors (REQ-ORC-02): 1 s, 2 s, 4 s, ... at most 30 s apart."""
    return RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=30),
        maximum_attempts=maximum_attempts,
        non_retryable_error_types=non_retryable,
    )


@workflow.defn(name=WORKFLOW_NAME)
class BatchInferenceWorkflow:
    @workflow.run
    async def run(self, job: JobInput) -> None:
        try:
            if not await self._within_window(job):  # what was answered before it expired is kept
                await self._outcome(job, "failed", "expired", "the batch's completion window expired")
                return
        except asyncio.CancelledError:
            await self._outcome(job, "cancelled")
            raise
        except ActivityError as error:
            cause = error.cause
            if isinstance(cause, CancelledError):
                # The job was cancelled while its activity ran: the activity stopped, so is the job.
                await self._outcome(job, "cancelled")
                raise asyncio.CancelledError from None
            if isinstance(cause, ApplicationError):
                kind, message = cause.type or "internal", cause.message
            else:
                kind, message = "internal", str(cause or error)
            await self._outcome(job, "failed", kind, message)
            raise ApplicationError(message, type=kind, non_retryable=True) from None
        await self._outcome(job, "succeeded")

    async def _within_window(self, job: JobInput) -> bool:
        """Run every item; False when a batch's completion window closed first (its running activity is
        cancelled and has saved what it answered)."""
        infer = asyncio.ensure_future(self._infer_all(job))
        if job.expires_in_s:
            try:
                done, _ = await workflow.wait([infer], timeout=job.expires_in_s)
            except asyncio.CancelledError:
                # workflow.wait does not cancel what it waits on: stop the activity before the outcome.
                await _stopped(infer)
                raise
            if not done:
                await _stopped(infer)
                return False
        await infer
        return True

    async def _outcome(self, job: JobInput, state: str, kind: str = "", message: str = "") -> None:
        """Write a batch's files and status, then the job's final state. A cancel arriving meanwhile
        comes too late: the outcome is recorded whole (else the job would stay running forever)."""
        recording = asyncio.ensure_future(self._record(job, state, kind, message))
        while True:
            try:
                await asyncio.shield(recording)
                return
            except asyncio.CancelledError:
                if recording.done():
                    raise

    async def _record(self, job: JobInput, state: str, kind: str, message: str) -> None:
        if job.batch:
            status = _BATCH_STATUS[kind if kind == "expired" else state]
            await workflow.execute_activity(
                FINALIZE_BATCH,
                FinalizeBatchInput(job.job_id, status, kind, message),
                start_to_close_timeout=timedelta(minutes=30),
                retry_policy=_system_retry(),
            )
        await self._finish(FinishJobInput(job.job_id, state, kind, message))

    async def _infer_all(self, job: JobInput) -> None:
        """Out of memory halves the rows per engine call; below one row, the work moves to the
        large-GPU task queue (REQ-ORC-02). Either way the next attempt starts where the last one
        stopped: no answered item is redone."""
        max_rows = 0
        resume_from = 0
        queue = workflow.info().task_queue
        while True:
            try:
                await workflow.execute_activity(
                    INFER_ITEMS,
                    InferItemsInput(
                        job.job_id,
                        job.model_name,
                        job.model_version,
                        job.items_total,
                        max_rows,
                        job.kind,
                        job.tenant,
                        job.batch,
                        resume_from,
                    ),
                    task_queue=queue,
                    start_to_close_timeout=timedelta(hours=6),
                    heartbeat_timeout=timedelta(seconds=job.heartbeat_timeout_s),
                    retry_policy=_system_retry(job.max_attempts, NON_RETRYABLE),
                    cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                    # The tier's priority orders the activity backlog too (REQ-ORC-03).
                    priority=workflow.info().priority,
                )
                return
            except ActivityError as error:
                stopped = _out_of_memory(error)
                if stopped is None:
                    raise
                rows, resume_from = stopped
                if rows > 1:
                    max_rows = rows // 2
                elif job.large_task_queue and queue != job.large_task_queue:
                    workflow.logger.info("moving job %s to the large-GPU queue", job.job_id)
                    queue, max_rows = job.large_task_queue, 0
                else:
                    raise

    async def _finish(self, outcome: FinishJobInput) -> None:
        await workflow.execute_activity(
            FINISH_JOB, outcome, start_to_close_timeout=timedelta(seconds=30), retry_policy=_system_retry()
        )


async def _stopped(infer: asyncio.Future[None]) -> None:
    """Cancel the running activity and wait until it stopped (it saves what it answered first)."""
    infer.cancel()
    with contextlib.suppress(ActivityError, asyncio.CancelledError):
        await infer


def _out_of_memory(error: ActivityError) -> tuple[int, int] | None:
    """(rows that did not fit, first item not answered) of an out-of-memory failure, else None.
    Histories recorded before the second detail existed resume from the activity's own checkpoint."""
    cause = error.cause
    if isinstance(cause, ApplicationError) and cause.type == OUT_OF_MEMORY and cause.details:
        resume_from = int(cause.details[1]) if len(cause.details) > 1 else 0
        return int(cause.details[0]), resume_from
    return None
