"""An OpenAI batch input file: JSON lines `{"custom_id", "method": "POST", "url", "body"}` for one endpoint
and one model. A file that is not JSON lines, names another endpoint, repeats a custom_id or mixes models
is refused whole; a line that is merely malformed fails alone (its error goes to the error file)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson

from aisf.services.common import v2_codec
from aisf.services.common.errors import AisfError, InvalidInput
from aisf.services.common.v2_json import request_from_document
from aisf.services.job.model import ENDPOINTS, JobKind

_V2_ENDPOINT = re.compile(r"^/v2/models/([^/]+)(?:/versions/(\d+))?/infer$")
MAX_NAME_CHARS = 512  # a custom_id or a filename (the metadata database's column width)


@dataclass(frozen=True, slots=True)
class Endpoint:
    path: str
    kind: JobKind
    model: str = ""  # V2 endpoints name the model in the path
    version: str = ""


@dataclass(frozen=True, slots=True)
class BatchLine:
    custom_id: str | None  # None: a line that is no JSON object has none (its error line says null)
    request: bytes  # the item: an OpenAI body (JSON), or a serialized V2 request
    error: AisfError | None = None


def endpoint_of(path: str) -> Endpoint:
    if path in ENDPOINTS:
        return Endpoint(path, ENDPOINTS[path])
    found = _V2_ENDPOINT.match(path)
    if found:
        return Endpoint(path, JobKind.V2, found[1], found[2] or "")
    allowed = ", ".join([*ENDPOINTS, "/v2/models/{model}/infer"])
    raise InvalidInput(f"endpoint: must be one of {allowed}, not '{path}'")


async def parse_lines(content: AsyncIterator[bytes], endpoint: Endpoint) -> tuple[str, list[BatchLine]]:
    """The batch's model and its lines, read as the file streams in (never the whole file at once
    beside its lines)."""
    lines: list[BatchLine] = []
    models: set[str] = set()
    seen: set[str] = set()
    objects = 0
    number = 0
    async for line in _split(content):
        number += 1
        if not line.strip():
            continue
        try:
            document = orjson.loads(line)  # also refuses bytes that are not UTF-8
        except orjson.JSONDecodeError:
            document = None
        if not isinstance(document, dict):
            lines.append(BatchLine(None, b"", InvalidInput(f"line {number}: not a JSON object")))
            continue
        objects += 1
        custom_id = _header(document, number, endpoint.path)
        if custom_id in seen:
            raise InvalidInput(f"line {number}: custom_id '{custom_id}' appears twice; each must be unique")
        seen.add(custom_id)
        body = document.get("body")
        if not isinstance(body, dict):
            malformed = InvalidInput(f"line {number}: body must be a JSON object")
            lines.append(BatchLine(custom_id, b"", malformed))
            continue
        if endpoint.kind.llm:
            models.add(str(body.get("model", "")))
            lines.append(BatchLine(custom_id, orjson.dumps(body)))
        else:
            lines.append(_v2_line(custom_id, body, endpoint, number))
    if not objects:
        raise InvalidInput("input_file_id: the file is not JSON lines of batch requests")
    if endpoint.kind.llm and len(models) != 1:
        raise InvalidInput(f"input_file_id: every line must name the same model, found {sorted(models)}")
    return (models.pop() if endpoint.kind.llm else endpoint.model), lines


async def _split(content: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The lines of a byte stream (without their line ends)."""
    rest = b""
    async for chunk in content:
        *whole, rest = (rest + chunk).split(b"\n")
        for line in whole:
            yield line.removesuffix(b"\r")
    if rest:
        yield rest.removesuffix(b"\r")


def _header(document: dict[str, object], number: int, endpoint: str) -> str:
    url, method, custom_id = document.get("url"), document.get("method", "POST"), document.get("custom_id")
    if url != endpoint:
        raise InvalidInput(f"line {number}: url '{url}' is not the batch's endpoint '{endpoint}'")
    if method != "POST":
        raise InvalidInput(f"line {number}: method must be POST, not '{method}'")
    if not isinstance(custom_id, str) or not custom_id:
        raise InvalidInput(f"line {number}: custom_id is required (a non-empty string)")
    if len(custom_id) > MAX_NAME_CHARS:
        raise InvalidInput(f"line {number}: custom_id exceeds {MAX_NAME_CHARS} characters")
    return custom_id


def _v2_line(custom_id: str, body: dict[str, object], endpoint: Endpoint, number: int) -> BatchLine:
    try:
        request, _ = request_from_document(endpoint.model, endpoint.version, body)
    except InvalidInput as error:
        return BatchLine(custom_id, b"", InvalidInput(f"line {number}: {error.message}"))
    return BatchLine(custom_id, v2_codec.request_to_proto(request).SerializeToString())
