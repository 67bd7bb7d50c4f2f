"""Load shapes the benchmarks share: an open loop (requests on a fixed schedule, whatever the answers)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Sample:
    latencies_ms: list[float]
    refused: int
    failed: int
    wall_s: float

    def rate(self) -> float:
        return len(self.latencies_ms) / self.wall_s

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


async def open_loop(call: Callable[[], Awaitable[Any]], rate: float, seconds: float) -> Sample:
    """Requests sent on a fixed schedule, whatever the answers: what real traffic does to a server."""
    from tritonclient.utils import InferenceServerException

    latencies: list[float] = []
    refused = failed = 0

    async def one() -> None:
        nonlocal refused, failed
        started = time.perf_counter()
        try:
            await call()
        except InferenceServerException as exc:
            if "RESOURCE_EXHAUSTED" in str(exc.status()):
                refused += 1
            else:
                failed += 1
            return
        latencies.append((time.perf_counter() - started) * 1000)

    loop = asyncio.get_running_loop()
    begin = loop.time()
    tasks = []
    for i in range(int(rate * seconds)):
        delay = begin + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return Sample(latencies, refused, failed, loop.time() - begin)
