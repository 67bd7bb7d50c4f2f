import io
import json
import logging

from aisf.services.common.logging import BatchingHandler, JsonFormatter, TextFormatter, resolve_format


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "uvicorn.error", "levelname": "INFO", "msg": message})
    record.__dict__.update(extra)
    return record


def test_auto_is_text_at_a_terminal_and_json_everywhere_else() -> None:
    assert resolve_format("auto", _Terminal()) == "text"
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("json", _Terminal()) == "json"


def test_json_lines_carry_no_colour_codes_nor_uvicorns_coloured_copy() -> None:
    record = _record(
        "Uvicorn running on \x1b[1mhttp://x\x1b[0m", color_message="\x1b[32mcoloured\x1b[0m", port=1
    )
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "Uvicorn running on http://x"
    assert "color_message" not in entry and entry["port"] == 1
    assert "\x1b" not in json.dumps(entry)


def test_text_lines_read_as_message_then_key_values() -> None:
    line = TextFormatter().format(
        _record("model loaded", model="tabular-demo", versions=[1], note="two words")
    )
    assert not line.startswith("{") and " INFO    uvicorn.error: model loaded" in line
    assert 'model=tabular-demo versions=[1] note="two words"' in line


def test_successful_request_lines_go_out_in_batches_and_in_order_with_the_rest() -> None:
    stream = io.StringIO()
    handler = BatchingHandler(stream, every_s=60)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))

    def emit(name: str, message: str, outcome: str = "success", level: int = logging.INFO) -> None:
        record = logging.makeLogRecord({"name": name, "msg": message, "levelno": level, "outcome": outcome})
        handler.handle(record)

    emit("aisf.requests", "one")
    emit("aisf.requests", "two")
    assert stream.getvalue() == ""  # batched: no write per line
    emit("aisf.router", "model loaded")  # any other line writes the batch first
    assert stream.getvalue().splitlines() == [
        "aisf.requests one",
        "aisf.requests two",
        "aisf.router model loaded",
    ]
    emit("aisf.requests", "three")
    emit("aisf.requests", "refused", outcome="engine_unavailable")  # a failure's line never waits
    assert stream.getvalue().splitlines()[-2:] == ["aisf.requests three", "aisf.requests refused"]
    emit("aisf.requests", "four")
    handler.flush()  # what logging.shutdown() calls at exit
    assert stream.getvalue().splitlines()[-1] == "aisf.requests four"
    handler.close()


class _BrokenPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError("the log reader went away")


def test_a_broken_log_stream_never_reaches_the_caller() -> None:
    handler = BatchingHandler(_BrokenPipe(), every_s=60, max_bytes=1)
    handler.setFormatter(logging.Formatter("%(message)s"))
    reported: list[logging.LogRecord] = []
    handler.handleError = reported.append  # type: ignore[method-assign]
    for outcome in ("success", "invalid_input"):
        handler.handle(logging.makeLogRecord({"name": "aisf.requests", "msg": "x", "outcome": outcome}))
    assert len(reported) == 2  # logging's own report, nothing raised
    handler.close()
