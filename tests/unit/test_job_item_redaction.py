"""The job activity keeps each answered group redacted when the pii role answers, and never loses it when
the role cannot: a group that failed or is stopping waits only briefly, then keeps its answers sealed
(saved, so never answered twice); a pii role that refuses for good leaves them sealed as well."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from aisf.services.clients.router_client import RouterClient
from aisf.services.common.db.engine import open_database
from aisf.services.common.errors import EngineUnavailable, PermissionDenied
from aisf.services.common.sealing import PayloadSeal
from aisf.services.job.batch_output import BatchFinalizer
from aisf.services.job.batch_store import BatchStore
from aisf.services.job.file_storage import LocalFileStorage
from aisf.services.job.model import Answer, StoredItem
from aisf.services.job.payload_redaction import PayloadRedactor, Redact
from aisf.services.job.store import JobStore
from aisf.workflows import activities
from aisf.workflows.activities import JobActivities
from aisf.workflows.types import InferItemsInput

PARAMS = InferItemsInput("job-1", "llm-demo", "", 1, kind="chat")
ITEM = StoredItem(
    0, orjson.dumps({"messages": [{"role": "user", "content": "call 010-1234-5678"}]}), None, None, None
)
ANSWER = Answer(
    0, orjson.dumps({"choices": [{"message": {"role": "assistant", "content": "ok 010-1234-5678"}}]})
)


async def _phones(texts: list[str]) -> list[str]:
    return [t.replace("010-1234-5678", "<PHONE_NUMBER>") for t in texts]


async def _down(texts: list[str]) -> list[str]:
    raise EngineUnavailable("pii role down")


async def _refuses(texts: list[str]) -> list[str]:
    raise PermissionDenied("not this role's token")


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Callable[[Redact], JobActivities]]:
    database = open_database(f"sqlite:///{tmp_path / 'aisf.db'}")
    store = JobStore(database, PayloadSeal(os.urandom(32)))
    storage = LocalFileStorage(tmp_path / "files")
    router = RouterClient("127.0.0.1:1", 1 << 20, 1.0, 1.0)

    def build(redact: Redact) -> JobActivities:
        redactor = PayloadRedactor(redact, 16, 1000, CollectorRegistry(), retry_s=(0.01, 0.02))
        return JobActivities(
            store, router, BatchFinalizer(store, BatchStore(database), storage), redactor=redactor
        )

    yield build
    await router.close()
    storage.close()
    database.close()


async def test_a_group_the_pii_role_answers_is_kept_redacted_with_its_request(
    make: Callable[[Redact], JobActivities], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(activities.activity, "is_worker_shutdown", lambda: False)
    (kept,) = await make(_phones)._redacted([ANSWER], [ITEM], PARAMS, hurry=False)
    assert kept.redacted_request is not None and b"<PHONE_NUMBER>" in kept.redacted_request
    assert (
        b"<PHONE_NUMBER>" in kept.response and b"010-1234-5678" not in kept.response + kept.redacted_request
    )


async def test_a_failed_group_waits_briefly_for_a_pii_role_that_is_down_then_keeps_its_answers_sealed(
    make: Callable[[Redact], JobActivities], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(activities, "_INTERRUPTED_REDACTION_S", 0.2)
    started = time.monotonic()
    kept = await make(_down)._redacted([ANSWER], [ITEM], PARAMS, hurry=True)
    assert kept == [ANSWER]  # not dropped: saved sealed, so the item is not answered again
    assert time.monotonic() - started < 2


async def test_a_pii_role_that_refuses_for_good_leaves_the_answers_sealed(
    make: Callable[[Redact], JobActivities], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(activities.activity, "is_worker_shutdown", lambda: False)
    assert await make(_refuses)._redacted([ANSWER], [ITEM], PARAMS, hurry=False) == [ANSWER]
