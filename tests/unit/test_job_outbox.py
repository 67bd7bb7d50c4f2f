"""The outbox dispatcher: an outage postpones every start and loses nothing; a start Temporal refuses
for a reason of its own fails only that job, after a few tries."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from aisf.services.common.db.engine import open_database
from aisf.services.common.errors import EngineUnavailable
from aisf.services.common.sealing import PayloadSeal
from aisf.services.job import outbox
from aisf.services.job.model import Job, JobState, NewItem
from aisf.services.job.outbox import OutboxDispatcher
from aisf.services.job.store import JobStore
from tests.unit.test_job_store import _job


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JobStore]:
    monkeypatch.setattr(outbox, "_MAX_BACKOFF_S", 0.0)  # a refused start is due again at once
    monkeypatch.setattr(outbox, "_FIRST_BACKOFF_S", 0.0)
    database = open_database(f"sqlite:///{tmp_path / 'jobs.db'}")
    yield JobStore(database, PayloadSeal(os.urandom(32)))
    database.close()


async def test_a_start_refused_again_and_again_fails_only_its_job(store: JobStore) -> None:
    started: list[str] = []

    async def start(job: Job) -> None:
        if job.job_id == "bad":
            raise RuntimeError("namespace refuses this workflow")
        started.append(job.job_id)
        await store.outbox_started(job.job_id)  # what the job service does once its workflow started

    await store.create(_job("bad"), [NewItem(b"a")])
    await store.create(_job("good", minutes=1), [NewItem(b"b")])
    dispatcher = OutboxDispatcher(store, start)
    for _ in range(outbox._MAX_REFUSALS):
        await dispatcher.dispatch_once()
    bad = await store.get("bad")
    assert bad is not None and bad.state is JobState.FAILED and bad.error_type == "workflow_start_failed"
    assert "namespace refuses" in bad.error_message
    assert started == ["good"] and await store.due_outbox(10) == []


async def test_an_outage_postpones_starts_without_failing_them(store: JobStore) -> None:
    async def start(job: Job) -> None:
        raise EngineUnavailable("Temporal unreachable")

    await store.create(_job("j1"), [NewItem(b"a")])
    dispatcher = OutboxDispatcher(store, start)
    for _ in range(outbox._MAX_REFUSALS * 2):
        await dispatcher.dispatch_once()
    job = await store.get("j1")
    assert job is not None and job.state is JobState.QUEUED
    assert [j.job_id for j in await store.due_outbox(10)] == ["j1"]
