"""The job store keeps history consistent on SQLite and PostgreSQL: idempotency, exactly-once, paging."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aisf.services.common.db.engine import open_database
from aisf.services.common.errors import InvalidInput
from aisf.services.job.model import Job, JobFilter, JobState
from aisf.services.job.store import JobStore
from tests.support.databases import fresh_database


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    with fresh_database(request.param, tmp_path) as url:
        database = open_database(url)
        yield JobStore(database)
        database.close()


def _job(job_id: str, key: str | None = None, tenant: str = "t", minutes: int = 0) -> Job:
    return Job(
        job_id=job_id,
        state=JobState.QUEUED,
        model_name="m",
        model_version="",
        tenant=tenant,
        tier="standard",
        priority=3,
        items_total=3,
        items_done=0,
        attempts=0,
        resumed_from=0,
        error_type="",
        error_message="",
        create_time=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes),
        start_time=None,
        end_time=None,
        idempotency_key=key,
    )


async def test_an_idempotency_key_maps_to_one_job_per_tenant(store: JobStore) -> None:
    first, created = await store.create(_job("j1", key="k"), [b"a", b"b", b"c"])
    again, created_again = await store.create(_job("j2", key="k"), [b"x"])
    other, created_other = await store.create(_job("j3", key="k", tenant="u"), [b"y"])
    assert (created, created_again, created_other) == (True, False, True)
    assert again.job_id == "j1" and other.job_id == "j3"
    assert await store.items("j1", 0, 10) == [(0, b"a"), (1, b"b"), (2, b"c")]
    assert await store.get("j2") is None


async def test_rerun_items_overwrite_so_each_response_appears_once(store: JobStore) -> None:
    await store.create(_job("j1"), [b"a", b"b", b"c"])
    await store.mark_running("j1", attempt=1, resumed_from=0)
    await store.save_responses("j1", [(0, b"r0"), (1, b"r1")], done=2)
    await store.mark_running("j1", attempt=2, resumed_from=1)
    await store.save_responses("j1", [(1, b"r1'"), (2, b"r2")], done=3)
    await store.save_responses("j1", [], done=1)
    assert await store.responses("j1", 0, 10) == [b"r0", b"r1'", b"r2"]
    job = await store.get("j1")
    assert job is not None
    assert (job.state, job.items_done, job.attempts, job.resumed_from) == (JobState.RUNNING, 3, 2, 1)
    await store.finish("j1", JobState.SUCCEEDED)
    await store.finish("j1", JobState.FAILED, "late", "ignored")
    finished = await store.get("j1")
    assert finished is not None and finished.state is JobState.SUCCEEDED and finished.end_time is not None


async def test_list_pages_newest_first_with_filters(store: JobStore) -> None:
    for minute in range(5):
        await store.create(_job(f"j{minute}", minutes=minute), [b"a"])
    await store.finish("j4", JobState.CANCELLED)
    page, token = await store.list(JobFilter(), 2, "")
    rest, last = await store.list(JobFilter(), 3, token)
    assert [j.job_id for j in page + rest] == ["j4", "j3", "j2", "j1", "j0"]
    assert last
    cancelled, _ = await store.list(JobFilter(state=JobState.CANCELLED), 10, "")
    assert [j.job_id for j in cancelled] == ["j4"]
    with pytest.raises(InvalidInput, match="page_token"):
        await store.list(JobFilter(), 2, "not-a-token")


async def test_delete_removes_a_job_and_its_items(store: JobStore) -> None:
    await store.create(_job("j1"), [b"a"])
    await store.delete("j1")
    assert await store.get("j1") is None
    assert await store.items("j1", 0, 10) == []
