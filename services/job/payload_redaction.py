"""Stored job payloads lose their personal data before they are kept: the free text of an answered item's
request and response (V2 BYTES elements, string parameters and ids; every caller string of an OpenAI
body) goes to the pii role in one Redact call per group of items, and the redacted payload replaces it.

Only what is wholly text can be redacted: a payload holding numbers a person may be described by (a V2
tensor of another datatype, token ids, embeddings), an image (a data URI, bytes that are not UTF-8) or a
text the pii role cannot take whole is not redacted but kept sealed, as everything is without a pii role.
While the pii role does not answer, the group waits (its answers in memory, the requests sealed in the
database, the activity in Temporal): nothing is written raw, and nothing is lost."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from prometheus_client import CollectorRegistry, Counter
from tritonclient.grpc import service_pb2 as pb

from aisf.services.common.errors import AisfError, Code, InvalidInput
from aisf.services.common.tensors import decode_bytes_tensor, element_count, encode_bytes_tensor
from aisf.services.job.model import JobKind

Redact = Callable[[list[str]], Awaitable[list[str]]]
log = logging.getLogger(__name__)

# Keys of an OpenAI body whose values are the protocol's own words, never a caller's text.
_STRUCTURAL = frozenset({"role", "object", "model", "finish_reason", "type", "system_fingerprint"})
# What a pii role that is starting, stopped or busy answers: worth waiting for. Anything else is not.
_TRANSIENT = frozenset({Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.RESOURCE_EXHAUSTED})
# Characters one Redact call carries at most (a gRPC message of a few MB), whatever the count of texts.
_CALL_CHARS = 1_000_000
_SPACE = re.compile(r"\s")


class Unredactable(Exception):
    """A payload that is not wholly text the pii role can read: it is kept sealed instead."""


@dataclass(slots=True)
class _Place:
    """Where one text sits in a parsed payload: holder[key] (a dict or list) or a message's field."""

    holder: Any
    key: Any
    text: str


class _Payload:
    """A payload parsed far enough to read its texts and write redacted ones back."""

    def __init__(self, raw: bytes, kind: JobKind, response: bool) -> None:
        self.places: list[_Place] = []
        self._raw = raw
        self._rebuild: Callable[[], bytes] = lambda: raw
        self.readable = True  # False: kept sealed, not redacted
        try:
            if raw[:1] in (b"{", b"["):  # an OpenAI body, or a V2 item's error answer
                self._json(raw)
            elif kind is JobKind.V2 and raw:
                self._protobuf(raw, response)
            elif raw:
                raise Unredactable("not a payload of its kind")
        except (ValueError, InvalidInput, DecodeError, Unredactable):
            self.places, self.readable = [], False

    def _json(self, raw: bytes) -> None:
        document = orjson.loads(raw)
        stack: list[Any] = [document]
        while stack:
            node = stack.pop()
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, value in items:
                if isinstance(value, str):
                    if value.startswith("data:"):
                        raise Unredactable("a data URI (an image, a file)")
                    if value and key not in _STRUCTURAL:
                        self.places.append(_Place(node, key, value))
                elif isinstance(value, dict | list):
                    stack.append(value)
                elif (
                    isinstance(node, list) and isinstance(value, int | float) and not isinstance(value, bool)
                ):
                    raise Unredactable("numbers in an array (token ids, an embedding)")
        self._rebuild = lambda: orjson.dumps(document)

    def _protobuf(self, raw: bytes, response: bool) -> None:
        # Requests and responses share the shape that matters: id, parameters, tensors with parameters.
        message: Any
        if response:
            message = pb.ModelInferResponse.FromString(raw)
            tensors, contents = message.outputs, message.raw_output_contents
        else:
            message = pb.ModelInferRequest.FromString(raw)
            tensors, contents = message.inputs, message.raw_input_contents
        if message.id:
            self.places.append(_Place(message, "id", message.id))
        self._parameters(message.parameters)
        raw_tensors: list[tuple[int, list[Any]]] = []
        for index, tensor in enumerate(tensors):
            self._parameters(tensor.parameters)
            if tensor.datatype != "BYTES":
                raise Unredactable(f"a {tensor.datatype} tensor")
            if index < len(contents):
                elements = list(
                    decode_bytes_tensor(contents[index], element_count(tensor.shape), tensor.name)
                )
                raw_tensors.append((index, elements))
                self._elements(elements)
            else:
                self._elements(tensor.contents.bytes_contents)

        def rebuild() -> bytes:
            for index, elements in raw_tensors:
                contents[index] = encode_bytes_tensor(elements)
            return bytes(message.SerializeToString())

        self._rebuild = rebuild

    def _parameters(self, parameters: Any) -> None:
        for value in parameters.values():
            if value.WhichOneof("parameter_choice") == "string_param" and value.string_param:
                self.places.append(_Place(value, "string_param", value.string_param))

    def _elements(self, elements: Any) -> None:
        for index, element in enumerate(elements):
            try:
                text = bytes(element).decode("utf-8")
            except UnicodeDecodeError:
                raise Unredactable("BYTES that are not UTF-8 text") from None
            if text:
                self.places.append(_Place(elements, index, text))

    def write(self, redacted: dict[str, str | None]) -> bytes | None:
        """The payload with its texts redacted; None when it is kept sealed (unreadable, or one of its
        texts could not be redacted whole)."""
        if not self.readable or any(redacted[place.text] is None for place in self.places):
            return None
        changed = False
        for place in self.places:
            text = redacted[place.text]
            if text == place.text:
                continue
            changed = True
            if hasattr(place.holder, "DESCRIPTOR"):  # a message's string field
                setattr(place.holder, place.key, text)
            elif isinstance(place.holder[place.key], bytes):  # a BYTES element
                place.holder[place.key] = text.encode()  # type: ignore[union-attr]
            else:  # a JSON value
                place.holder[place.key] = text
        return self._rebuild() if changed else self._raw


def _pieces(text: str, max_chars: int) -> list[str] | None:
    """`text` cut at whitespace into pieces the pii role accepts (a long answer can pass its limit); None
    when a stretch of `max_chars // 2` characters has no whitespace to cut at (a cut could split the very
    number or address to be found)."""
    pieces = []
    while len(text) > max_chars:
        window = text[max_chars // 2 : max_chars]
        spaces = [m.end() for m in _SPACE.finditer(window)]
        if not spaces:
            return None
        cut = max_chars // 2 + spaces[-1]
        pieces.append(text[:cut])
        text = text[cut:]
    return [*pieces, text]


def _calls(texts: list[str], max_texts: int) -> list[list[str]]:
    """`texts` in calls of at most `max_texts` texts and about _CALL_CHARS characters."""
    calls: list[list[str]] = [[]]
    size = 0
    for text in texts:
        if calls[-1] and (len(calls[-1]) == max_texts or size + len(text) > _CALL_CHARS):
            calls.append([])
            size = 0
        calls[-1].append(text)
        size += len(text)
    return calls


class PayloadRedactor:
    def __init__(
        self,
        redact: Redact,
        max_texts: int,
        max_chars: int,
        registry: CollectorRegistry,
        retry_s: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        self._redact = redact
        self._waits = Counter(
            "aisf_job_payload_redaction_waits",
            "Times answered job items waited for the pii role before they could be kept redacted.",
            registry=registry,
        )
        self._max_texts = max_texts
        self._max_chars = max_chars
        self._retry_s = retry_s

    async def clean(
        self, kind: JobKind, requests: Sequence[bytes], responses: Sequence[bytes]
    ) -> tuple[list[bytes | None], list[bytes | None]]:
        """The payloads with their personal data replaced by placeholders, in as few calls to the pii role
        as its limits allow; waits while the role is unavailable. None for a payload kept sealed instead.
        Raises the pii role's error when it refuses for any other reason."""
        parsed = [_Payload(raw, kind, False) for raw in requests]
        parsed += [_Payload(raw, kind, True) for raw in responses]
        unique = list(
            dict.fromkeys(place.text for payload in parsed if payload.readable for place in payload.places)
        )
        split = {text: _pieces(text, self._max_chars) for text in unique}
        flat = [piece for pieces in split.values() if pieces is not None for piece in pieces]
        answers: list[str] = []
        for call in _calls(flat, self._max_texts) if flat else []:
            answers += await self._redacted(call)
        redacted: dict[str, str | None] = {}
        at = 0
        for text, pieces in split.items():
            if pieces is None:
                redacted[text] = None
                continue
            redacted[text] = "".join(answers[at : at + len(pieces)])
            at += len(pieces)
        cleaned = [payload.write(redacted) for payload in parsed]
        return cleaned[: len(requests)], cleaned[len(requests) :]

    async def _redacted(self, texts: list[str]) -> list[str]:
        delay, most = self._retry_s
        waited = False
        while True:
            try:
                answer = await self._redact(texts)
            except AisfError as error:
                if error.code not in _TRANSIENT:
                    raise
                failure: Exception = error
            except (OSError, TimeoutError) as error:
                failure = error
            else:
                if waited:
                    log.info("the pii role answers again: waiting job payloads are stored redacted")
                if len(answer) != len(texts):
                    raise InvalidInput(f"the pii role answered {len(answer)} texts for {len(texts)}")
                return answer
            self._waits.inc()
            if not waited:
                log.warning(
                    "job payloads wait for the pii role before they are stored",
                    extra={"error": type(failure).__name__, "retry_s": delay},
                )
                waited = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, most)
