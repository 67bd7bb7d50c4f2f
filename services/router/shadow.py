"""Shadow deployment (REQ-DEP-01): a sampled copy of live requests goes to another model or version off the
live path (a bounded queue that sheds), the answers are compared, and a report decides promotion."""

from __future__ import annotations

import asyncio
import collections
import contextvars
import difflib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import Generic, TypeVar

import numpy as np

from aisf.services.common import deadlines
from aisf.services.common.errors import AisfError
from aisf.services.common.model_config import ShadowConfig
from aisf.services.common.tensors import InferResponse

log = logging.getLogger(__name__)
Request = TypeVar("Request")
Answer = TypeVar("Answer")
_LATENCY_SAMPLES = 10_000  # the report's percentiles are over the most recent comparisons


def tensors_agree(live: InferResponse, shadow: InferResponse, rtol: float, atol: float) -> bool:
    """Every live output is in the shadow's answer with the same shape; integers, booleans and BYTES
    equal, floats within tolerance."""
    theirs = {t.name: t for t in shadow.outputs}
    for mine in live.outputs:
        other = theirs.get(mine.name)
        if other is None or other.shape != mine.shape or other.datatype != mine.datatype:
            return False
        if mine.datatype.startswith(("FP", "BF")):
            same = np.allclose(
                np.asarray(mine.data, np.float64), np.asarray(other.data, np.float64), rtol, atol, True
            )
        else:
            same = np.array_equal(mine.data, other.data)
        if not same:
            return False
    return True


def token_agreement(live: str, shadow: str) -> float:
    """How much of two generated texts agrees, token by token (whitespace tokens, 1.0 = identical)."""
    mine, theirs = live.split(), shadow.split()
    if not mine and not theirs:
        return 1.0
    return difflib.SequenceMatcher(None, mine, theirs, autojunk=False).ratio()


@dataclass(frozen=True, slots=True)
class Gate:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True, slots=True)
class ShadowReport:
    model: str
    shadow_model: str
    shadow_version: str
    sample: float
    offered: int
    shed: int
    compared: int
    agreed: int
    shadow_errors: dict[str, int]
    live_p50_ms: float
    live_p99_ms: float
    shadow_p50_ms: float
    shadow_p99_ms: float
    gates: list[Gate]
    promoted: bool

    @property
    def agreement(self) -> float:
        return self.agreed / self.compared if self.compared else 0.0

    @property
    def promotable(self) -> bool:
        return all(g.passed for g in self.gates)


def _percentile(samples: collections.deque[float], q: float) -> float:
    return float(np.percentile(np.fromiter(samples, float), q)) if samples else 0.0


@dataclass(slots=True)
class _Tally:
    offered: int = 0
    shed: int = 0
    compared: int = 0
    agreed: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    live_ms: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=_LATENCY_SAMPLES)
    )
    shadow_ms: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=_LATENCY_SAMPLES)
    )


def build_report(
    model: str, target: tuple[str, str], config: ShadowConfig, tally: _Tally, promoted: bool
) -> ShadowReport:
    gates_config = config.promote
    errors = sum(tally.errors.values())
    attempts = tally.compared + errors
    error_rate = errors / attempts if attempts else 0.0
    live_p99, shadow_p99 = _percentile(tally.live_ms, 99), _percentile(tally.shadow_ms, 99)
    ratio = shadow_p99 / live_p99 if live_p99 else float("inf")
    agreement = tally.agreed / tally.compared if tally.compared else 0.0
    gates = [
        Gate("min_compared", tally.compared >= gates_config.min_compared,
             f"{tally.compared} compared, {gates_config.min_compared} needed"),
        Gate("min_agreement", tally.compared > 0 and agreement >= gates_config.min_agreement,
             f"agreement {agreement:.4f}, at least {gates_config.min_agreement} needed"),
        Gate("max_error_rate", error_rate <= gates_config.max_error_rate,
             f"error rate {error_rate:.4f}, at most {gates_config.max_error_rate} allowed"),
        Gate("max_p99_ratio", ratio <= gates_config.max_p99_ratio,
             f"shadow/live p99 {ratio:.2f}, at most {gates_config.max_p99_ratio} allowed"),
    ]  # fmt: skip
    return ShadowReport(
        model=model,
        shadow_model=target[0],
        shadow_version=target[1],
        sample=config.sample,
        offered=tally.offered,
        shed=tally.shed,
        compared=tally.compared,
        agreed=tally.agreed,
        shadow_errors=dict(tally.errors),
        live_p50_ms=_percentile(tally.live_ms, 50),
        live_p99_ms=live_p99,
        shadow_p50_ms=_percentile(tally.shadow_ms, 50),
        shadow_p99_ms=shadow_p99,
        gates=gates,
        promoted=promoted,
    )


def empty_report(model: str, target: tuple[str, str], config: ShadowConfig, promoted: bool) -> ShadowReport:
    """The report of a shadow no request was copied to yet."""
    return build_report(model, target, config, _Tally(), promoted)


class ShadowMirror(Generic[Request, Answer]):
    """One live model's shadow: `run` answers a copy on the shadow, `agree` compares two answers."""

    def __init__(
        self,
        model: str,
        target: tuple[str, str],
        config: ShadowConfig,
        run: Callable[[Request], Awaitable[Answer]],
        agree: Callable[[Answer, Answer], bool],
        timeout_s: float,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.model = model
        self.target = target
        self.config = config
        self._run = run
        self._agree = agree
        self._timeout_s = timeout_s
        self._draw = draw
        self._tally = _Tally()
        self._queue: asyncio.Queue[tuple[Request, Answer, float]] = asyncio.Queue(config.max_queue)
        # Fresh contexts: a copy must not inherit the live request's deadline (or cancel with it).
        self._workers = [
            asyncio.get_running_loop().create_task(self._work(), context=contextvars.Context())
            for _ in range(config.concurrency)
        ]

    def offer(self, request: Request, live: Answer, live_latency_ns: int) -> None:
        """Sample a live request for the shadow: never waits, never raises; a full queue sheds."""
        if self._draw() >= self.config.sample:
            return
        self._tally.offered += 1
        try:
            self._queue.put_nowait((request, live, live_latency_ns / 1e6))
        except asyncio.QueueFull:
            self._tally.shed += 1

    def report(self, promoted: bool) -> ShadowReport:
        return build_report(self.model, self.target, self.config, self._tally, promoted)

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            request, live, live_ms = await self._queue.get()
            started = perf_counter_ns()
            try:
                with deadlines.bound(self._timeout_s):
                    # Its own task: a drain that cancels the copy's stream must not end this worker.
                    answer = await asyncio.ensure_future(self._run(request))
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                self._tally.errors["cancelled"] += 1
                continue
            except AisfError as error:
                self._tally.errors[error.reason] += 1
                continue
            except Exception as error:  # a shadow must never take its live model down
                log.warning("shadow copy failed", extra={"model": self.model, "error": repr(error)})
                self._tally.errors["internal"] += 1
                continue
            shadow_ms = (perf_counter_ns() - started) / 1e6
            self._tally.compared += 1
            self._tally.live_ms.append(live_ms)
            self._tally.shadow_ms.append(shadow_ms)
            if self._agree(live, answer):
                self._tally.agreed += 1
