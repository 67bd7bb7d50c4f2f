"""Run requests on an engine: directly, or merged by a dynamic batcher (REQ-OPT-03)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import Protocol

import numpy as np

from aisf.adapters.base import ModelAdapter
from aisf.services.common.errors import AisfError, InternalError
from aisf.services.common.model_config import DynamicBatching
from aisf.services.common.tensors import InferRequest, InferResponse, Tensor
from aisf.services.router.statistics import ExecutionTiming, ModelStatistics


class Executor(Protocol):
    async def execute(self, request: InferRequest, batch_size: int) -> tuple[InferResponse, ExecutionTiming]:
        """Run one validated request; batch_size is its dim-0 size (1 for unbatched models)."""
        ...

    async def close(self) -> None: ...


class DirectExecutor:
    """One engine call per request, at most `instances` at once."""

    def __init__(self, adapter: ModelAdapter, stats: ModelStatistics, instances: int) -> None:
        self._adapter = adapter
        self._stats = stats
        self._slots = asyncio.Semaphore(instances)

    async def execute(self, request: InferRequest, batch_size: int) -> tuple[InferResponse, ExecutionTiming]:
        queued = perf_counter_ns()
        async with self._slots:
            started = perf_counter_ns()
            response = await self._adapter.infer(request)
            done = perf_counter_ns()
        timing = ExecutionTiming(started - queued, 0, done - started, 0, batch_size)
        self._stats.record_execution(timing)
        return response, timing

    async def close(self) -> None:
        return None


BatchKey = tuple[object, ...]


@dataclass(slots=True)
class _Pending:
    request: InferRequest
    size: int
    key: BatchKey
    enqueued_ns: int
    future: asyncio.Future[tuple[InferResponse, ExecutionTiming]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def batch_key(request: InferRequest) -> BatchKey:
    """Requests merge only when every input agrees on name, datatype and non-batch dims."""
    inputs = tuple(sorted((t.name, t.datatype, t.shape[1:]) for t in request.inputs))
    return inputs + (tuple(o.name for o in request.outputs),)


class DynamicBatcher:
    """Triton-style dynamic batching: gather queued requests for up to max_queue_delay, never
    beyond max_batch_size, dispatching early at a preferred batch size; one engine call per batch."""

    def __init__(
        self,
        adapter: ModelAdapter,
        stats: ModelStatistics,
        instances: int,
        max_batch_size: int,
        policy: DynamicBatching,
    ) -> None:
        self._adapter = adapter
        self._stats = stats
        self._slots = asyncio.Semaphore(instances)
        self._max = max_batch_size
        self._delay_ns = policy.max_queue_delay_microseconds * 1000
        self._preferred = frozenset(policy.preferred_batch_size)
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._held: collections.deque[_Pending] = collections.deque()
        self._running: set[asyncio.Task[None]] = set()
        self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch_forever())

    async def execute(self, request: InferRequest, batch_size: int) -> tuple[InferResponse, ExecutionTiming]:
        pending = _Pending(request, batch_size, batch_key(request), perf_counter_ns())
        if self._idle_without_delay():
            # Nothing to wait for or batch with: run now, skipping the dispatcher's hop.
            await self._slots.acquire()
            await self._run([pending])
        else:
            self._queue.put_nowait(pending)
        return await pending.future

    def _idle_without_delay(self) -> bool:
        return self._delay_ns == 0 and self._queue.empty() and not self._held and not self._slots.locked()

    async def close(self) -> None:
        self._dispatcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._dispatcher
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        for pending in [*self._held, *_drain(self._queue)]:
            if not pending.future.done():
                pending.future.set_exception(InternalError("model unloaded while the request was queued"))

    async def _dispatch_forever(self) -> None:
        while True:
            first = await self._next(None)
            assert first is not None
            try:
                # Requests that queue while every instance is busy join this batch.
                await self._slots.acquire()
            except BaseException:
                self._held.appendleft(first)  # close() answers it
                raise
            try:
                batch = await self._gather(first)
            except BaseException:
                self._slots.release()
                raise
            if not batch:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _next(self, timeout_s: float | None) -> _Pending | None:
        if self._held:
            return self._held.popleft()
        if not self._queue.empty():
            return self._queue.get_nowait()
        if timeout_s is not None and timeout_s <= 0:
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout_s)
        except TimeoutError:
            return None

    async def _gather(self, first: _Pending) -> list[_Pending]:
        batch, size = [first], first.size
        deadline = first.enqueued_ns + self._delay_ns
        while size < self._max:
            wait_s = 0.0 if size in self._preferred else (deadline - perf_counter_ns()) / 1e9
            item = await self._next(wait_s)
            if item is None:
                break
            if item.key != first.key or size + item.size > self._max:
                self._held.appendleft(item)
                break
            batch.append(item)
            size += item.size
        # A client that gave up while queued costs no engine time.
        return [p for p in batch if not p.future.cancelled()]

    async def _run(self, batch: list[_Pending]) -> None:
        try:
            dispatched = perf_counter_ns()
            merged = batch[0].request if len(batch) == 1 else _merge(batch)
            merged_ns = perf_counter_ns()
            response = await self._adapter.infer(merged)
            inferred_ns = perf_counter_ns()
            parts = [response] if len(batch) == 1 else _split(response, batch)
            done_ns = perf_counter_ns()
        except AisfError as exc:
            _fail(batch, exc)
            return
        except Exception as exc:
            _fail(batch, InternalError(f"batch execution failed: {type(exc).__name__}: {exc}"))
            return
        finally:
            self._slots.release()
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


def _merge(batch: list[_Pending]) -> InferRequest:
    first = batch[0].request
    inputs = []
    for tensor in first.inputs:
        parts = [next(t.data for t in p.request.inputs if t.name == tensor.name) for p in batch]
        data = np.concatenate(parts, axis=0)
        inputs.append(Tensor(tensor.name, tensor.datatype, tuple(data.shape), data))
    return InferRequest(first.model_name, first.model_version, inputs, first.outputs, id=first.id)


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
            Tensor(t.name, t.datatype, (pending.size, *t.shape[1:]), t.data[offset : offset + pending.size])
            for t in response.outputs
        ]
        parts.append(InferResponse(response.model_name, response.model_version, outputs, pending.request.id))
        offset += pending.size
    return parts


def _fail(batch: list[_Pending], error: AisfError) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(error)


def _drain(queue: asyncio.Queue[_Pending]) -> list[_Pending]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items
