"""Job history and items in SQL, written by the job service (submit) and the workflow's activities."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aisf.services.common.db.engine import Database, aware
from aisf.services.common.db.tables import Base, JobItemRow, JobOutboxRow, JobRow
from aisf.services.common.errors import InvalidInput
from aisf.services.common.sealing import PayloadSeal
from aisf.services.job.model import Answer, Job, JobFilter, JobKind, JobState, NewItem, StoredItem

T = TypeVar("T")

_INSERT_CHUNK = 2_000


def _job(row: JobRow) -> Job:
    create_time = aware(row.create_time)
    assert create_time is not None
    return Job(
        job_id=row.job_id,
        state=JobState(row.state),
        model_name=row.model_name,
        model_version=row.model_version,
        tenant=row.tenant,
        tier=row.tier,
        priority=row.priority,
        items_total=row.items_total,
        items_done=row.items_done,
        attempts=row.attempts,
        resumed_from=row.resumed_from,
        error_type=row.error_type,
        error_message=row.error_message,
        create_time=create_time,
        start_time=aware(row.start_time),
        end_time=aware(row.end_time),
        idempotency_key=row.idempotency_key,
        kind=JobKind(row.kind),
        batch=row.batch,
        expires_at=aware(row.expires_at),
    )


def _cursor(job: Job) -> str:
    return base64.urlsafe_b64encode(f"{job.create_time.isoformat()}|{job.job_id}".encode()).decode()


def _parse_cursor(token: str) -> tuple[datetime, str]:
    try:
        moment, job_id = base64.urlsafe_b64decode(token.encode()).decode().split("|", 1)
        return datetime.fromisoformat(moment), job_id
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("page_token is not one this service issued") from None


def _row_context(job_id: str, idx: int, part: str) -> bytes:
    return f"{job_id}/{idx}/{part}".encode()


class JobStore:
    """Items' requests and responses are sealed at rest (`seal`), but for an answer the pii role
    redacted: that one is kept plain, with its redacted request."""

    def __init__(self, database: Database, seal: PayloadSeal) -> None:
        self._database = database
        self._engine = database.engine
        self._seal = seal

    def _sealed(self, job_id: str, idx: int, part: str, value: bytes) -> bytes:
        return self._seal.seal(value, _row_context(job_id, idx, part))

    def _opened(self, job_id: str, idx: int, part: str, value: bytes) -> bytes:
        return self._seal.open(value, _row_context(job_id, idx, part))

    async def _run(self, work: Callable[[Session], T]) -> T:
        def in_session() -> T:
            with Session(self._engine, expire_on_commit=False) as session, session.begin():
                return work(session)

        return await self._database.run(in_session)

    async def create(
        self, job: Job, items: Sequence[NewItem], outbox: bool = True, also: Sequence[Base] = ()
    ) -> tuple[Job, bool]:
        """Insert the job, its items, (with `outbox`) its outbox row and `also` (a batch's own row) in one
        transaction: once this returns, the job is durable and its workflow will be started. An
        idempotency key seen before returns that job."""

        def write(session: Session) -> Job:
            session.add(
                JobRow(
                    job_id=job.job_id,
                    kind=job.kind.value,
                    tenant=job.tenant,
                    tier=job.tier,
                    priority=job.priority,
                    idempotency_key=job.idempotency_key,
                    model_name=job.model_name,
                    model_version=job.model_version,
                    state=job.state.value,
                    items_total=job.items_total,
                    items_done=0,
                    attempts=0,
                    resumed_from=0,
                    error_type="",
                    error_message="",
                    create_time=job.create_time,
                    batch=job.batch,
                    expires_at=job.expires_at,
                )
            )
            session.flush()
            rows = [
                {
                    "job_id": job.job_id,
                    "idx": i,
                    "request": self._sealed(job.job_id, i, "request", item.request),
                    "custom_id": item.custom_id,
                    "status": item.status,
                    "response": None
                    if item.response is None
                    else self._sealed(job.job_id, i, "response", item.response),
                }
                for i, item in enumerate(items)
            ]
            # Core bulk inserts in chunks: ORM objects cost ~5x the CPU, and between chunks the thread
            # lets go of the GIL so the event loop serving inference is not starved by a large submit.
            for start in range(0, len(rows), _INSERT_CHUNK):
                session.execute(insert(JobItemRow), rows[start : start + _INSERT_CHUNK])
                time.sleep(0)
            if outbox:
                session.add(
                    JobOutboxRow(
                        job_id=job.job_id,
                        created_at=job.create_time,
                        next_attempt_at=job.create_time,
                        attempts=0,
                        last_error="",
                    )
                )
            session.add_all(also)
            return job

        try:
            return await self._run(write), True
        except IntegrityError:
            if job.idempotency_key is None:
                raise
            existing = await self.by_idempotency_key(job.tenant, job.idempotency_key)
            if existing is None:
                raise
            return existing, False

    async def by_idempotency_key(self, tenant: str, key: str) -> Job | None:
        def find(session: Session) -> Job | None:
            row = session.scalar(select(JobRow).where(JobRow.tenant == tenant, JobRow.idempotency_key == key))
            return _job(row) if row else None

        return await self._run(find)

    async def delete(self, job_id: str) -> None:
        def remove(session: Session) -> None:
            session.execute(delete(JobItemRow).where(JobItemRow.job_id == job_id))
            session.execute(delete(JobRow).where(JobRow.job_id == job_id))

        await self._run(remove)

    async def get(self, job_id: str) -> Job | None:
        def find(session: Session) -> Job | None:
            row = session.get(JobRow, job_id)
            return _job(row) if row else None

        return await self._run(find)

    async def mark_running(self, job_id: str, attempt: int, resumed_from: int) -> None:
        def write(session: Session) -> None:
            row = session.get(JobRow, job_id, with_for_update=True)
            if row is None or JobState(row.state).final:
                return
            row.state = JobState.RUNNING.value
            row.start_time = row.start_time or datetime.now(UTC)
            row.attempts = max(row.attempts, attempt)
            row.resumed_from = max(row.resumed_from, resumed_from)

        await self._run(write)

    async def save_responses(self, job_id: str, answers: Sequence[Answer], done: int) -> None:
        """Store answers by item index (a re-run overwrites, so each item appears once) and progress."""

        def write(session: Session) -> None:
            for answer in answers:
                values: dict[str, object] = {"status": answer.status}
                if answer.redacted_request is None:
                    values["response"] = self._sealed(job_id, answer.idx, "response", answer.response)
                else:
                    values.update(response=answer.response, request=answer.redacted_request)
                session.execute(
                    update(JobItemRow)
                    .where(JobItemRow.job_id == job_id, JobItemRow.idx == answer.idx)
                    .values(values)
                )
            session.execute(
                update(JobRow)
                .where(JobRow.job_id == job_id, JobRow.items_done < done)
                .values(items_done=done)
            )

        await self._run(write)

    async def finish(
        self, job_id: str, state: JobState, error_type: str = "", error_message: str = ""
    ) -> None:
        def write(session: Session) -> None:
            row = session.get(JobRow, job_id, with_for_update=True)
            if row is None or JobState(row.state).final:
                return
            row.state, row.error_type, row.error_message = state.value, error_type, error_message
            row.end_time = datetime.now(UTC)

        await self._run(write)

    async def items(self, job_id: str, offset: int, limit: int) -> list[StoredItem]:
        def read(session: Session) -> list[StoredItem]:
            query = (
                select(JobItemRow)
                .where(JobItemRow.job_id == job_id, JobItemRow.idx >= offset)
                .order_by(JobItemRow.idx)
                .limit(limit)
            )
            return [
                StoredItem(
                    r.idx,
                    self._opened(job_id, r.idx, "request", r.request),
                    r.custom_id,
                    r.status,
                    None if r.response is None else self._opened(job_id, r.idx, "response", r.response),
                )
                for r in session.scalars(query)
            ]

        return await self._run(read)

    async def status_counts(self, job_id: str) -> dict[int | None, int]:
        """How many items have each status (None: not answered yet, or answered without one)."""

        def count(session: Session) -> dict[int | None, int]:
            query = (
                select(JobItemRow.status, func.count())
                .where(JobItemRow.job_id == job_id)
                .group_by(JobItemRow.status)
            )
            return {status: int(n) for status, n in session.execute(query)}

        return await self._run(count)

    # --- the transactional outbox: jobs accepted whose workflow is not started yet ---

    async def backlog(self) -> tuple[dict[str, int], datetime | None]:
        """Jobs by state, and when the oldest job still queued was submitted (None: none waits)."""

        def read(session: Session) -> tuple[dict[str, int], datetime | None]:
            counts = session.execute(select(JobRow.state, func.count()).group_by(JobRow.state)).all()
            oldest = session.scalar(
                select(func.min(JobRow.create_time)).where(JobRow.state == JobState.QUEUED)
            )
            return {str(state): int(n) for state, n in counts}, aware(oldest)

        return await self._run(read)

    async def due_outbox(self, limit: int) -> list[Job]:
        """Jobs whose workflow start is due, oldest first. Two dispatchers may read the same row: the
        second start is harmless (the workflow id is the job id)."""

        def read(session: Session) -> list[Job]:
            query = (
                select(JobRow)
                .join(JobOutboxRow, JobOutboxRow.job_id == JobRow.job_id)
                .where(JobOutboxRow.next_attempt_at <= datetime.now(UTC))
                .order_by(JobOutboxRow.created_at)
                .limit(limit)
            )
            return [_job(r) for r in session.scalars(query)]

        return await self._run(read)

    async def outbox_started(self, job_id: str) -> bool:
        """Remove the job's outbox row once its workflow started; False when the job was cancelled
        before or while it started (a cancel took the row, or ended the job): its workflow must go."""

        def write(session: Session) -> bool:
            removed = session.execute(delete(JobOutboxRow).where(JobOutboxRow.job_id == job_id))
            row = session.get(JobRow, job_id)
            return bool(removed.rowcount) and row is not None and not JobState(row.state).final  # type: ignore[attr-defined]

        return await self._run(write)

    async def outbox_postponed(self, job_id: str, error: str, delay_s: float) -> int:
        """Try the start again in `delay_s`; the attempts made so far."""

        def write(session: Session) -> int:
            row = session.get(JobOutboxRow, job_id)
            if row is None:
                return 0
            row.attempts += 1
            row.last_error = error[:2000]
            row.next_attempt_at = datetime.now(UTC) + timedelta(seconds=delay_s)
            return row.attempts

        return await self._run(write)

    async def cancel_unstarted(self, job_id: str) -> bool:
        """Cancel a job whose workflow was never started: its outbox row goes, it ends cancelled.
        False when it has no outbox row (its workflow exists, or it is being started)."""

        def write(session: Session) -> bool:
            removed = session.execute(delete(JobOutboxRow).where(JobOutboxRow.job_id == job_id))
            if not removed.rowcount:  # type: ignore[attr-defined]
                return False
            row = session.get(JobRow, job_id, with_for_update=True)
            if row is not None and not JobState(row.state).final:
                row.state, row.end_time = JobState.CANCELLED.value, datetime.now(UTC)
                row.error_type, row.error_message = "cancelled", "cancelled before it started"
            return True

        return await self._run(write)

    async def responses(self, job_id: str, offset: int, limit: int) -> list[bytes]:
        def read(session: Session) -> list[bytes]:
            query = (
                select(JobItemRow.idx, JobItemRow.response)
                .where(JobItemRow.job_id == job_id, JobItemRow.idx >= offset)
                .order_by(JobItemRow.idx)
                .limit(limit)
            )
            return [
                self._opened(job_id, idx, "response", r) if r else b"" for idx, r in session.execute(query)
            ]

        return await self._run(read)

    async def result_size(self, job_id: str) -> int:
        def measure(session: Session) -> int:
            total = session.scalar(
                select(func.coalesce(func.sum(func.length(JobItemRow.response)), 0)).where(
                    JobItemRow.job_id == job_id
                )
            )
            return int(total or 0)

        return await self._run(measure)

    async def list(self, where: JobFilter, page_size: int, page_token: str) -> tuple[list[Job], str]:
        """Newest first, `page_size` at a time; the token resumes after the last job of a page."""

        def read(session: Session) -> list[Job]:
            query = (
                select(JobRow)
                .where(JobRow.batch == where.batch)
                .order_by(JobRow.create_time.desc(), JobRow.job_id.desc())
                .limit(page_size)
            )
            if where.state is not None:
                query = query.where(JobRow.state == where.state.value)
            if where.model_name:
                query = query.where(JobRow.model_name == where.model_name)
            if where.tenant:
                query = query.where(JobRow.tenant == where.tenant)
            if page_token:
                moment, job_id = _parse_cursor(page_token)
                query = query.where(
                    or_(
                        JobRow.create_time < moment,
                        and_(JobRow.create_time == moment, JobRow.job_id < job_id),
                    )
                )
            return [_job(r) for r in session.scalars(query)]

        jobs = await self._run(read)
        return jobs, _cursor(jobs[-1]) if len(jobs) == page_size else ""
