"""The job dataplane behind JobService (gRPC) and /v1/jobs (REST): submit, read, watch, cancel, list."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import (
    Priority,
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from aisf.services.common import tracing
from aisf.services.common.auth import tenancy
from aisf.services.common.db.tables import Base
from aisf.services.common.errors import InvalidInput, JobAlreadyFinished, JobNotFound
from aisf.services.common.settings import Settings
from aisf.services.job.model import Job, JobFilter, JobKind, JobState, NewItem
from aisf.services.job.outbox import OutboxDispatcher
from aisf.services.job.store import JobStore
from aisf.services.job.submit_checks import SubmitChecks
from aisf.services.job.temporal import start_refused, unavailable
from aisf.workflows.batch_inference import BatchInferenceWorkflow
from aisf.workflows.types import JobInput

_TENANT = SearchAttributeKey.for_keyword("AisfTenant")
_MODEL = SearchAttributeKey.for_keyword("AisfModel")
_TIER = SearchAttributeKey.for_keyword("AisfTier")
_MAX_PENDING_TRACES = 10_000
_RPC_TIMEOUT = timedelta(seconds=5)
_WATCH_INTERVAL_S = 0.1
_WATCH_MAX_INTERVAL_S = 1.0
_RECONCILE_EVERY_S = 5.0
_RECONCILE_MEMORY = 10_000


@dataclass(frozen=True, slots=True)
class Submission:
    model_name: str
    model_version: str
    requests: Sequence[bytes]
    tenant: str
    idempotency_key: str | None = None
    priority: int = 0
    kind: JobKind = JobKind.V2
    tier: str = ""
    """The tenant's tier (JobService.tier_for); empty: what the caller's key or the settings say."""


@dataclass(frozen=True, slots=True)
class ResultPage:
    responses: list[bytes]
    next_page_token: str
    kind: JobKind


@dataclass(frozen=True, slots=True)
class JobView:
    """A job, plus its responses when they are small enough to come inline."""

    job: Job
    responses: list[bytes] | None = None


class JobService:
    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        temporal: Client,
        checks: SubmitChecks,
        tenant_tier: Callable[[str], Awaitable[str | None]] | None = None,
    ) -> None:
        """`tenant_tier`: a tenant's tier from the tenants table (with keys on)."""
        self._settings = settings
        self._tenant_tier = tenant_tier
        self._store = store
        self._temporal = temporal
        self._last_reconciled: dict[str, float] = {}
        self._checks = checks
        self._outbox = OutboxDispatcher(store, self._start_accepted)
        # Trace context of submits whose workflow the outbox has yet to start (this process's only:
        # a job a restart starts begins a trace of its own).
        self._traces: dict[str, dict[str, str]] = {}

    def start(self) -> None:
        """Start the outbox dispatcher: workflows of jobs accepted before a restart start now."""
        self._outbox.run_in_background()

    async def close(self) -> None:
        await self._outbox.close()

    async def submit(self, submission: Submission) -> tuple[Job, bool]:
        """Validate against the model, then make the job durable (job, items and outbox row in one
        transaction) and answer: the workflow starts right after, from the outbox, even if Temporal is
        down now. With AISF_JOB_ACK=started the answer waits for the workflow start instead."""
        submission = replace(submission, tier=await self.tier_for(submission.tenant))
        if submission.idempotency_key:
            existing = await self._store.by_idempotency_key(submission.tenant, submission.idempotency_key)
            if existing is not None:
                return existing, False
        await self._checks.check(
            submission.kind, submission.model_name, submission.model_version, submission.requests
        )
        job = self.new_job(submission)
        durable = self._settings.job_ack == "durable"
        job, created = await self._store.create(
            job, [NewItem(r) for r in submission.requests], outbox=durable
        )
        if not created:
            return job, False
        if durable:
            if tracing.enabled():
                self._remember_trace(job.job_id)
            self._outbox.wake()
            return job, True
        try:
            await self._start_workflow(job)
        except (RPCError, RuntimeError) as error:
            await self._store.delete(job.job_id)
            raise unavailable(error) from None
        return job, True

    def new_job(
        self,
        submission: Submission,
        job_id: str = "",
        batch: bool = False,
        expires_at: datetime | None = None,
    ) -> Job:
        """A queued job for `submission`, at its tenant tier's priority."""
        tier, priority = self._priority(
            submission.tier or self._known_tier(submission.tenant), submission.priority
        )
        return Job(
            job_id=job_id or f"job-{uuid.uuid4().hex}",
            state=JobState.QUEUED,
            model_name=submission.model_name,
            model_version=submission.model_version,
            tenant=submission.tenant,
            tier=tier,
            priority=priority,
            items_total=len(submission.requests),
            items_done=0,
            attempts=0,
            resumed_from=0,
            error_type="",
            error_message="",
            create_time=datetime.now(UTC),
            start_time=None,
            end_time=None,
            idempotency_key=submission.idempotency_key or None,
            kind=submission.kind,
            batch=batch,
            expires_at=expires_at,
        )

    async def _start_accepted(self, job: Job) -> None:
        """The outbox's start of one job; a workflow a repeat start finds already there is the job's own.
        A job cancelled before or while it started gets its workflow (if any) cancelled too: the row
        goes in one transaction with reading the job's state, so no cancel slips between them."""
        current = await self._store.get(job.job_id)
        if current is None or current.state.final:
            self._traces.pop(job.job_id, None)
            await self._cancel_workflow(job.job_id)  # one a crashed earlier start may have left
            await self._store.outbox_started(job.job_id)
            return
        try:
            with tracing.resumed(self._traces.get(job.job_id)):
                await self._start_workflow(current)
        except WorkflowAlreadyStartedError:
            pass
        except (RPCError, RuntimeError) as error:
            raise start_refused(error) from None
        self._traces.pop(job.job_id, None)
        if not await self._store.outbox_started(job.job_id):
            await self._cancel_workflow(job.job_id)

    def _remember_trace(self, job_id: str) -> None:
        if len(self._traces) >= _MAX_PENDING_TRACES:
            self._traces.pop(next(iter(self._traces)))
        self._traces[job_id] = tracing.capture()

    async def _cancel_workflow(self, job_id: str) -> None:
        with contextlib.suppress(RPCError, RuntimeError):  # none there: nothing to cancel
            await self._temporal.get_workflow_handle(job_id).cancel(rpc_timeout=_RPC_TIMEOUT)

    async def _start_workflow(self, job: Job) -> None:
        settings = self._settings
        await self._temporal.start_workflow(
            BatchInferenceWorkflow.run,
            JobInput(
                job.job_id,
                job.model_name,
                job.model_version,
                job.items_total,
                max_attempts=settings.job_max_attempts,
                heartbeat_timeout_s=settings.job_heartbeat_timeout_s,
                large_task_queue=settings.job_large_task_queue,
                kind=job.kind.value,
                tenant=job.tenant,
                batch=job.batch,
                expires_in_s=_seconds_left(job.expires_at),
            ),
            id=job.job_id,
            # A job runs once: a second start (another dispatcher, after a restart) must not rerun it.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            task_queue=settings.job_task_queue,
            priority=Priority(priority_key=job.priority),
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(_TENANT, job.tenant),
                    SearchAttributePair(_MODEL, job.model_name),
                    SearchAttributePair(_TIER, job.tier),
                ]
            ),
            static_summary=f"{job.model_name}: {job.items_total} requests for {job.tenant} ({job.tier})",
            rpc_timeout=_RPC_TIMEOUT,
        )

    async def accept(self, job: Job, items: Sequence[NewItem], also: Sequence[Base] = ()) -> None:
        """Make an already checked job durable (with `also`: rows of its own, e.g. a batch's) and have
        its workflow started from the outbox."""
        await self._store.create(job, items, outbox=True, also=also)
        self._outbox.wake()

    async def tier_for(self, tenant: str) -> str:
        """The tenant's tier: as the caller's key says for its own tenant, as the tenants table says for
        a tenant an admin key acts for, as the settings say with auth off."""
        if known := tenancy.tier_of(tenant):
            return known
        if self._tenant_tier is not None and (listed := await self._tenant_tier(tenant)):
            return listed
        return self._configured_tier(tenant)

    def _known_tier(self, tenant: str) -> str:
        return tenancy.tier_of(tenant) or self._configured_tier(tenant)

    def _configured_tier(self, tenant: str) -> str:
        settings = self._settings
        return settings.tenant_tiers.get(tenant, settings.default_tier)

    def _priority(self, tier: str, asked: int) -> tuple[str, int]:
        settings = self._settings
        granted = settings.tier_priorities.get(tier, 3)
        if asked == 0:
            return tier, granted
        if not granted <= asked <= 5:
            raise InvalidInput(f"priority: {asked} is not allowed for tier '{tier}' (allowed {granted}..5)")
        return tier, asked

    async def get(self, job_id: str) -> JobView:
        job = await self.current(job_id)
        if job.state is not JobState.SUCCEEDED:
            return JobView(job)
        if await self._store.result_size(job_id) > self._settings.job_inline_result_bytes:
            return JobView(job)
        return JobView(job, await self._store.responses(job_id, 0, job.items_total))

    async def current(self, job_id: str, batch: bool = False) -> Job:
        """The job as its workflow says it is now (see _reconciled)."""
        return await self._reconciled(await self._job(job_id, batch))

    async def _job(self, job_id: str, batch: bool = False) -> Job:
        """The job; a batch's job only when asked for one (the jobs API never shows a batch: its lines,
        files and status belong to the Batch API)."""
        job = await self._store.get(job_id)
        if job is None or job.batch != batch or not tenancy.visible(job.tenant):
            raise JobNotFound(f"unknown job '{job_id}'")
        return job

    async def _reconciled(self, job: Job) -> Job:
        """The workflow is the source of truth: a workflow ended outside our activities (terminated,
        timed out) is written back so the table never shows a dead job as running."""
        if job.state.final:
            self._last_reconciled.pop(job.job_id, None)
            return job
        if not self._due_for_reconciling(job.job_id):
            return job
        try:
            status = (
                await self._temporal.get_workflow_handle(job.job_id).describe(rpc_timeout=_RPC_TIMEOUT)
            ).status
        except (RPCError, RuntimeError):
            return job
        ended = {
            WorkflowExecutionStatus.TERMINATED: JobState.FAILED,
            WorkflowExecutionStatus.TIMED_OUT: JobState.FAILED,
            WorkflowExecutionStatus.CANCELED: JobState.CANCELLED,
        }
        if status in ended:
            await self._store.finish(
                job.job_id, ended[status], "workflow_ended", f"workflow {status.name.lower()}"
            )
            return await self._job(job.job_id, job.batch)
        return job

    def _due_for_reconciling(self, job_id: str) -> bool:
        """At most one describe per job every few seconds: pollers must not load Temporal, and a GET
        during a Temporal outage should not wait for its timeout each time."""
        now = time.monotonic()
        if now - self._last_reconciled.get(job_id, -_RECONCILE_EVERY_S) < _RECONCILE_EVERY_S:
            return False
        if len(self._last_reconciled) > _RECONCILE_MEMORY:
            recent = {k: t for k, t in self._last_reconciled.items() if now - t < _RECONCILE_EVERY_S}
            self._last_reconciled = recent
        self._last_reconciled[job_id] = now
        return True

    async def watch(self, job_id: str) -> AsyncIterator[Job]:
        """The job on every change, until it ends. Reconciled with its workflow like a GET (a workflow
        terminated outside aisf ends the watch as failed); polls back off to once a second."""
        last: Job | None = None
        interval = _WATCH_INTERVAL_S
        while True:
            job = await self._reconciled(await self._job(job_id))
            if job != last:
                yield job
                last, interval = job, _WATCH_INTERVAL_S
            if job.state.final:
                return
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, _WATCH_MAX_INTERVAL_S)

    async def cancel(self, job_id: str, batch: bool = False) -> Job:
        job = await self._job(job_id, batch)
        if job.state.final:
            raise JobAlreadyFinished(f"job '{job_id}' already {job.state.value}; nothing to cancel")
        if await self._store.cancel_unstarted(job_id):
            return await self._job(job_id, batch)
        try:
            await self._temporal.get_workflow_handle(job_id).cancel(rpc_timeout=_RPC_TIMEOUT)
        except (RPCError, RuntimeError) as error:
            raise unavailable(error) from None
        return job

    async def list_jobs(self, where: JobFilter, page_size: int, page_token: str) -> tuple[list[Job], str]:
        if not 0 <= page_size <= 500:
            raise InvalidInput(f"page_size: must be within 0..500, got {page_size}")
        return await self._store.list(where, page_size or 50, page_token)

    async def result(self, job_id: str, page_size: int, page_token: str) -> ResultPage:
        job = await self._job(job_id)
        if job.state is not JobState.SUCCEEDED:
            raise JobAlreadyFinished(f"job '{job_id}' is {job.state.value}; results exist once it succeeded")
        if not 0 <= page_size <= 1000 or (page_token and not page_token.isdigit()):
            raise InvalidInput("page_size must be within 0..1000 and page_token one this service issued")
        offset, size = int(page_token or 0), page_size or 100
        responses = await self._store.responses(job_id, offset, size)
        following = offset + len(responses)
        return ResultPage(responses, str(following) if following < job.items_total else "", job.kind)


def _seconds_left(moment: datetime | None) -> float:
    """Seconds until `moment` (0: no expiry; a moment already past leaves the workflow a second)."""
    if moment is None:
        return 0.0
    return max(1.0, (moment - datetime.now(UTC)).total_seconds())
