"""Run requests on an engine: directly, or merged by a dynamic batcher (REQ-OPT-03)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
from collections.abc import Mapping
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import Protocol

import numpy as np

from aisf.adapters.base import ModelAdapter, engine_failure
from aisf.services.common import deadlines
from aisf.services.common.errors import AisfError, DeadlineExceeded, InternalError, RowsRejected
from aisf.services.common.model_config import DynamicBatching
from aisf.services.common.tensors import InferRequest, InferResponse, ParameterValue, Tensor
from aisf.services.router.engine_calls import EngineCalls, Retired
from aisf.services.router.statistics import ExecutionTiming, ModelStatistics


class Executor(Protocol):
    async def execute(self, request: InferRequest, batch_size: int) -> tuple[InferResponse, ExecutionTiming]:
        """Run one validated request; batch_size is its dim-0 size (1 for unbatched models). Raises
        Retired when the engine closed before the request reached it."""
        ...

    def queue_depth(self) -> int:
        """Requests waiting for the engine (the autoscaling signal, REQ-SCALE-01)."""
        ...

    async def close(self, grace_s: float) -> None:
        """Drain: queued requests are retired (the dataplane moves them on), running ones finish."""
        ...


def _dropped(where: str) -> DeadlineExceeded:
    return DeadlineExceeded(f"{where}: the request's deadline passed while it waited; it did not run")


class DirectExecutor:
    """One engine call per request, at most `instances` at once."""

    def __init__(self, adapter: ModelAdapter, stats: ModelStatistics, calls: EngineCalls) -> None:
        self._adapter = adapter
        self._stats = stats
        self._calls = calls

    async def execute(self, request: InferRequest, batch_size: int) -> tuple[InferResponse, ExecutionTiming]:
        queued = perf_counter_ns()
        await self._calls.acquire()
        if deadlines.expired():
            self._calls.release()
            raise _dropped(f"model '{request.model_name}'")
        started = perf_counter_ns()
        response, done = await asyncio.shield(self._calls.launch(lambda: self._infer(request, batch_size)))
        return response, ExecutionTiming(started - queued, 0, done - started, 0, batch_size)

    async def _infer(self, request: InferRequest, batch_size: int) -> tuple[InferResponse, int]:
        started = perf_counter_ns()
        try:
            response = await self._adapter.infer(request)
        except AisfError:
            raise
        except Exception as exc:  # a plugin's own exception: typed, and counted by the breaker
            raise engine_failure(exc, request.model_name) from exc
        done = perf_counter_ns()
        self._stats.record_execution(ExecutionTiming(0, 0, done - started, 0, batch_size))
        return response, done

    def queue_depth(self) -> int:
        return self._calls.waiting

    async def close(self, grace_s: float) -> None:
        await self._calls.close(grace_s)


BatchKey = tuple[object, ...]


@dataclass(slots=True)
class _Pending:
    request: InferRequest
    size: int
    enqueued_ns: int
    deadline: float | None
    future: asyncio.Future[tuple[InferResponse, ExecutionTiming]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    key: BatchKey = ()  # set when the request queues (a request run at once never needs one)
    queued: bool = False  # counted in the batcher's queue (until taken into a batch, or it is gone)
    expiry: asyncio.TimerHandle | None = None


def _parameters(values: Mapping[str, ParameterValue]) -> tuple[tuple[str, ParameterValue], ...]:
    return tuple(sorted((k, v) for k, v in values.items() if k != deadlines.TIMEOUT_PARAMETER))


def batch_key(request: InferRequest) -> BatchKey:
    """Requests merge only when every input agrees on name, datatype, non-batch dims and parameters, and
    the requests agree on their outputs and parameters: a merged request means what each one meant."""
    inputs = tuple(
        sorted((t.name, t.datatype, t.shape[1:], _parameters(t.parameters)) for t in request.inputs)
    )
    outputs = tuple((o.name, _parameters(o.parameters)) for o in request.outputs)
    return (inputs, outputs, _parameters(request.parameters))


class DynamicBatcher:
    """Triton-style dynamic batching: requests queue (at most `max_queue`), and one engine call takes
    as many as fit in max_batch_size: at once when a preferred batch size is reached or nothing more can
    join, else when the oldest has waited max_queue_delay. Requests that queue while every instance is
    busy batch together."""

    def __init__(
        self,
        adapter: ModelAdapter,
        stats: ModelStatistics,
        calls: EngineCalls,
        max_batch_size: int,
        policy: DynamicBatching,
    ) -> None:
        self._adapter = adapter
        self._stats = stats
        self._calls = calls
        self._max = max_batch_size
        self._delay_ns = policy.max_queue_delay_microseconds * 1000
        self._preferred = frozenset(policy.preferred_batch_size)
        # Every pending request is in exactly one place: this queue, or a batch running on the engine.
        # The queue may still hold entries whose caller left or whose deadline passed (skipped when met);
        # `_queued` counts the live ones, which are what admission and the autoscaling signal see.
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued = 0
        self._arrived = asyncio.Event()
        self._closing = False
        # A fresh context: the dispatcher must not inherit the deadline of the call that loaded the model.
        self._dispatcher = asyncio.get_running_loop().create_task(
            self._dispatch_forever(), context=contextvars.Context()
        )

    async def execute(self, request: InferRequest, batch_size: int) -> tuple[InferResponse, ExecutionTiming]:
        if self._closing:
            raise Retired
        pending = _Pending(request, batch_size, perf_counter_ns(), deadlines.current())
        if self._delay_ns == 0 and not self._queue and await self._calls.try_acquire():
            # Nothing to wait for or batch with: run now, skipping the dispatcher's hop.
            self._calls.launch(lambda: self._run([pending]))
        else:
            self._calls.admit(self._queued)
            self._enqueue(pending)
        return await pending.future

    def queue_depth(self) -> int:
        return self._queued

    def _enqueue(self, pending: _Pending) -> None:
        pending.key = batch_key(pending.request)
        pending.queued = True
        self._queued += 1
        pending.future.add_done_callback(lambda _: self._dequeue(pending))
        if pending.deadline is not None:
            # Answered 504 when the deadline passes in the queue, even while every instance is busy.
            loop = asyncio.get_running_loop()
            pending.expiry = loop.call_later(
                max(0.0, pending.deadline - deadlines.now()), self._expire, pending
            )
        self._queue.append(pending)
        self._arrived.set()

    def _dequeue(self, pending: _Pending) -> None:
        """`pending` leaves the count: taken into a batch, answered, or its caller gone."""
        if pending.queued:
            pending.queued = False
            self._queued -= 1
            if pending.expiry is not None:
                pending.expiry.cancel()

    def _expire(self, pending: _Pending) -> None:
        if pending.queued and not pending.future.done():
            pending.future.set_exception(_dropped(f"model '{pending.request.model_name}'"))
            self._dequeue(pending)

    async def close(self, grace_s: float) -> None:
        self._closing = True
        self._dispatcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._dispatcher
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(Retired())
        await self._calls.close(grace_s)

    async def _dispatch_forever(self) -> None:
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            # Requests that queue while every instance is busy join this batch.
            await self._calls.acquire(admitted=True)
            try:
                batch = await self._form_batch()
            except BaseException:
                self._calls.release()
                raise
            if batch:
                self._calls.launch(lambda batch=batch: self._run(batch))  # type: ignore[misc]
            else:
                self._calls.release()

    async def _form_batch(self) -> list[_Pending]:
        while True:
            self._drop_gone()
            if not self._queue:
                return []
            first = self._queue[0]
            count, size, preferred, blocked = self._plan(first)
            waited_out = perf_counter_ns() >= first.enqueued_ns + self._delay_ns
            if size >= self._max or blocked or waited_out:
                take = count
            elif preferred:
                take = preferred
            else:
                self._arrived.clear()
                wait_s = (first.enqueued_ns + self._delay_ns - perf_counter_ns()) / 1e9
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), max(wait_s, 0.0))
                continue
            batch = [self._queue.popleft() for _ in range(take)]
            for pending in batch:
                self._dequeue(pending)
            return batch

    def _plan(self, first: _Pending) -> tuple[int, int, int, bool]:
        """From the queue's head: (requests that can join, their rows, requests up to the largest
        preferred size among them, whether the next one cannot join: another shape, or too big)."""
        count = size = preferred = 0
        for pending in self._queue:
            if pending.key != first.key or size + pending.size > self._max:
                return count, size, preferred, True
            count += 1
            size += pending.size
            if size in self._preferred:
                preferred = count
            if size >= self._max:
                break
        return count, size, preferred, False

    def _drop_gone(self) -> None:
        """A client that gave up, or whose deadline passed, while queued costs no engine time."""
        gone = False
        for pending in self._queue:
            if not pending.future.done() and _expired(pending):
                pending.future.set_exception(_dropped(f"model '{pending.request.model_name}'"))
            if pending.future.done():
                self._dequeue(pending)  # now: its done callback runs only on the loop's next turn
                gone = True
        if gone:
            self._queue = collections.deque(p for p in self._queue if p.queued)

    async def _run(self, batch: list[_Pending]) -> None:
        # The engine call (a remote one especially) may take as long as the most patient member allows.
        members = [p.deadline for p in batch]
        latest = None if None in members else max(m for m in members if m is not None)
        with deadlines.bound_at(latest):
            await self._run_bound(batch)

    async def _run_bound(self, batch: list[_Pending]) -> None:
        try:
            dispatched = perf_counter_ns()
            merged = batch[0].request if len(batch) == 1 else _merge(batch)
            merged_ns = perf_counter_ns()
            response = await self._adapter.infer(merged)
            inferred_ns = perf_counter_ns()
            parts = [response] if len(batch) == 1 else _split(response, batch)
            done_ns = perf_counter_ns()
        except RowsRejected as exc:
            if len(batch) == 1 or not exc.rows:
                _fail(batch, exc)
                raise
            await self._run_without_bad_rows(batch, exc)
            return
        except AisfError as exc:
            _fail(batch, exc)
            raise
        except Exception as exc:
            error = InternalError(f"batch execution failed: {type(exc).__name__}: {exc}")
            _fail(batch, error)
            raise error from exc
        size = sum(p.size for p in batch)
        execution = ExecutionTiming(
            0, merged_ns - dispatched, inferred_ns - merged_ns, done_ns - inferred_ns, size
        )
        self._stats.record_execution(execution)
        for pending, part in zip(batch, parts, strict=True):
            if not pending.future.done():
                timing = ExecutionTiming(
                    dispatched - pending.enqueued_ns,
                    execution.compute_input_ns,
                    execution.compute_infer_ns,
                    execution.compute_output_ns,
                    size,
                )
                pending.future.set_result((part, timing))

    async def _run_without_bad_rows(self, batch: list[_Pending], rejected: RowsRejected) -> None:
        """A bad row fails the request it came from, naming its own index; the requests batched with it
        run again without it (one bad image must not poison the others)."""
        good: list[_Pending] = []
        offset = 0
        for pending in batch:
            own = rejected.within(offset, pending.size)
            offset += pending.size
            if own is None:
                good.append(pending)
            elif not pending.future.done():
                pending.future.set_exception(own)
        if good:
            await self._run_bound(good)


def _expired(pending: _Pending) -> bool:
    return pending.deadline is not None and deadlines.now() >= pending.deadline


def _merge(batch: list[_Pending]) -> InferRequest:
    first = batch[0].request
    inputs = []
    for tensor in first.inputs:
        parts = [next(t.data for t in p.request.inputs if t.name == tensor.name) for p in batch]
        data = np.concatenate(parts, axis=0)
        inputs.append(Tensor(tensor.name, tensor.datatype, tuple(data.shape), data, tensor.parameters))
    return InferRequest(
        first.model_name, first.model_version, inputs, first.outputs, first.id, first.parameters
    )


def _split(response: InferResponse, batch: list[_Pending]) -> list[InferResponse]:
    total = sum(p.size for p in batch)
    for tensor in response.outputs:
        if not tensor.shape or tensor.shape[0] != total:
            raise InternalError(
                f"engine returned output '{tensor.name}' of shape {list(tensor.shape)} for a batch of {total}"
            )
    parts, offset = [], 0
    for pending in batch:
        outputs = [
            Tensor(
                t.name,
                t.datatype,
                (pending.size, *t.shape[1:]),
                t.data[offset : offset + pending.size],
                t.parameters,
            )
            for t in response.outputs
        ]
        parts.append(
            InferResponse(
                response.model_name,
                response.model_version,
                outputs,
                pending.request.id,
                dict(response.parameters),
            )
        )
        offset += pending.size
    return parts


def _fail(batch: list[_Pending], error: AisfError) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(error)
