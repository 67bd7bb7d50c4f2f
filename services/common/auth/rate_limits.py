"""Requests a second per tenant, by tier: a token bucket per tenant in this process."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from aisf.services.common.auth.principal import Principal
from aisf.services.common.errors import RateLimited


class TierRateLimits:
    def __init__(self, rates: dict[str, float], clock: Callable[[], float] = time.monotonic) -> None:
        self._rates = {tier: rate for tier, rate in rates.items() if rate > 0}
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, when counted)

    def take(self, principal: Principal) -> None:
        rate = self._rates.get(principal.tier)
        if rate is None:
            return
        burst = max(1.0, 2 * rate)
        now = self._clock()
        tokens, then = self._buckets.get(principal.tenant, (burst, now))
        tokens = min(burst, tokens + (now - then) * rate)
        if tokens < 1:
            self._buckets[principal.tenant] = (tokens, now)
            wait = math.ceil((1 - tokens) / rate)
            raise RateLimited(
                f"tenant '{principal.tenant}' sends more than its tier '{principal.tier}' allows "
                f"({rate:g} requests/s)",
                retry_after=wait,
            )
        self._buckets[principal.tenant] = (tokens - 1, now)
