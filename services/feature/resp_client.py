"""A lean asyncio Redis client for the feature fast path: RESP over one pipelined connection, hiredis
packing commands and parsing replies in C. redis-py's asyncio client costs ~0.15 ms a call in pool and
lock bookkeeping on these machines; this one costs a write and a future."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from collections import deque
from typing import Any

import hiredis


class RedisUnavailable(ConnectionError):
    """The server did not answer, refused the connection, or dropped it."""


class RedisReplyError(RuntimeError):
    """The server answered with an error reply."""


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            waiter = self._waiting.popleft()  # replies come in request order; a cancelled caller's too
            if waiter.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                waiter.set_exception(RedisReplyError(str(reply)))
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(RedisUnavailable(f"connection lost: {exc or 'closed by the server'}"))

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        assert self.transport is not None
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        self.transport.write(packed)
        return waiter

    def close(self) -> None:
        self.closed = True  # at once: the next call must not reuse a connection that is going
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[Any], connection: _Connection, timeout_s: float) -> None:
    """No reply in time: the connection's state is unknown, so it goes (the next call connects again)."""
    if not waiter.done():
        waiter.set_exception(RedisUnavailable(f"no answer within {timeout_s} s"))
        connection.close()


class RespClient:
    """Calls bounded by `timeout_s`; a call that times out closes the connection (its state is unknown) and
    the next call connects again, so a Redis that comes back is used at once."""

    def __init__(self, host: str, port: int, db: int, password: str, use_ssl: bool, timeout_s: float) -> None:
        self._address = (host, port)
        self._setup: list[tuple[Any, ...]] = [("AUTH", password)] if password else []
        if db:
            self._setup.append(("SELECT", db))
        self._ssl = ssl.create_default_context() if use_ssl else None
        self._timeout_s = timeout_s
        self._connection: _Connection | None = None
        self._connecting: asyncio.Lock | None = None

    async def _connected(self) -> _Connection:
        if self._connection is not None and not self._connection.closed:
            return self._connection
        self._connecting = self._connecting or asyncio.Lock()
        async with self._connecting:
            if self._connection is None or self._connection.closed:
                loop = asyncio.get_running_loop()
                try:
                    _, connection = await asyncio.wait_for(
                        loop.create_connection(_Connection, *self._address, ssl=self._ssl), self._timeout_s
                    )
                except (OSError, TimeoutError) as exc:
                    raise RedisUnavailable(f"cannot connect: {exc or type(exc).__name__}") from None
                for command in self._setup:
                    await asyncio.wait_for(connection.send(hiredis.pack_command(command)), self._timeout_s)
                self._connection = connection
        return self._connection

    async def call(self, *args: Any) -> Any:
        connection = await self._connected()
        waiter = connection.send(hiredis.pack_command(args))
        # A timer on the reply's future itself: asyncio.wait_for wraps it and costs loop turns per call.
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self._timeout_s, _expire, waiter, connection, self._timeout_s)
        try:
            return await waiter
        finally:
            timer.cancel()

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class Script:
    """A Lua script run by its SHA1, loaded again when the server does not know it (after a restart)."""

    def __init__(self, client: RespClient, source: str) -> None:
        self._client = client
        self._source = source
        self._sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, keys: list[bytes], args: list[Any]) -> Any:
        try:
            return await self._client.call("EVALSHA", self._sha, len(keys), *keys, *args)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        with contextlib.suppress(RedisReplyError):
            await self._client.call("SCRIPT", "LOAD", self._source)
        return await self._client.call("EVAL", self._source, len(keys), *keys, *args)
