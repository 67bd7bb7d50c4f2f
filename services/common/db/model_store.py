"""Model metadata and load history in SQL; written off the event loop (rare, small writes)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from aisf.services.common.db.engine import Database, aware
from aisf.services.common.db.tables import ModelEventRow, ModelVersionRow


class EventKind(StrEnum):
    LOADED = "loaded"
    UNLOADED = "unloaded"
    LOAD_FAILED = "load_failed"


_STATE_AFTER = {
    EventKind.LOADED: "READY",
    EventKind.UNLOADED: "UNAVAILABLE",
    EventKind.LOAD_FAILED: "UNAVAILABLE",
}


@dataclass(frozen=True, slots=True)
class ModelEvent:
    name: str
    version: str
    backend: str
    kind: EventKind
    reason: str
    created_at: datetime
    id: int = 0


class ModelStore:
    def __init__(self, database: Database) -> None:
        self._database = database
        self._engine = database.engine

    async def record(self, name: str, version: str, backend: str, kind: EventKind, reason: str = "") -> None:
        await self._database.run(self._record, name, version, backend, kind, reason)

    def _record(self, name: str, version: str, backend: str, kind: EventKind, reason: str) -> None:
        now = datetime.now(UTC)
        with Session(self._engine) as session, session.begin():
            row = session.get(ModelVersionRow, (name, version))
            if row is None:
                row = ModelVersionRow(name=name, version=version)
                session.add(row)
            row.backend, row.state, row.reason, row.updated_at = backend, _STATE_AFTER[kind], reason, now
            session.add(
                ModelEventRow(
                    name=name,
                    version=version,
                    backend=backend,
                    kind=kind.value,
                    reason=reason,
                    created_at=now,
                )
            )

    async def events(self, name: str = "", limit: int = 100, before_id: int = 0) -> list[ModelEvent]:
        """Newest first; `before_id` pages backwards (the last id of the previous page)."""
        return await self._database.run(self._events, name, limit, before_id)

    def _events(self, name: str, limit: int, before_id: int) -> list[ModelEvent]:
        query = select(ModelEventRow).order_by(ModelEventRow.id.desc()).limit(limit)
        if name:
            query = query.where(ModelEventRow.name == name)
        if before_id:
            query = query.where(ModelEventRow.id < before_id)
        with Session(self._engine) as session:
            return [
                ModelEvent(
                    r.name, r.version, r.backend, EventKind(r.kind), r.reason, aware(r.created_at), r.id
                )
                for r in session.scalars(query)
            ]
