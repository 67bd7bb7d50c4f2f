"""The job workflow's activities: every I/O (router gRPC, job store, file storage) happens here, never in
the workflow."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from time import perf_counter_ns

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from aisf.services.clients.router_client import RouterClient
from aisf.services.common import call_context
from aisf.services.common.errors import AisfError, EngineOutOfMemory
from aisf.services.common.request_log import SUCCESS, RequestLog
from aisf.services.job.batch_output import BatchFinalizer
from aisf.services.job.model import Answer, JobKind, JobState, StoredItem, item_error_body
from aisf.services.job.payload_redaction import PayloadRedactor
from aisf.services.job.store import JobStore
from aisf.workflows.item_runner import ItemRunner
from aisf.workflows.types import (
    FINALIZE_BATCH,
    FINISH_JOB,
    INFER_ITEMS,
    NON_RETRYABLE,
    WORKER_SHUTDOWN,
    FinalizeBatchInput,
    FinishJobInput,
    InferItemsInput,
)

log = logging.getLogger(__name__)

# Items read, answered and saved together; the heartbeat checkpoint advances per group.
GROUP = 16
# Heartbeats go out this often (at least) while a group runs: a group of slow generations must not look
# like a dead worker to Temporal, which would start a second attempt beside the running one.
_BEAT_EVERY_S = 5.0
# How long a group that failed or is being stopped waits for the pii role before it keeps its answers sealed
# (they are saved either way: an answered item is never answered twice).
_INTERRUPTED_REDACTION_S = 5.0


def _beat_interval(timeout: timedelta | None) -> float:
    return min(_BEAT_EVERY_S, timeout.total_seconds() / 3) if timeout else _BEAT_EVERY_S


async def _beat(checkpoint: Callable[[], int], every_s: float) -> None:
    """Heartbeat the last saved checkpoint until cancelled (the SDK throttles what it sends)."""
    while True:
        await asyncio.sleep(every_s)
        activity.heartbeat(checkpoint())


class JobActivities:
    def __init__(
        self,
        store: JobStore,
        router: RouterClient,
        finalizer: BatchFinalizer,
        concurrency: int = 8,
        request_log: RequestLog | None = None,
        redactor: PayloadRedactor | None = None,
    ) -> None:
        self._store = store
        self._runner = ItemRunner(router)
        self._finalizer = finalizer
        self._concurrency = concurrency
        self._request_log = request_log or RequestLog()
        self._redactor = redactor

    @activity.defn(name=INFER_ITEMS)
    async def infer_items(self, params: InferItemsInput) -> int:
        """Answer items from the last checkpoint on, the items of a group at once (a batching engine
        merges them); a SIGTERM'd worker saves, checkpoints and hands over. Out of memory saves what was
        answered and says where the next attempt starts; an item already answered never runs again."""
        started = perf_counter_ns()
        # The router's request log names each item's lane and tenant (this activity's task only).
        call_context.lane.set(call_context.JOB)
        call_context.tenant.set(params.tenant)
        call_context.request_id.set(params.job_id)
        info = activity.info()
        checkpoint = int(info.heartbeat_details[0]) if info.heartbeat_details else 0
        resumed = max(checkpoint, params.resume_from)
        await self._store.mark_running(params.job_id, info.attempt, resumed)
        if params.batch:
            await self._finalizer.in_progress(params.job_id)
        done = resumed
        beating = asyncio.ensure_future(_beat(lambda: done, _beat_interval(info.heartbeat_timeout)))
        outcome = SUCCESS
        try:
            while done < params.items_total:
                items = await self._store.items(params.job_id, done, GROUP)
                if not items:
                    break
                done = await self._group(items, params)
                if activity.is_worker_shutdown():
                    # Benign: a planned hand-over (spot reclaim), not a failure worth a traceback.
                    raise ApplicationError(
                        f"worker shutting down; the job resumes at item {done}",
                        done,
                        type=WORKER_SHUTDOWN,
                        category=ApplicationErrorCategory.BENIGN,
                    )
        except ApplicationError as error:
            outcome = error.type or "failed"
            raise
        except BaseException as error:
            outcome = getattr(error, "reason", None) or type(error).__name__
            raise
        finally:
            beating.cancel()
            self._log(params, info.attempt, resumed, done, outcome, perf_counter_ns() - started)
        return done

    def _log(
        self, params: InferItemsInput, attempt: int, resumed: int, done: int, outcome: str, elapsed_ns: int
    ) -> None:
        fields: dict[str, object] = {
            "job_id": params.job_id,
            "model": params.model_name,
            "version": params.model_version,
            "kind": params.kind,
            "attempt": attempt,
            "items_from": resumed,
            "items_done": done,
            "items_total": params.items_total,
        }
        self._request_log.write("job activity", outcome, elapsed_ns, fields)

    async def _group(self, items: list[StoredItem], params: InferItemsInput) -> int:
        """Answer one group; save every answer it got, whatever ended it, and return the checkpoint: the
        first item not answered (the first failed one, or one a shutdown left), else past the group."""
        slots = asyncio.Semaphore(self._concurrency)

        async def answer(item: StoredItem) -> Answer | None:
            async with slots:
                if activity.is_worker_shutdown():
                    return None
                return await self._answer(item.idx, item.request, params)

        # Answered before (a malformed batch line at submit, or an attempt stopped mid-group): not again.
        running = {asyncio.ensure_future(answer(item)): item for item in items if item.response is None}
        unanswered = {item.idx for item in running.values()}
        failure: tuple[int, BaseException] | None = None  # the first failed item's
        answers: list[Answer] = []
        interrupted = False
        try:
            if running:
                await asyncio.wait(running)
        except BaseException:
            interrupted = True
            raise
        finally:
            for task, item in running.items():
                if not task.done():
                    task.cancel()
                elif task.cancelled():
                    continue
                elif (error := task.exception()) is not None:
                    if failure is None or item.idx < failure[0]:
                        failure = (item.idx, error)
                elif (found := task.result()) is not None:
                    answers.append(found)
                    unanswered.discard(item.idx)
            done = min(unanswered, default=items[-1].idx + 1)
            answers = await self._redacted(answers, items, params, interrupted or failure is not None)
            await asyncio.shield(self._store.save_responses(params.job_id, answers, done))
            activity.heartbeat(done)
        if failure is not None:
            raise failure[1]
        return done

    async def _redacted(
        self, answers: list[Answer], items: list[StoredItem], params: InferItemsInput, hurry: bool
    ) -> list[Answer]:
        """The group's answers with their requests, redacted by the pii role (waiting for it while it is
        unavailable); an answer it cannot redact is kept as it is, which the store seals. A group that
        failed or is stopping (`hurry`) waits at most _INTERRUPTED_REDACTION_S, then is kept sealed."""
        if self._redactor is None or not answers:
            return answers
        requests = {item.idx: item.request for item in items}
        cleaning = self._redactor.clean(
            JobKind(params.kind), [requests[a.idx] for a in answers], [a.response for a in answers]
        )
        try:
            if hurry or activity.is_worker_shutdown():
                cleaned = await asyncio.wait_for(cleaning, _INTERRUPTED_REDACTION_S)
            else:
                cleaned = await cleaning
        except (TimeoutError, AisfError) as error:
            log.warning(
                "answered job items kept sealed, not redacted",
                extra={"job_id": params.job_id, "items": len(answers), "error": type(error).__name__},
            )
            return answers
        return [
            # What the redactor could not read stays whole, sealed.
            answer if request is None or response is None
            else replace(answer, response=response, redacted_request=request)
            for answer, request, response in zip(answers, *cleaned, strict=True)
        ]  # fmt: skip

    async def _answer(self, idx: int, raw: bytes, params: InferItemsInput) -> Answer:
        kind = JobKind(params.kind)
        try:
            response = await self._runner.answer(idx, raw, params)
        except EngineOutOfMemory as error:
            rows = self._runner.rows_run(raw, params)
            # Details: the rows that did not fit, and the first item not yet answered.
            raise ApplicationError(error.message, rows, idx, type=error.reason, non_retryable=True) from None
        except AisfError as error:
            if params.batch and error.reason in NON_RETRYABLE:
                # The line's own failure (not the engine's): its answer is the error, for the error file.
                return Answer(idx, item_error_body(error, kind), error.http_status)
            retryable = error.reason not in NON_RETRYABLE
            # An open circuit says when it may close: retrying sooner only spends an attempt.
            after = error.retry_after or 0
            wait = timedelta(seconds=after) if after > 1 else None
            raise ApplicationError(
                error.message, type=error.reason, non_retryable=not retryable, next_retry_delay=wait
            ) from None
        return Answer(idx, response, 200 if params.batch else None)

    @activity.defn(name=FINISH_JOB)
    async def finish_job(self, outcome: FinishJobInput) -> None:
        await self._store.finish(
            outcome.job_id, JobState(outcome.state), outcome.error_type, outcome.error_message
        )

    @activity.defn(name=FINALIZE_BATCH)
    async def finalize_batch(self, outcome: FinalizeBatchInput) -> None:
        """Write a batch's output and error files (lines answered so far) and its final status."""
        await self._finalizer.finalize(
            outcome.batch_id, outcome.status, outcome.error_code, outcome.error_message
        )
