"""The feature fast path's Redis client: pipelined replies reach their own callers, a caller that gives up
does not shift the replies of the next, and a server that never answers is a typed error within the
timeout (then the next call connects again)."""

from __future__ import annotations

import asyncio
import time

import pytest

from aisf.services.feature.resp_client import RedisUnavailable, RespClient


def _client(port: int = 6379, timeout_s: float = 2.0) -> RespClient:
    return RespClient("127.0.0.1", port, 0, "", False, timeout_s)


async def test_concurrent_calls_on_one_connection_each_get_their_own_reply() -> None:
    client = _client()
    try:
        replies = await asyncio.gather(*(client.call("ECHO", f"m{i}") for i in range(200)))
        assert replies == [f"m{i}".encode() for i in range(200)]
    finally:
        await client.close()


async def test_a_caller_that_gives_up_leaves_the_next_reply_to_the_next_caller() -> None:
    client = _client()
    try:
        await client.call("PING")
        gone = asyncio.ensure_future(client.call("ECHO", "first"))
        await asyncio.sleep(0)
        gone.cancel()
        assert await client.call("ECHO", "second") == b"second"
    finally:
        await client.close()


async def test_a_server_that_never_answers_is_unavailable_within_the_timeout() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = _client(port, timeout_s=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(RedisUnavailable, match="no answer within 0.2 s"):
            await client.call("PING")
        assert time.monotonic() - started < 1.0
        with pytest.raises(RedisUnavailable):
            await client.call("PING")  # a new connection, silent again
        assert len(accepted) == 2
    finally:
        await client.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
