"""Admission to a generative engine: a few generations run, a bounded number wait, the rest get 429."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aisf.services.common.errors import EngineOverloaded


class Admission:
    def __init__(self, model: str, slots: int, max_waiting: int) -> None:
        self._model = model
        self._slots = asyncio.Semaphore(slots)
        self._max_waiting = max_waiting
        self._waiting = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the engine's generation slots; refuse at once when the queue is full, because
        a client told to retry later beats one whose request times out in a queue."""
        if self._slots.locked() and self._waiting >= self._max_waiting:
            raise EngineOverloaded(
                f"model '{self._model}' is overloaded: {self._waiting} requests already wait; retry later"
            )
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._slots.release()
