"""Retries of calls to remote engines that did not reach them: the remote unreachable or restarting, with
jittered backoff, never past the request's deadline, never while the model's circuit is open (retrying
would only feed the outage). A full remote is not retried: its backpressure answers the client (429 with
the remote's Retry-After), and a retry would only add to its load."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_base, wait_random_exponential

from aisf.services.common import deadlines
from aisf.services.common.errors import EngineUnavailable

T = TypeVar("T")
_MIN_LEFT_S = 0.05  # a retry needs at least this much of the deadline left to be worth sending


def transient(error: BaseException) -> bool:
    """Failures a repeat of the same call may not meet: the remote unreachable or restarting."""
    return isinstance(error, EngineUnavailable)


class _StopWhen(stop_base):
    def __init__(self, condition: Callable[[], bool]) -> None:
        self._condition = condition

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._condition()


class _WithinDeadline(wait_base):
    """The backoff, shortened so the retry still has _MIN_LEFT_S of the deadline to run in."""

    def __init__(self, wait: wait_base) -> None:
        self._wait = wait

    def __call__(self, retry_state: RetryCallState) -> float:
        pause = self._wait(retry_state)
        left = deadlines.remaining()
        return pause if left is None else max(0.0, min(pause, left - _MIN_LEFT_S))


def _deadline_near() -> bool:
    left = deadlines.remaining()
    return left is not None and left < _MIN_LEFT_S


async def with_retries(
    call: Callable[[], Awaitable[T]], attempts: int, circuit_open: Callable[[], bool]
) -> T:
    """`call` up to `attempts` times while it fails transiently; the last error is raised as it was."""
    retrying = AsyncRetrying(
        retry=retry_if_exception(transient),
        stop=stop_after_attempt(attempts) | _StopWhen(_deadline_near) | _StopWhen(circuit_open),
        wait=_WithinDeadline(wait_random_exponential(multiplier=0.02, max=1.0)),
        reraise=True,
    )

    async def attempt() -> T:  # tenacity awaits only what it can see is a coroutine function
        return await call()

    return await retrying(attempt)
