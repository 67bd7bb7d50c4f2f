"""Log records' free text (error details, exceptions, paths) is written redacted by the pii role, from a
background thread; when the pii role cannot answer, or the queue is full, that text is withheld."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aisf.services.common.log_redaction import WITHHELD
from aisf.services.common.logging import BatchingHandler, JsonFormatter
from aisf.services.common.settings import Settings
from aisf.services.pii.servicer import PiiLane


def _handler() -> tuple[BatchingHandler, io.StringIO]:
    stream = io.StringIO()
    handler = BatchingHandler(stream)
    handler.setFormatter(JsonFormatter())
    return handler, stream


def _lines(stream: io.StringIO, count: int, timeout_s: float = 10) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        if len(lines) >= count:
            return lines
        time.sleep(0.02)
    raise AssertionError(f"fewer than {count} lines: {stream.getvalue()}")


def _record(message: str, **extra: object) -> logging.LogRecord:
    return logging.makeLogRecord(
        {"name": "aisf.test", "levelno": logging.INFO, "levelname": "INFO", "msg": message, **extra}
    )


@pytest.fixture(scope="module")
def lane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PiiLane]:
    import asyncio

    loop = asyncio.new_event_loop()
    made = PiiLane(Settings(data_dir=Path(tmp_path_factory.mktemp("pii"))))
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    asyncio.run_coroutine_threadsafe(_start(made), loop).result(60)
    yield made
    asyncio.run_coroutine_threadsafe(made.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    runner.join(5)
    loop.close()


async def _start(lane: PiiLane) -> None:
    lane.start()
    await lane.analyzer()


def test_details_and_exceptions_are_written_redacted(lane: PiiLane) -> None:
    handler, stream = _handler()
    handler.use_redaction(lane.redact_blocking)
    handler.emit(
        _record("request rejected", detail="unknown model 'call 010-1234-5678'", path="/v2/models/x")
    )
    try:
        raise ValueError("bad e-mail jane.doe@example.com")
    except ValueError:
        import sys

        handler.emit(_record("request failed", exc_info=sys.exc_info()))
    first, second = _lines(stream, 2)
    assert first["detail"] == "unknown model 'call <PHONE_NUMBER>'" and first["path"] == "/v2/models/x"
    assert "<EMAIL_ADDRESS>" in str(second["exc"]) and "jane.doe" not in stream.getvalue()
    handler.close()


def test_lines_without_free_text_are_not_held_up() -> None:
    handler, stream = _handler()
    release = threading.Event()

    def slow(texts: list[str]) -> list[str]:
        release.wait(5)
        return texts

    handler.use_redaction(slow)
    handler.emit(_record("request rejected", detail="waits for the pii role"))
    handler.emit(_record("engine loaded", model="tabular-demo"))
    assert [line["msg"] for line in _lines(stream, 1)] == ["engine loaded"]
    release.set()
    assert [line["msg"] for line in _lines(stream, 2)] == ["engine loaded", "request rejected"]
    handler.close()


def test_a_pii_role_that_fails_gets_the_text_withheld_never_written_raw() -> None:
    handler, stream = _handler()

    def down(texts: list[str]) -> list[str]:
        raise TimeoutError("the pii role is not answering")

    handler.use_redaction(down)
    handler.emit(_record("request rejected", detail="phone 010-1234-5678", error="also 010-9999-8888"))
    (line,) = _lines(stream, 1)
    assert (line["detail"], line["error"]) == (WITHHELD, WITHHELD) and "010-" not in stream.getvalue()
    handler.close()


def test_a_full_queue_writes_at_once_with_the_text_withheld() -> None:
    from aisf.services.common.log_redaction import LogRedactor

    written: list[logging.LogRecord] = []
    release = threading.Event()
    redactor = LogRedactor(lambda texts: (release.wait(5), texts)[1], written.append, capacity=1, batch=1)
    redactor.submit(_record("a", detail="first 010-1111-2222"))  # taken by the thread, waiting
    time.sleep(0.1)
    redactor.submit(_record("b", detail="second 010-3333-4444"))  # fills the queue
    redactor.submit(_record("c", detail="third 010-5555-6666"))  # no room: withheld, written now
    assert [(r.msg, r.__dict__["detail"]) for r in written] == [("c", WITHHELD)]
    release.set()
    redactor.close()
    assert [r.msg for r in written] == ["c", "a", "b"]
