"""The free text of log records (error details, exception texts, request paths) redacted by the pii role
before it is written, off the caller's thread: records wait in a bounded queue for a background thread
that asks the pii role in batches. A record the queue has no room for, or that the pii role does not
answer for in time, is written with those fields withheld: never raw."""

from __future__ import annotations

import logging
import queue
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any

# Fields whose text may echo what a caller sent; most records carry none and pass straight through.
FREE_TEXT = ("detail", "error", "path")
EXCEPTION = "exc"
# A request-log line names a model, its version, inputs and outputs: names the model declares once the
# request was checked; before (an unknown model, an invalid request) whatever the caller wrote. Those
# lines are few; the hot path's (successes, and overload past the checks) pass straight through.
REQUEST_LOG = "aisf.requests"
_ECHOED = ("model", "version", "inputs", "outputs")
_UNCHECKED = frozenset({"model_not_found", "invalid_input", "request_too_large", "unimplemented"})
WITHHELD = "<withheld: no pii check>"
Redact = Callable[[list[str]], list[str]]
_Place = tuple[dict[str, Any] | list[Any], str | int]


def _echoes_caller(record: logging.LogRecord) -> bool:
    return record.name == REQUEST_LOG and record.__dict__.get("outcome") in _UNCHECKED


def free_text(record: logging.LogRecord) -> bool:
    return (
        record.exc_info is not None
        or any(isinstance(record.__dict__.get(f), str) for f in FREE_TEXT)
        or _echoes_caller(record)
    )


def _strings(holder: dict[str, Any] | list[Any], key: str | int, out: list[_Place]) -> None:
    """Every string under holder[key] (lists and dicts walked), as places to write back to."""
    value = holder[key]  # type: ignore[index]
    if isinstance(value, str):
        out.append((holder, key))
    elif isinstance(value, list):
        for index in range(len(value)):
            _strings(value, index, out)
    elif isinstance(value, dict):
        for name in value:
            _strings(value, name, out)


def _places(record: logging.LogRecord) -> list[_Place]:
    fields = record.__dict__
    places: list[_Place] = []
    for name in (*FREE_TEXT, EXCEPTION, *(_ECHOED if _echoes_caller(record) else ())):
        if name in fields:
            _strings(fields, name, places)
    return places


def _exception_text(record: logging.LogRecord) -> None:
    """Render the traceback now (the exception may change later) into a plain field, redactable."""
    if record.exc_info is not None:
        record.__dict__[EXCEPTION] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        record.exc_info, record.exc_text = None, None


def withhold(record: logging.LogRecord) -> logging.LogRecord:
    _exception_text(record)
    for holder, key in _places(record):
        holder[key] = WITHHELD  # type: ignore[index]
    return record


class LogRedactor:
    def __init__(
        self,
        redact: Redact,
        write: Callable[[logging.LogRecord], None],
        capacity: int = 1000,
        batch: int = 64,
    ) -> None:
        self._redact = redact
        self._write = write
        self._queue: queue.Queue[logging.LogRecord | None] = queue.Queue(capacity)
        self._batch = batch
        self._thread = threading.Thread(target=self._run, name="log-redaction", daemon=True)
        self._thread.start()

    def submit(self, record: logging.LogRecord) -> None:
        """Queue `record` for redaction; with the queue full it is written at once, its text withheld."""
        _exception_text(record)
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._write(withhold(record))

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            records = [first]
            while len(records) < self._batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._redacted(records)
                    return
                records.append(more)
            self._redacted(records)

    def _redacted(self, records: Sequence[logging.LogRecord]) -> None:
        places = [place for record in records for place in _places(record)]
        try:
            texts = self._redact([holder[key] for holder, key in places])  # type: ignore[index]
            if len(texts) != len(places):
                raise ValueError(f"the pii role answered {len(texts)} texts for {len(places)}")
            for (holder, key), text in zip(places, texts, strict=True):
                holder[key] = text  # type: ignore[index]
        except Exception:  # the pii role down or slow: the text is withheld, the record still written
            for record in records:
                withhold(record)
        for record in records:
            self._write(record)

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued (redacted, or withheld if the pii role cannot answer now), then stop."""
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            return
        self._thread.join(timeout_s)
