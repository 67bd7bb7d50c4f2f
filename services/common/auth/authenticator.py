"""Checks an `Authorization: Bearer <key>` value: from a short-lived cache on the request path, from the
database every `cache_s` per key (so a revoked key or a changed tier takes effect within it)."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

from aisf.services.common.auth import keys
from aisf.services.common.auth.key_store import KeyStore
from aisf.services.common.auth.principal import Principal
from aisf.services.common.auth.rate_limits import TierRateLimits
from aisf.services.common.errors import Unauthenticated

_CACHED_KEYS = 10_000
_SCHEME = "bearer "


def bearer(authorization: str | None) -> str:
    """The key an Authorization value carries (never echoed back: it is a secret)."""
    if not authorization:
        raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'")
    if authorization[: len(_SCHEME)].lower() != _SCHEME:
        raise Unauthenticated("authorization: expected 'Bearer <key>'")
    return authorization[len(_SCHEME) :].strip()


class Authenticator:
    def __init__(
        self,
        store: KeyStore,
        cache_s: float,
        limits: TierRateLimits,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._cache_s = cache_s
        self._limits = limits
        self._clock = clock
        self._cache: OrderedDict[str, tuple[Principal | None, float]] = OrderedDict()
        self._checking: dict[str, asyncio.Future[Principal | None]] = {}

    async def principal(self, authorization: str | None) -> Principal:
        """The caller's principal, counted against its tier's rate limit."""
        token = bearer(authorization)
        hit = self._cache.get(token)
        found = hit[0] if hit is not None and hit[1] > self._clock() else await self._check(token)
        if found is None:
            raise Unauthenticated("unknown or revoked API key")
        self._limits.take(found)
        return found

    async def _check(self, token: str) -> Principal | None:
        """One database read per key however many requests bring it at once."""
        pending = self._checking.get(token)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Principal | None] = asyncio.get_running_loop().create_future()
        self._checking[token] = future
        try:
            found = await self._read(token)
            future.set_result(found)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters see it, the loop does not log it
            raise
        finally:
            del self._checking[token]
        self._cache[token] = (found, self._clock() + self._cache_s)
        self._cache.move_to_end(token)
        while len(self._cache) > _CACHED_KEYS:
            self._cache.popitem(last=False)
        return found

    async def _read(self, token: str) -> Principal | None:
        parts = keys.split(token)
        if parts is None:
            return None
        key_id, secret = parts
        record = await self._store.lookup(key_id)
        if (
            record is None
            or record.revoked_at is not None
            or not keys.matches(record.salt, record.digest, secret)
        ):
            return None
        return record.principal()
