"""Opens the metadata database (SQLite embedded default, PostgreSQL by URL) at the newest schema."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import ParamSpec, TypeVar, overload

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import OperationalError

from aisf.services.common.errors import EngineUnavailable
from aisf.services.common.threads import BlockingPool

MIGRATIONS = Path(__file__).parent / "migrations"
P = ParamSpec("P")
T = TypeVar("T")


@overload
def aware(moment: datetime) -> datetime: ...
@overload
def aware(moment: None) -> None: ...
def aware(moment: datetime | None) -> datetime | None:
    """A moment read back from a timezone=True column, in UTC (SQLite hands back naive datetimes)."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


@dataclass(frozen=True, slots=True)
class Database:
    """The metadata database and the threads its blocking calls run on: its own pool, so engines busy
    on their threads never hold up a job submit or a model load record."""

    engine: Engine
    threads: BlockingPool

    async def run(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.threads.run(call, *args, **kwargs)

    def close(self) -> None:
        self.threads.close()
        self.engine.dispose()


def normalize_url(url: str) -> str:
    """Accept plain postgresql:// URLs and use the psycopg 3 driver for them."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def open_database(url: str, threads: int = 8) -> Database:
    """Create the engine and upgrade the schema; a database that cannot be reached is one clear error."""
    url = normalize_url(url)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    # One connection per database thread (and as many again for callers outside them, e.g. migrations).
    engine = create_engine(url, pool_pre_ping=True, pool_size=threads, max_overflow=threads)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except OperationalError as exc:
        engine.dispose()
        first_line = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise EngineUnavailable(
            f"metadata database {engine.url.render_as_string()} unreachable: {first_line}"
        ) from exc
    return Database(engine, BlockingPool("database", threads))


def _sqlite_pragmas(connection: object, _record: object) -> None:
    cursor = connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
