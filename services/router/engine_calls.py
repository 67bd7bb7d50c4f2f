"""Every call into one loaded engine version: slots, a bounded waiting room, outcomes for the breaker, and
the drain that lets an engine unload only once nothing uses it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from aisf.services.common import deadlines
from aisf.services.common.errors import AisfError, DeadlineExceeded, EngineOverloaded, ModelNotReady
from aisf.services.router.breaker import CircuitBreaker

log = logging.getLogger(__name__)
T = TypeVar("T")
M = TypeVar("M")
_REVOKE_GRACE_S = 2.0  # a revoked stream's consumer stops at its next chunk; one that does not is cancelled
_MOVES = 3  # a request follows at most this many reloads before it is told to retry
# A remote call cut at the caller's remaining time ends within this of its deadline.
_DEADLINE_SLACK_S = 0.005


class Retired(Exception):
    """This engine version closed (reloaded or unloaded) before the request reached it. Not an AisfError:
    the dataplane catches it and sends the request to whatever now serves the model."""


@dataclass(slots=True)
class StreamLease:
    """A stream's hold on an engine slot; `revoked` once the engine must drain and the stream stop.
    `waiting_since` (monotonic seconds, 0 when not) is set while a chunk waits for its consumer."""

    released: asyncio.Future[None]
    revoked: bool = False
    waiting_since: float = 0.0


def callers_own_deadline(error: AisfError) -> bool:
    """A timeout that the caller's deadline caused (its budget ran out, whatever the engine's health):
    it says nothing about the engine, and must not open the circuit for everyone else."""
    if not isinstance(error, DeadlineExceeded):
        return False
    left = deadlines.remaining()
    return left is not None and left <= _DEADLINE_SLACK_S


async def on_successor(
    model: M, attempt: Callable[[M], Awaitable[T]], successor: Callable[[], M], what: str
) -> T:
    """Run `attempt` on `model`; when its engine version retired before the request reached it (a reload
    or an unload), run it again on whatever `successor` says serves the request now."""
    for _ in range(_MOVES):
        try:
            return await attempt(model)
        except Retired:
            model = successor()
    raise ModelNotReady(f"{what} is being reloaded; retry", retry_after=1)


class _Outcome:
    """Tells the breaker how an engine call ended: failures whose type trips it count, successes close a
    half-open circuit; a caller that left (cancellation) says nothing about the engine. One instance
    serves every call (it keeps no state of its own)."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: object
    ) -> Literal[False]:
        if error is None:
            self._breaker.record_success()
        elif isinstance(error, AisfError):
            if error.trips_breaker and not callers_own_deadline(error):
                self._breaker.record_failure(error.reason)
        elif isinstance(error, Exception):
            self._breaker.record_failure("internal")
        return False


class EngineCalls:
    """At most `instances` calls at once. A call frees its slot when the engine returns, not when its
    caller stops waiting (a thread cannot be interrupted, and the next call must not share it). At most
    `max_waiting` callers wait for a slot; more are refused at once with 429."""

    def __init__(
        self, where: str, instances: int, max_waiting: int, breaker: CircuitBreaker, stream_idle_s: float = 0
    ) -> None:
        self._where = where
        self._stream_idle_s = stream_idle_s
        self._watchdog: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(instances)
        self._max_waiting = max_waiting
        self._breaker = breaker
        self.waiting = 0
        self._running: set[asyncio.Future[Any]] = set()
        self._streams: dict[asyncio.Task[Any], StreamLease] = {}
        self._closing = False
        self._outcome = _Outcome(breaker)

    @property
    def max_waiting(self) -> int:
        """Requests that may wait for the engine; the model's other waits (a feature join) share the bound."""
        return self._max_waiting

    def in_flight(self) -> int:
        return len(self._running) + len(self._streams)

    def admit(self, queued: int | None = None) -> None:
        """Refuse when the waiting room is full: a client told to retry beats one timing out in a queue.
        `queued` counts a batcher's queue; without it, the callers waiting here for a slot."""
        if self._closing:
            raise Retired
        waiting = self.waiting if queued is None else queued
        if waiting >= self._max_waiting and (queued is not None or self._slots.locked()):
            raise EngineOverloaded(
                f"{self._where} is overloaded: {waiting} requests already wait; retry later"
            )

    async def try_acquire(self) -> bool:
        """Take a free slot without waiting (a free Semaphore's acquire() does not suspend)."""
        if self._closing or self._slots.locked():
            return False
        await self._slots.acquire()
        return True

    async def acquire(self, admitted: bool = False) -> None:
        """Wait for a slot within the request's deadline (Retired if the engine closes meanwhile)."""
        if not admitted:
            self.admit()
        if await self.try_acquire():
            return
        self.waiting += 1
        try:
            left = deadlines.remaining()
            if left is None:
                await self._slots.acquire()
            else:
                await asyncio.wait_for(self._slots.acquire(), left)
        except TimeoutError:
            raise DeadlineExceeded(
                f"{self._where}: the deadline passed while waiting for the engine"
            ) from None
        finally:
            self.waiting -= 1
        if self._closing:
            self._slots.release()
            raise Retired

    def release(self) -> None:
        self._slots.release()

    def launch(self, work: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
        """Run `work` on a slot already acquired; the slot frees, and the outcome reaches the breaker,
        when the work ends, whoever waits for it."""
        task = asyncio.get_running_loop().create_task(self._hold(work))
        self._running.add(task)
        task.add_done_callback(self._finished)
        return task

    async def call(self, work: Callable[[], Awaitable[T]]) -> T:
        """One engine call: a slot, the work, the answer (the work outlives a caller that leaves)."""
        await self.acquire()
        return await asyncio.shield(self.launch(work))

    @asynccontextmanager
    async def stream(self) -> AsyncIterator[StreamLease]:
        """Hold a slot while the current task consumes a stream from the engine (an LLM generation);
        the consumer checks the lease between chunks and stops when the engine is draining."""
        await self.acquire()
        task = asyncio.current_task()
        assert task is not None
        lease = StreamLease(asyncio.get_running_loop().create_future())
        self._streams[task] = lease
        if self._stream_idle_s > 0 and self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(self._watch_stalls())
        try:
            with self._outcome:
                yield lease
        finally:
            self._streams.pop(task, None)
            self._slots.release()
            lease.released.set_result(None)

    async def close(self, grace_s: float) -> None:
        """Refuse new calls, let running ones finish. Streams still open after `grace_s` (a long
        generation, a stalled client) are revoked; those whose consumer does not stop within
        _REVOKE_GRACE_S are cancelled. Unload comes after all of them."""
        self._closing = True
        if self._running or self._streams:
            await asyncio.wait({*self._running, *self._released()}, timeout=grace_s)
        if self._streams:
            log.warning(
                "revoking streams still open after the drain grace",
                extra={"engine": self._where, "streams": len(self._streams), "grace_s": grace_s},
            )
            for lease in self._streams.values():
                lease.revoked = True
            await asyncio.wait(self._released(), timeout=_REVOKE_GRACE_S)
            for task in list(self._streams):
                task.cancel()
        while self._running or self._streams:
            await asyncio.wait({*self._running, *self._released()})

    async def _watch_stalls(self) -> None:
        """While streams are open: cut one whose consumer has not taken a chunk for `stream_idle_s` (a
        client that stopped reading), so it cannot pin the engine slot; its task is cancelled, which
        closes the engine's stream (the engine stops between two tokens) and frees the slot."""
        idle_s = self._stream_idle_s
        try:
            while self._streams:
                await asyncio.sleep(min(idle_s / 4, 1.0))
                now = time.monotonic()
                for task, lease in list(self._streams.items()):
                    if lease.waiting_since and now - lease.waiting_since > idle_s and not task.cancelling():
                        log.warning(
                            "cutting a stream whose reader stalled",
                            extra={"engine": self._where, "idle_s": round(now - lease.waiting_since, 1)},
                        )
                        task.cancel()
        finally:
            self._watchdog = None

    def _released(self) -> set[asyncio.Future[None]]:
        return {lease.released for lease in self._streams.values()}

    async def _hold(self, work: Callable[[], Awaitable[T]]) -> T:
        try:
            with self._outcome:
                return await work()
        finally:
            self._slots.release()

    def _finished(self, task: asyncio.Future[Any]) -> None:
        self._running.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that left early never awaits it
