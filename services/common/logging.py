"""Structured logs carrying the call being served: JSON lines for machines, readable text in a terminal."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from typing import Any, Literal, TextIO

import orjson

from aisf.services.common import call_context
from aisf.services.common.log_redaction import LogRedactor, Redact, free_text

LogFormat = Literal["auto", "json", "text"]

# uvicorn puts an ANSI-coloured copy of its message in `color_message`: never ours to print.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName", "color_message"}
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _plain(text: str) -> str:
    return _ANSI.sub("", text) if "\x1b" in text else text


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The call's context, then what the record itself carries."""
    fields: dict[str, Any] = {}
    for name, variable in (
        ("request_id", call_context.request_id),
        ("tenant", call_context.tenant),
        ("lane", call_context.lane),
    ):
        if value := variable.get():
            fields[name] = value
    fields.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _plain(record.getMessage()),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        try:  # orjson: a third of json.dumps' time on request lines
            return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:  # what orjson refuses (an int over 64 bits, a lone surrogate) json still writes
            return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger message key=value ...`: what a person reads in a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.name}: "
            f"{_plain(record.getMessage())}"
        )
        extras = " ".join(f"{k}={_text(v)}" for k, v in _fields(record).items())
        if extras:
            line += "  " + extras
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text(value: object) -> str:
    if isinstance(value, str):
        return value if value and " " not in value else json.dumps(value)
    return json.dumps(value, default=str, separators=(",", ":"))


def resolve_format(fmt: LogFormat, stream: TextIO) -> Literal["json", "text"]:
    """`auto`: text for a person at a terminal, JSON for everything that collects logs."""
    if fmt != "auto":
        return fmt
    return "text" if stream.isatty() else "json"


class BatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes every line at once, except successful request-log lines (thousands a second on the hot
    path): those go out together, every `every_s` or `max_bytes`, still in order with the rest. One
    write per batch instead of per line spares the system calls and the wake-ups of whatever reads the
    logs (a pipe to a log shipper), which cost more than formatting the lines. A failure's line never
    waits (a crash must not take it along), and a broken stream never reaches the caller."""

    def __init__(
        self, stream: TextIO, batched: str = "aisf.requests", every_s: float = 0.2, max_bytes: int = 1 << 16
    ) -> None:
        super().__init__(stream)
        self._batched, self._every_s, self._max_bytes = batched, every_s, max_bytes
        self._pending: list[str] = []
        self._size = 0
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self._redactor: LogRedactor | None = None

    def use_redaction(self, redact: Redact) -> None:
        """From now on records with free text (error details, exceptions, paths) are written once
        `redact` (the pii role) has redacted it, from a background thread (log_redaction)."""
        self._redactor = LogRedactor(redact, self._write_record)

    def _batches(self, record: logging.LogRecord) -> bool:
        return (
            record.name == self._batched
            and record.levelno < logging.WARNING
            and record.__dict__.get("outcome") == "success"
        )

    def emit(self, record: logging.LogRecord) -> None:
        if self._redactor is not None and free_text(record):
            self._redactor.submit(record)
            return
        self._write_record(record)

    def _write_record(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
            with self.lock:  # type: ignore[union-attr]
                if self._batches(record):
                    self._pending.append(line)
                    self._size += len(line)
                    if self._size >= self._max_bytes:
                        self._write_pending()
                    elif self._flusher is None:
                        self._flusher = threading.Thread(
                            target=self._flush_every, name="log-flush", daemon=True
                        )
                        self._flusher.start()
                    return
                self._write_pending()
                self.stream.write(line)
                self.stream.flush()
        except Exception:  # a closed pipe or a full disk: logging's own report, never the caller's error
            self.handleError(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()
            super().flush()

    def close(self) -> None:
        if self._redactor is not None:
            self._redactor.close()
        self._stop.set()
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join(timeout=1)
        try:
            self.flush()
        except Exception:
            pass  # closing at exit: a stream that is gone takes its last batch with it
        super().close()

    def _write_pending(self) -> None:
        if not self._pending:
            return
        batch = "".join(self._pending)
        self._pending.clear()  # dropped on a failed write: a broken stream must not grow it forever
        self._size = 0
        self.stream.write(batch)
        self.stream.flush()

    def _flush_every(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                self.flush()
            except Exception:
                continue  # the stream may come back (a restarted shipper); keep flushing


def use_log_redaction(redact: Redact) -> None:
    """Redact the free text of this process's log records with `redact` before they are written."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, BatchingHandler):
            handler.use_redaction(redact)


def configure_logging(level: str, fmt: LogFormat) -> None:
    handler = BatchingHandler(sys.stderr)
    chosen = resolve_format(fmt, sys.stderr)
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log would print every request; the request log says what matters.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
