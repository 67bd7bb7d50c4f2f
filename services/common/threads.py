"""Bounded thread pools for blocking work, one per kind (an engine, the database): no kind starves another."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class BlockingPool:
    """`threads` worker threads for one kind of blocking call. Unlike the event loop's default executor
    (shared by everything that calls asyncio.to_thread), a full pool here makes only its own callers wait."""

    def __init__(self, name: str, threads: int) -> None:
        self.name = name
        self.threads = threads
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)

    async def run(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `call` on one of the pool's threads with the caller's context variables (as to_thread)."""
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        return await loop.run_in_executor(
            self._executor, functools.partial(context.run, call, *args, **kwargs)
        )

    def submit(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run `call` on one of the pool's threads for a caller outside the event loop (a logging thread)."""
        return self._executor.submit(call, *args, **kwargs)

    def close(self) -> None:
        """Stop taking work; threads finish what they run (a running engine call cannot be interrupted)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
