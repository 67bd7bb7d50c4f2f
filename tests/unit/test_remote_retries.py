"""Remote engines retry transient failures only, within the deadline, never while the circuit is open."""

from __future__ import annotations

import time

import pytest

from aisf.adapters.remote_retries import with_retries
from aisf.services.common import deadlines
from aisf.services.common.errors import EngineOverloaded, EngineUnavailable, InvalidInput


class Remote:
    """A call that fails with the given errors in turn, then answers."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "answer"


def _closed() -> bool:
    return False


async def test_transient_failures_are_retried_until_the_remote_answers() -> None:
    remote = Remote(EngineUnavailable("down"), EngineOverloaded("full"))
    assert await with_retries(remote, 3, _closed) == "answer"
    assert remote.calls == 3


async def test_the_last_error_is_raised_once_the_attempts_are_spent() -> None:
    remote = Remote(*(EngineUnavailable(f"down {i}") for i in range(5)))
    with pytest.raises(EngineUnavailable, match="down 2"):
        await with_retries(remote, 3, _closed)
    assert remote.calls == 3


async def test_the_callers_mistakes_are_never_retried() -> None:
    remote = Remote(InvalidInput("bad"))
    with pytest.raises(InvalidInput):
        await with_retries(remote, 3, _closed)
    assert remote.calls == 1


async def test_an_open_circuit_stops_the_retries() -> None:
    remote = Remote(EngineUnavailable("down"), EngineUnavailable("down"))
    with pytest.raises(EngineUnavailable):
        await with_retries(remote, 5, lambda: True)
    assert remote.calls == 1


async def test_retries_never_outlast_the_deadline() -> None:
    remote = Remote(*(EngineUnavailable("down") for _ in range(50)))
    started = time.monotonic()
    with deadlines.bound(0.2), pytest.raises(EngineUnavailable):
        await with_retries(remote, 50, _closed)
    assert time.monotonic() - started < 0.3
