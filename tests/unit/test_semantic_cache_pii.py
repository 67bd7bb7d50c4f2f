"""The semantic cache keeps no personal data: an answer is kept only after the pii service cleared it and
its prompt, off the request's path; a cache that cannot check keeps nothing."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from aisf.services.clients.pii_client import PiiClient
from aisf.services.common.llm_types import Usage
from aisf.services.common.settings import Settings
from aisf.services.pii.servicer import PiiLane
from aisf.services.router.semantic_cache import CacheKey, Embedding, SemanticCache
from aisf.services.router.semantic_index import CachedAnswer, MemoryIndex


async def _same_vector(text: str) -> Embedding:
    return Embedding(np.asarray([1.0, 0.0], dtype=np.float32), "embed:1")


@pytest.fixture(scope="module")
async def pii(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PiiLane]:
    lane = PiiLane(Settings(data_dir=Path(tmp_path_factory.mktemp("pii"))))
    lane.start()
    await lane.analyzer()
    yield lane
    await lane.close()


def _cache(check: object, skipped: Counter[str]) -> SemanticCache:
    cache = SemanticCache(MemoryIndex(60, 10), _same_vector, threshold=0.9)
    cache.use_personal_data_check(check, lambda reason: skipped.update([reason]))  # type: ignore[arg-type]
    return cache


def _answer(text: str) -> CachedAnswer:
    return CachedAnswer((text,), ("stop",), Usage(5, 2))


@pytest.mark.parametrize(
    ("prompt", "answer", "kept"),
    [
        ("What is the capital of France?", "Paris.", True),
        ("내 번호 010-1234-5678 로 문자해줘", "알겠습니다.", False),
        ("Write to my friend", "Dear John Smith, see you at jane.doe@example.com", False),
    ],
)
async def test_only_answers_without_personal_data_are_kept(
    pii: PiiLane, prompt: str, answer: str, kept: bool
) -> None:
    skipped: Counter[str] = Counter()
    cache = _cache(pii.holds_personal_data, skipped)
    key = CacheKey("scope", prompt)
    await cache.store(await cache.lookup(key), _answer(answer))
    assert ((await cache.lookup(key)).result == "hit") is kept
    assert skipped == (Counter() if kept else Counter({"personal_data": 1}))


async def test_a_cache_that_cannot_reach_the_pii_service_keeps_nothing(tmp_path: Path) -> None:
    client = PiiClient(f"unix://{tmp_path / 'nobody.sock'}", 1024 * 1024, timeout_s=0.5)
    skipped: Counter[str] = Counter()
    cache = _cache(client.holds_personal_data, skipped)
    key = CacheKey("scope", "What is the capital of France?")
    await cache.store(await cache.lookup(key), _answer("Paris."))
    assert (await cache.lookup(key)).result == "miss" and skipped == Counter({"pii_unavailable": 1})
    await client.close()


async def test_the_check_runs_after_the_request_not_on_its_path() -> None:
    released = asyncio.Event()

    async def slow_check(texts: tuple[str, ...]) -> bool:
        await released.wait()
        return False

    cache = _cache(slow_check, Counter())
    key = CacheKey("scope", "What is the capital of France?")
    cache.store_later(await cache.lookup(key), _answer("Paris."))  # returns at once
    assert (await cache.lookup(key)).result == "miss"
    released.set()
    for _ in range(100):
        if (await cache.lookup(key)).result == "hit":
            break
        await asyncio.sleep(0.01)
    assert (await cache.lookup(key)).result == "hit"
