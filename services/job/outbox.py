"""The transactional outbox's dispatcher: starts the workflows of accepted jobs, right after each submit
and again after a crash or a Temporal outage. A start is idempotent (workflow id = job id, duplicates
rejected), so a start repeated by a restart or by a second dispatcher is harmless. An outage postpones
every start with backoff; a start Temporal refuses outright fails its job after a few tries."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aisf.services.common.errors import AisfError, EngineUnavailable
from aisf.services.job.model import Job, JobState
from aisf.services.job.store import JobStore

log = logging.getLogger(__name__)

_BATCH = 64  # jobs read per round
_STARTS_AT_ONCE = 8
_POLL_S = 1.0  # how often rows left by a crash or an outage are looked for without a wake-up
_FIRST_BACKOFF_S, _MAX_BACKOFF_S = 0.5, 10.0
# A start Temporal refuses for a reason of its own (not an outage) is tried this often, then the job fails.
_MAX_REFUSALS = 5


class OutboxDispatcher:
    def __init__(self, store: JobStore, start: Callable[[Job], Awaitable[None]]) -> None:
        self._store = store
        self._start = start
        self._woken = asyncio.Event()
        self._backoff_s = _FIRST_BACKOFF_S
        self._task: asyncio.Task[None] | None = None

    def run_in_background(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def wake(self) -> None:
        """A job was just accepted: start it now rather than at the next poll."""
        self._woken.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            self._woken.clear()
            try:
                more = await self.dispatch_once()
            except Exception as exc:  # the metadata database itself is unreachable: try again later
                log.warning("job outbox unreadable", extra={"error": repr(exc)})
                more = False
            if more:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), _POLL_S)

    async def dispatch_once(self) -> bool:
        """Start what is due; True when a full round was read (more may be due right away)."""
        jobs = await self._store.due_outbox(_BATCH)
        slots = asyncio.Semaphore(_STARTS_AT_ONCE)
        failed = False

        async def start(job: Job) -> None:
            nonlocal failed
            async with slots:
                if failed:  # Temporal refused another start of this round: it is down, wait
                    await self._store.outbox_postponed(job.job_id, "waiting for Temporal", self._backoff_s)
                    return
                try:
                    await self._start(job)
                except EngineUnavailable as error:  # an outage: this round waits, and backs off
                    failed = True
                    await self._store.outbox_postponed(job.job_id, error.message, self._backoff_s)
                    log.warning(
                        "workflow start postponed",
                        extra={"job_id": job.job_id, "reason": error.reason, "retry_in_s": self._backoff_s},
                    )
                except Exception as error:  # this job's own refusal: the others go on
                    await self._refused(job, error)

        await asyncio.gather(*(start(job) for job in jobs))
        self._backoff_s = min(self._backoff_s * 2, _MAX_BACKOFF_S) if failed else _FIRST_BACKOFF_S
        return len(jobs) == _BATCH and not failed

    async def _refused(self, job: Job, error: Exception) -> None:
        message = error.message if isinstance(error, AisfError) else f"{type(error).__name__}: {error}"
        attempts = await self._store.outbox_postponed(job.job_id, message, _MAX_BACKOFF_S)
        log.warning(
            "workflow start refused", extra={"job_id": job.job_id, "attempts": attempts, "error": message}
        )
        if attempts >= _MAX_REFUSALS:
            await self._store.outbox_started(job.job_id)
            await self._store.finish(job.job_id, JobState.FAILED, "workflow_start_failed", message)
