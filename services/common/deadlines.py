"""The deadline of the request being served, carried in a context variable from transport to engine.

A transport binds it once (gRPC: the call's deadline; REST: the X-Aisf-Timeout-Ms header); the dataplane
narrows it (Triton's `timeout` request parameter), drops work that outlived it before an engine sees it,
and every downstream call (router client, remote engines) sends what is left, never a fixed timeout.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager

from aisf.services.common.errors import DeadlineExceeded, InvalidInput

TIMEOUT_HEADER = "x-aisf-timeout-ms"
# The longest deadline a request may ask for; far longer ones overflow gRPC's deadline arithmetic.
MAX_TIMEOUT_S = 86_400.0
# Triton's per-request timeout parameter, in microseconds.
TIMEOUT_PARAMETER = "timeout"

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("aisf_deadline", default=None)


def now() -> float:
    return time.monotonic()


def current() -> float | None:
    """The deadline (time.monotonic() seconds) of the request being served, or None."""
    return _deadline.get()


def remaining() -> float | None:
    """Seconds left before the deadline (at least 0), or None when the request has none."""
    deadline = _deadline.get()
    return None if deadline is None else max(0.0, deadline - now())


def timeout_or(default_s: float) -> float:
    """What a downstream call may wait: the time left, else `default_s`."""
    left = remaining()
    return default_s if left is None else left


def capped(limit_s: float) -> float:
    """What a downstream call may wait: the time left, but at most `limit_s`."""
    left = remaining()
    return limit_s if left is None else min(limit_s, left)


def expired() -> bool:
    deadline = _deadline.get()
    return deadline is not None and now() >= deadline


def check(where: str) -> None:
    """Raise DeadlineExceeded when the request's deadline has passed."""
    if expired():
        raise DeadlineExceeded(f"{where}: the request's deadline passed before it could run")


def bind(timeout_s: float | None) -> contextvars.Token[float | None]:
    """Set the deadline `timeout_s` from now (None: no deadline); narrows, never extends, one already set."""
    deadline = None if timeout_s is None else now() + max(0.0, timeout_s)
    outer = _deadline.get()
    if outer is not None and (deadline is None or outer < deadline):
        deadline = outer
    return _deadline.set(deadline)


@contextmanager
def bound(timeout_s: float | None) -> Iterator[None]:
    token = bind(timeout_s)
    try:
        yield
    finally:
        _deadline.reset(token)


@contextmanager
def bound_at(deadline: float | None) -> Iterator[None]:
    """Run under an absolute deadline (time.monotonic() seconds; None: none), narrowing one already set."""
    outer = _deadline.get()
    if outer is not None and (deadline is None or outer < deadline):
        deadline = outer
    token = _deadline.set(deadline)
    try:
        yield
    finally:
        _deadline.reset(token)


def parse_timeout_ms(value: str, where: str) -> float:
    """A timeout in milliseconds, as sent in a header; a clear error otherwise."""
    try:
        millis = float(value)
    except ValueError:
        raise InvalidInput(f"{where}: '{value}' is not a number of milliseconds") from None
    if not 0 < millis <= MAX_TIMEOUT_S * 1000:  # NaN fails this too
        longest = f"{MAX_TIMEOUT_S * 1000:.0f}"
        raise InvalidInput(f"{where}: must be a positive number of milliseconds up to {longest}: '{value}'")
    return millis / 1000
