"""Circuit breaker per model version (REQ-DEP-02): failures in a sliding window open it, a cool-down later
half-open probes decide, and an operator may force it either way."""

from __future__ import annotations

import collections
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from aisf.services.common.model_config import CircuitBreakerConfig

log = logging.getLogger(__name__)
Clock = Callable[[], float]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerMode(StrEnum):
    """AUTO follows the failures; the forced modes are an operator's override until set back to AUTO."""

    AUTO = "auto"
    FORCED_OPEN = "forced_open"
    FORCED_CLOSED = "forced_closed"


# Gauge values of aisf_breaker_state (closed 0, half-open 1, open 2).
STATE_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


@dataclass(frozen=True, slots=True)
class Permit:
    """A request let through by `enter`; `probe` when it is one of a half-open circuit's probes, whose slot
    frees when the request ends (`leave`), however it ends: a probe must never hold the door shut."""

    probe: bool
    round: int


_THROUGH = Permit(probe=False, round=-1)


@dataclass(frozen=True, slots=True)
class BreakerStatus:
    state: BreakerState
    mode: BreakerMode
    failures_in_window: int
    threshold: int
    window_s: float
    cooldown_s: float
    opened_count: int
    rejected: int
    retry_after_s: int
    last_failure: str


class CircuitBreaker:
    def __init__(
        self,
        model: str,
        version: str,
        config: CircuitBreakerConfig,
        clock: Clock = time.monotonic,
    ) -> None:
        self._model, self._version = model, version
        self._config = config
        self._clock = clock
        self._mode = BreakerMode.AUTO
        self._state = BreakerState.CLOSED
        self._failures: collections.deque[float] = collections.deque()
        self._opened_at = 0.0
        self._probes = 0  # half-open probes under way
        self._round = 0  # counts half-open periods: a permit of an earlier one frees nothing
        self._probe_successes = 0
        self._opened_count = 0
        self._rejected = 0
        self._last_failure = ""

    def configure(self, config: CircuitBreakerConfig) -> None:
        """New thresholds from a reload; the state and its history stay."""
        self._config = config

    @property
    def state(self) -> BreakerState:
        if self._mode is BreakerMode.FORCED_OPEN:
            return BreakerState.OPEN
        if self._mode is BreakerMode.FORCED_CLOSED:
            return BreakerState.CLOSED
        return self._state

    def is_open(self) -> bool:
        """Open now (cool-down not over, or forced): what a remote engine's retries check."""
        if self.state is not BreakerState.OPEN:
            return False
        return (
            self._mode is BreakerMode.FORCED_OPEN or self._clock() < self._opened_at + self._config.cooldown_s
        )

    def enter(self) -> Permit | None:
        """A permit when a request may reach the engine now (hand it back with `leave` once the request
        ends); None counts the request as stopped by the breaker."""
        if self._mode is BreakerMode.FORCED_OPEN:
            self._rejected += 1
            return None
        if self._mode is BreakerMode.FORCED_CLOSED or not self._config.enabled:
            return _THROUGH
        if self._state is BreakerState.CLOSED:
            return _THROUGH
        if self._state is BreakerState.OPEN and self._clock() >= self._opened_at + self._config.cooldown_s:
            self._state, self._probes, self._probe_successes = BreakerState.HALF_OPEN, 0, 0
            self._round += 1
        if self._state is BreakerState.HALF_OPEN and self._probes < self._config.half_open_probes:
            self._probes += 1
            return Permit(probe=True, round=self._round)
        self._rejected += 1
        return None

    def leave(self, permit: Permit) -> None:
        """The request `permit` let through has ended (answered, failed, refused further on, or gone)."""
        if permit.probe and permit.round == self._round and self._state is BreakerState.HALF_OPEN:
            self._probes = max(0, self._probes - 1)

    def record_success(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._probe_successes += 1
            if self._probe_successes >= self._config.half_open_probes:
                self._close()

    def record_failure(self, reason: str) -> None:
        self._last_failure = reason
        if not self._config.enabled:
            return
        now = self._clock()
        if self._state is BreakerState.HALF_OPEN:
            self._open(now)
            return
        if self._state is BreakerState.OPEN:
            return
        self._failures.append(now)
        while self._failures and self._failures[0] <= now - self._config.window_s:
            self._failures.popleft()
        if len(self._failures) >= self._config.failures:
            self._open(now)

    def force(self, mode: BreakerMode) -> None:
        """Set by an operator; back to AUTO starts closed with a clean window."""
        self._mode = mode
        if mode is BreakerMode.AUTO:
            self._close()
        log.warning(
            "circuit breaker mode set",
            extra={"model": self._model, "version": self._version, "mode": mode.value},
        )

    def retry_after_s(self) -> int:
        """Seconds until the next probe may run (at least 1): half-open, as soon as a probe answers."""
        if self._mode is BreakerMode.FORCED_OPEN:
            return max(1, math.ceil(self._config.cooldown_s))
        if self.state is not BreakerState.OPEN:
            return 1
        return max(1, math.ceil(self._opened_at + self._config.cooldown_s - self._clock()))

    def status(self) -> BreakerStatus:
        now = self._clock()
        in_window = sum(1 for t in self._failures if t > now - self._config.window_s)
        return BreakerStatus(
            state=self.state,
            mode=self._mode,
            failures_in_window=in_window,
            threshold=self._config.failures,
            window_s=self._config.window_s,
            cooldown_s=self._config.cooldown_s,
            opened_count=self._opened_count,
            rejected=self._rejected,
            retry_after_s=self.retry_after_s() if self.state is BreakerState.OPEN else 0,
            last_failure=self._last_failure,
        )

    def _open(self, now: float) -> None:
        self._state, self._opened_at, self._probes = BreakerState.OPEN, now, 0
        self._opened_count += 1
        self._failures.clear()
        log.warning(
            "circuit opened",
            extra={
                "model": self._model,
                "version": self._version,
                "cooldown_s": self._config.cooldown_s,
                "reason": self._last_failure,
            },
        )

    def _close(self) -> None:
        if self._state is not BreakerState.CLOSED:
            log.info("circuit closed", extra={"model": self._model, "version": self._version})
        self._state, self._probes, self._probe_successes = BreakerState.CLOSED, 0, 0
        self._failures.clear()
