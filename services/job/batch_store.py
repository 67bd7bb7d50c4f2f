"""Files and OpenAI batches in the metadata database (their bytes live in the file storage; a batch's lines
are its job's items)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import Select, and_, delete, or_, select
from sqlalchemy.orm import Session

from aisf.services.common.db.engine import Database, aware
from aisf.services.common.db.tables import BatchRow, FileRow

T = TypeVar("T")
R = TypeVar("R", FileRow, BatchRow)


@dataclass(frozen=True, slots=True)
class FileInfo:
    file_id: str
    tenant: str
    purpose: str
    filename: str
    size: int
    storage_key: str
    created_at: datetime

    def row(self) -> FileRow:
        return FileRow(
            file_id=self.file_id,
            tenant=self.tenant,
            purpose=self.purpose,
            filename=self.filename,
            size=self.size,
            storage_key=self.storage_key,
            created_at=self.created_at,
        )


@dataclass(frozen=True, slots=True)
class BatchInfo:
    batch_id: str
    tenant: str
    endpoint: str
    input_file_id: str
    completion_window: str
    status: str
    metadata: dict[str, str]
    output_file_id: str | None
    error_file_id: str | None
    created_at: datetime
    expires_at: datetime
    times: dict[str, datetime]

    def row(self) -> BatchRow:
        return BatchRow(
            batch_id=self.batch_id,
            tenant=self.tenant,
            endpoint=self.endpoint,
            input_file_id=self.input_file_id,
            completion_window=self.completion_window,
            status=self.status,
            metadata_json=json.dumps(self.metadata),
            output_file_id=self.output_file_id,
            error_file_id=self.error_file_id,
            created_at=self.created_at,
            expires_at=self.expires_at,
            times_json=_times_json(self.times),
        )


def _times_json(times: dict[str, datetime]) -> str:
    return json.dumps({name: moment.isoformat() for name, moment in times.items()})


def _page(session: Session, query: Select[R], row: type[R], tenant: str, after: str, limit: int) -> Select[R]:
    """Newest first (ties by id), after the tenant's row whose id is `after` when given; an id of no
    row of the tenant's is ignored alike whether it exists or not (it tells nothing of other tenants)."""
    (key,) = list(row.__table__.primary_key)
    if after:
        anchor = session.get(row, after)
        if anchor is not None and anchor.tenant == tenant:
            earlier = and_(row.created_at == anchor.created_at, key < after)
            query = query.where(or_(row.created_at < anchor.created_at, earlier))
    return query.order_by(row.created_at.desc(), key.desc()).limit(limit)


def _file(row: FileRow) -> FileInfo:
    return FileInfo(
        row.file_id, row.tenant, row.purpose, row.filename, row.size, row.storage_key, aware(row.created_at)
    )


def _batch(row: BatchRow) -> BatchInfo:
    times = {name: datetime.fromisoformat(value) for name, value in json.loads(row.times_json).items()}
    return BatchInfo(
        row.batch_id,
        row.tenant,
        row.endpoint,
        row.input_file_id,
        row.completion_window,
        row.status,
        json.loads(row.metadata_json),
        row.output_file_id,
        row.error_file_id,
        aware(row.created_at),
        aware(row.expires_at),
        times,
    )


class BatchStore:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def _run(self, work: Callable[[Session], T]) -> T:
        def in_session() -> T:
            with Session(self._database.engine, expire_on_commit=False) as session, session.begin():
                return work(session)

        return await self._database.run(in_session)

    async def add_file(self, file: FileInfo, replace: bool = False) -> None:
        """Record a file; with `replace`, one of the same id is overwritten (a rerun's output)."""
        await self._run(lambda session: session.merge(file.row()) if replace else session.add(file.row()))

    async def file(self, file_id: str, tenant: str) -> FileInfo | None:
        def find(session: Session) -> FileInfo | None:
            row = session.get(FileRow, file_id)
            return _file(row) if row is not None and row.tenant == tenant else None

        return await self._run(find)

    async def files(self, tenant: str, purpose: str, limit: int, after: str) -> list[FileInfo]:
        """Newest first, after the file `after` (its creation time) when given."""

        def read(session: Session) -> list[FileInfo]:
            query = select(FileRow).where(FileRow.tenant == tenant)
            if purpose:
                query = query.where(FileRow.purpose == purpose)
            return [_file(r) for r in session.scalars(_page(session, query, FileRow, tenant, after, limit))]

        return await self._run(read)

    async def delete_file(self, file_id: str, tenant: str) -> bool:
        def remove(session: Session) -> bool:
            removed = session.execute(
                delete(FileRow).where(FileRow.file_id == file_id, FileRow.tenant == tenant)
            )
            return bool(removed.rowcount)  # type: ignore[attr-defined]

        return await self._run(remove)

    async def batch(self, batch_id: str, tenant: str | None = None) -> BatchInfo | None:
        def find(session: Session) -> BatchInfo | None:
            row = session.get(BatchRow, batch_id)
            return _batch(row) if row is not None and tenant in (None, row.tenant) else None

        return await self._run(find)

    async def batches(self, tenant: str, limit: int, after: str) -> list[BatchInfo]:
        def read(session: Session) -> list[BatchInfo]:
            query = select(BatchRow).where(BatchRow.tenant == tenant)
            return [_batch(r) for r in session.scalars(_page(session, query, BatchRow, tenant, after, limit))]

        return await self._run(read)

    async def set_status(
        self, batch_id: str, status: str, output_file_id: str | None = None, error_file_id: str | None = None
    ) -> None:
        """Move a batch to `status` (once: its time is kept from the first move) and, at the end, name
        its output files. A final status is never left."""

        def write(session: Session) -> None:
            row = session.get(BatchRow, batch_id, with_for_update=True)
            if row is None or row.status in FINAL_STATUSES:
                return
            times = json.loads(row.times_json)
            times.setdefault(f"{status}_at", datetime.now(UTC).isoformat())
            row.status, row.times_json = status, json.dumps(times)
            if output_file_id is not None:
                row.output_file_id = output_file_id
            if error_file_id is not None:
                row.error_file_id = error_file_id

        await self._run(write)


FINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "expired"})
