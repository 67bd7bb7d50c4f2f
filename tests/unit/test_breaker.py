"""The circuit breaker: failures in a window open it, after a cool-down probes decide, operators force it."""

from __future__ import annotations

from aisf.services.common.model_config import CircuitBreakerConfig
from aisf.services.router.breaker import BreakerMode, BreakerState, CircuitBreaker


class Clock:
    """Time the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _breaker(clock: Clock, **config: float) -> CircuitBreaker:
    return CircuitBreaker("m", "1", CircuitBreakerConfig(**config), clock)  # type: ignore[arg-type]


def _allowed(breaker: CircuitBreaker) -> bool:
    """A request let through whose permit its caller keeps (it has not ended yet)."""
    return breaker.enter() is not None


def test_five_failures_within_the_window_open_the_circuit() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    for _ in range(4):
        breaker.record_failure("engine_unavailable")
    assert _allowed(breaker) and breaker.state is BreakerState.CLOSED
    breaker.record_failure("engine_unavailable")
    assert breaker.state is BreakerState.OPEN and not _allowed(breaker)
    status = breaker.status()
    assert status.opened_count == 1 and status.rejected == 1 and status.last_failure == "engine_unavailable"
    assert 1 <= status.retry_after_s <= 30


def test_failures_older_than_the_window_do_not_count() -> None:
    clock = Clock()
    breaker = _breaker(clock, window_s=60)
    for _ in range(4):
        breaker.record_failure("internal")
    clock.now += 61
    breaker.record_failure("internal")
    assert breaker.state is BreakerState.CLOSED and breaker.status().failures_in_window == 1


def test_after_the_cool_down_one_probe_runs_and_its_success_closes_the_circuit() -> None:
    clock = Clock()
    breaker = _breaker(clock, failures=1, cooldown_s=10)
    breaker.record_failure("internal")
    clock.now += 9
    assert not _allowed(breaker)
    clock.now += 1
    assert _allowed(breaker) and breaker.state is BreakerState.HALF_OPEN
    assert not _allowed(breaker)  # one probe at a time
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and _allowed(breaker)


def test_a_failed_probe_opens_the_circuit_for_another_cool_down() -> None:
    clock = Clock()
    breaker = _breaker(clock, failures=1, cooldown_s=10)
    breaker.record_failure("internal")
    clock.now += 10
    assert _allowed(breaker)
    breaker.record_failure("internal")
    assert breaker.state is BreakerState.OPEN and not _allowed(breaker)
    assert breaker.status().opened_count == 2


def test_a_probe_that_ends_without_an_outcome_frees_its_slot_at_once() -> None:
    """A probe answered from a cache, refused by a full queue, or whose caller left says nothing about the
    engine: its slot must not stay taken for a whole cool-down."""
    clock = Clock()
    breaker = _breaker(clock, failures=1, cooldown_s=30)
    breaker.record_failure("internal")
    clock.now += 31
    probe = breaker.enter()
    assert probe is not None and probe.probe and breaker.enter() is None
    breaker.leave(probe)
    assert breaker.enter() is not None and breaker.state is BreakerState.HALF_OPEN


def test_a_permit_of_an_earlier_half_open_round_frees_no_probe_of_this_one() -> None:
    clock = Clock()
    breaker = _breaker(clock, failures=1, cooldown_s=10)
    breaker.record_failure("internal")
    clock.now += 10
    old = breaker.enter()
    assert old is not None
    breaker.record_failure("internal")  # the probe failed: open again
    clock.now += 10
    assert breaker.enter() is not None  # this round's one probe
    breaker.leave(old)
    assert breaker.enter() is None


def test_while_half_open_a_refused_caller_is_told_to_retry_within_a_second() -> None:
    clock = Clock()
    breaker = _breaker(clock, failures=1, cooldown_s=60)
    breaker.record_failure("internal")
    assert breaker.retry_after_s() == 60
    clock.now += 60
    assert _allowed(breaker) and not _allowed(breaker)
    assert breaker.retry_after_s() == 1


def test_an_operator_can_force_it_open_or_closed_and_hand_it_back() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    breaker.force(BreakerMode.FORCED_OPEN)
    assert breaker.state is BreakerState.OPEN and not _allowed(breaker) and breaker.is_open()
    breaker.force(BreakerMode.FORCED_CLOSED)
    for _ in range(10):
        breaker.record_failure("internal")
    assert _allowed(breaker) and breaker.state is BreakerState.CLOSED
    breaker.force(BreakerMode.AUTO)
    assert breaker.state is BreakerState.CLOSED and breaker.status().failures_in_window == 0


def test_a_disabled_breaker_never_stops_requests() -> None:
    breaker = _breaker(Clock(), failures=1)
    breaker.configure(CircuitBreakerConfig(enabled=False))
    breaker.record_failure("internal")
    assert _allowed(breaker)


def test_an_operator_forcing_it_open_stops_requests_even_when_it_is_disabled() -> None:
    breaker = _breaker(Clock())
    breaker.configure(CircuitBreakerConfig(enabled=False))
    breaker.force(BreakerMode.FORCED_OPEN)
    assert breaker.state is BreakerState.OPEN and not _allowed(breaker)
