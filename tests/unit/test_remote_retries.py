"""Remote engines retry calls that did not reach them only, within the deadline (each retry with time
left to run), never while the circuit is open, never into a full remote."""

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
    remote = Remote(EngineUnavailable("down"), EngineUnavailable("restarting"))
    assert await with_retries(remote, 3, _closed) == "answer"
    assert remote.calls == 3


async def test_a_full_remote_is_not_retried_its_retry_after_reaches_the_caller() -> None:
    """Retrying into a remote's backpressure would only add to its load (and spend a rate-limited key)."""
    remote = Remote(EngineOverloaded("full", retry_after=30))
    with pytest.raises(EngineOverloaded) as raised:
        await with_retries(remote, 3, _closed)
    assert remote.calls == 1 and raised.value.retry_after == 30


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


async def test_no_retry_is_sent_without_time_left_to_run_it() -> None:
    """A retry squeezed into the deadline's last milliseconds would only turn a 503 into a 504."""
    remote = Remote(EngineUnavailable("down"), EngineUnavailable("down again"))
    with deadlines.bound(0.03), pytest.raises(EngineUnavailable, match="down$"):
        await with_retries(remote, 3, _closed)
    assert remote.calls == 1
