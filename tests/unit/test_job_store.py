"""The job store keeps history consistent on SQLite and PostgreSQL: idempotency, exactly-once, paging."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from aisf.services.common.db.engine import open_database
from aisf.services.common.db.tables import JobItemRow
from aisf.services.common.errors import InvalidInput
from aisf.services.common.sealing import PayloadSeal, is_sealed
from aisf.services.job.model import Answer, Job, JobFilter, JobState, NewItem
from aisf.services.job.store import JobStore
from tests.support.databases import fresh_database


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    with fresh_database(request.param, tmp_path) as url:
        database = open_database(url)
        yield JobStore(database, PayloadSeal(os.urandom(32)))
        database.close()


def _job(
    job_id: str, key: str | None = None, tenant: str = "t", minutes: int = 0, batch: bool = False
) -> Job:
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
        batch=batch,
    )


def _items(*requests: bytes) -> list[NewItem]:
    return [NewItem(r) for r in requests]


async def test_an_idempotency_key_maps_to_one_job_per_tenant(store: JobStore) -> None:
    first, created = await store.create(_job("j1", key="k"), _items(b"a", b"b", b"c"))
    again, created_again = await store.create(_job("j2", key="k"), _items(b"x"))
    other, created_other = await store.create(_job("j3", key="k", tenant="u"), _items(b"y"))
    assert (created, created_again, created_other) == (True, False, True)
    assert again.job_id == "j1" and other.job_id == "j3"
    assert [(i.idx, i.request) for i in await store.items("j1", 0, 10)] == [(0, b"a"), (1, b"b"), (2, b"c")]
    assert await store.get("j2") is None


def _stored_rows(store: JobStore, job_id: str) -> list[tuple[bytes, bytes | None]]:
    with Session(store._engine) as session:
        query = (
            select(JobItemRow.request, JobItemRow.response)
            .where(JobItemRow.job_id == job_id)
            .order_by(JobItemRow.idx)
        )
        return [
            (bytes(request), None if response is None else bytes(response))
            for request, response in session.execute(query)
        ]


async def test_items_are_sealed_at_rest_until_a_redacted_answer_replaces_them(store: JobStore) -> None:
    await store.create(
        _job("j1"), [NewItem(b"call 010-1234-5678"), NewItem(b"mail a@b.kr", response=b"bad a@b.kr")]
    )
    rows = _stored_rows(store, "j1")
    assert all(is_sealed(request) and b"010-1234" not in request for request, _ in rows)
    assert rows[1][1] is not None and is_sealed(rows[1][1])
    await store.save_responses(
        "j1", [Answer(0, b"answer <PHONE_NUMBER>", redacted_request=b"call <PHONE_NUMBER>")], done=1
    )
    (request, response), (sealed_request, sealed_response) = _stored_rows(store, "j1")[:2]
    assert (request, response) == (b"call <PHONE_NUMBER>", b"answer <PHONE_NUMBER>")
    assert is_sealed(sealed_request) and sealed_response is not None and is_sealed(sealed_response)
    assert [i.request for i in await store.items("j1", 0, 10)] == [b"call <PHONE_NUMBER>", b"mail a@b.kr"]
    assert await store.responses("j1", 0, 10) == [b"answer <PHONE_NUMBER>", b"bad a@b.kr"]


async def test_rerun_items_overwrite_so_each_response_appears_once(store: JobStore) -> None:
    await store.create(_job("j1"), _items(b"a", b"b", b"c"))
    await store.mark_running("j1", attempt=1, resumed_from=0)
    await store.save_responses("j1", [Answer(0, b"r0"), Answer(1, b"r1")], done=2)
    await store.mark_running("j1", attempt=2, resumed_from=1)
    await store.save_responses("j1", [Answer(1, b"r1'"), Answer(2, b"r2")], done=3)
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
        await store.create(_job(f"j{minute}", minutes=minute), _items(b"a"))
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
    await store.create(_job("j1"), _items(b"a"))
    await store.delete("j1")
    assert await store.get("j1") is None
    assert await store.items("j1", 0, 10) == []


async def test_an_accepted_job_stays_in_the_outbox_until_its_workflow_started(store: JobStore) -> None:
    await store.create(_job("j1"), _items(b"a"))
    await store.create(_job("j2", minutes=1), _items(b"b"))
    await store.create(_job("j3", minutes=2), _items(b"c"), outbox=False)  # started before answering
    assert [j.job_id for j in await store.due_outbox(10)] == ["j1", "j2"]
    await store.outbox_postponed("j1", "Temporal is down", delay_s=60)
    await store.outbox_started("j2")
    assert await store.due_outbox(10) == []  # j1 waits its backoff, j2 is started


async def test_a_job_cancelled_before_its_start_leaves_the_outbox_cancelled(store: JobStore) -> None:
    await store.create(_job("j1"), _items(b"a"))
    assert await store.cancel_unstarted("j1")
    assert not await store.cancel_unstarted("j1")  # no outbox row left: its workflow is the one to cancel
    job = await store.get("j1")
    assert job is not None and job.state is JobState.CANCELLED and job.end_time is not None
    assert await store.due_outbox(10) == []


async def test_items_keep_their_batch_status_and_counts(store: JobStore) -> None:
    items = [NewItem(b"a", "c1"), NewItem(b"", "c2", 400, b'{"error": "bad"}'), NewItem(b"c", "c3")]
    await store.create(_job("j1"), items)
    await store.save_responses("j1", [Answer(0, b"ok", 200), Answer(2, b"{}", 503)], done=3)
    stored = await store.items("j1", 0, 10)
    assert [(i.custom_id, i.status) for i in stored] == [("c1", 200), ("c2", 400), ("c3", 503)]
    assert await store.status_counts("j1") == {200: 1, 400: 1, 503: 1}


async def test_a_start_that_finds_its_job_cancelled_meanwhile_says_so(store: JobStore) -> None:
    """The dispatcher read the job, a cancel took its outbox row while the workflow was starting: the
    start's bookkeeping reports it, so the dispatcher cancels the workflow it just started."""
    await store.create(_job("j1"), _items(b"a"))
    await store.create(_job("j2"), _items(b"b"))
    assert await store.cancel_unstarted("j1")
    assert not await store.outbox_started("j1")
    assert await store.outbox_started("j2")


async def test_postponing_a_start_counts_its_attempts(store: JobStore) -> None:
    await store.create(_job("j1"), _items(b"a"))
    assert [await store.outbox_postponed("j1", "refused", 0) for _ in range(3)] == [1, 2, 3]
    await store.outbox_started("j1")
    assert await store.outbox_postponed("j1", "refused", 0) == 0  # started: nothing left to postpone


async def test_the_jobs_list_and_the_batch_jobs_are_apart(store: JobStore) -> None:
    await store.create(_job("plain"), _items(b"a"))
    await store.create(_job("batch", batch=True, minutes=1), _items(b"b"))
    jobs, _ = await store.list(JobFilter(tenant="t"), 10, "")
    batches, _ = await store.list(JobFilter(tenant="t", batch=True), 10, "")
    assert [j.job_id for j in jobs] == ["plain"] and [j.job_id for j in batches] == ["batch"]
