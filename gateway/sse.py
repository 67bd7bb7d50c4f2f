"""Server-sent events framed as OpenAI does: `data: <json>\n\n` ... `data: [DONE]\n\n`; a failure after the
first byte becomes an error event, then [DONE], so a client never waits on a stream that went wrong."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import orjson
from fastapi.responses import StreamingResponse

from aisf.services.common.errors import AisfError, InternalError

log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"
Event = dict[str, Any]


def frame(event: Event) -> bytes:
    return b"data: " + orjson.dumps(event) + b"\n\n"


async def event_stream(
    events: AsyncGenerator[Event, None], error_event: Callable[[AisfError], Event]
) -> AsyncIterator[bytes]:
    """Frames `events`; leaving early (the client went away) closes them, which cancels the work."""
    async with aclosing(events):
        try:
            async for event in events:
                yield frame(event)
        except AisfError as exc:
            log.info("stream failed", extra={"reason": exc.reason, "detail": exc.message})
            yield frame(error_event(exc))
        except Exception as exc:
            log.error("stream failed", exc_info=exc)
            yield frame(error_event(InternalError("internal error while streaming")))
    yield DONE


def sse_response(body: AsyncIterator[bytes], headers: dict[str, str] | None = None) -> StreamingResponse:
    # No caching, and no buffering by a proxy in front (nginx honours X-Accel-Buffering).
    fixed = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers={**fixed, **(headers or {})})
