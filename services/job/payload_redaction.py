"""Stored job payloads lose their personal data before they are kept: the free text of an answered item's
request and response (V2 BYTES elements, string parameters and ids; every string value of an OpenAI
body) goes to the pii role in one Redact call per group of items, and the redacted payload replaces it.

While the pii role does not answer, the group waits (its raw answers stay in memory, the sealed request
in the database and the activity in Temporal): nothing is written raw, and nothing is lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from prometheus_client import CollectorRegistry, Counter
from tritonclient.grpc import service_pb2 as pb

from aisf.services.common.errors import AisfError, InvalidInput
from aisf.services.common.tensors import decode_bytes_tensor, encode_bytes_tensor
from aisf.services.job.model import JobKind

Redact = Callable[[list[str]], Awaitable[list[str]]]
log = logging.getLogger(__name__)

# Keys of an OpenAI body whose values are the protocol's own words, never a caller's text.
_STRUCTURAL = frozenset({"role", "object", "model", "finish_reason", "type", "system_fingerprint"})


@dataclass(slots=True)
class _Place:
    """Where one text sits in a parsed payload: holder[key] (a dict or list)."""

    holder: Any
    key: Any
    text: str


class _Payload:
    """A payload parsed far enough to read its texts and write redacted ones back."""

    def __init__(self, raw: bytes, kind: JobKind, response: bool) -> None:
        self.places: list[_Place] = []
        self._raw = raw
        self._rebuild: Callable[[], bytes] = lambda: raw
        # What cannot be read as its kind is not redacted: it stays sealed (`readable` False).
        self.readable = True
        try:
            if raw[:1] in (b"{", b"["):  # an OpenAI body, or a V2 item's error answer
                self._json(raw)
            elif kind is JobKind.V2 and raw:
                self._protobuf(raw, response)
            elif raw:
                self.readable = False
        except (ValueError, InvalidInput, DecodeError):
            self.places, self.readable = [], False

    def _json(self, raw: bytes) -> None:
        document = orjson.loads(raw)
        stack: list[Any] = [document]
        while stack:
            node = stack.pop()
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, value in items:
                if isinstance(value, str):
                    if value and key not in _STRUCTURAL:
                        self.places.append(_Place(node, key, value))
                elif isinstance(value, dict | list):
                    stack.append(value)
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
                continue
            if index < len(contents):
                elements = list(decode_bytes_tensor(contents[index], _count(tensor.shape), tensor.name))
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
                continue  # binary (an image, a blob): not text a recognizer reads
            if text:
                self.places.append(_Place(elements, index, text))

    def write(self, texts: Sequence[str]) -> bytes | None:
        if not self.readable:
            return None
        changed = False
        for place, text in zip(self.places, texts, strict=True):
            if text == place.text:
                continue
            changed = True
            if hasattr(place.holder, "DESCRIPTOR"):  # a message's string field
                setattr(place.holder, place.key, text)
            elif isinstance(place.holder[place.key], bytes):  # a BYTES element
                place.holder[place.key] = text.encode()
            else:  # a JSON value
                place.holder[place.key] = text
        return self._rebuild() if changed else self._raw


def _count(shape: Sequence[int]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def _pieces(text: str, max_chars: int) -> list[str]:
    """`text` cut at whitespace into pieces the pii role accepts (a long answer can pass its limit)."""
    pieces = []
    while len(text) > max_chars:
        cut = text.rfind(" ", max_chars // 2, max_chars) + 1 or max_chars
        pieces.append(text[:cut])
        text = text[cut:]
    return [*pieces, text]


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
        """The payloads with their personal data replaced by placeholders, in one call to the pii role
        (per `max_texts`); waits while the role does not answer. None for a payload that does not parse
        as its kind (it is kept sealed, not redacted)."""
        parsed = [_Payload(raw, kind, False) for raw in requests]
        parsed += [_Payload(raw, kind, True) for raw in responses]
        unique = list(dict.fromkeys(place.text for payload in parsed for place in payload.places))
        if not unique:
            kept = [payload.write([]) for payload in parsed]
            return kept[: len(requests)], kept[len(requests) :]
        pieces = [_pieces(text, self._max_chars) for text in unique]
        flat = [piece for split in pieces for piece in split]
        redacted_flat: list[str] = []
        for start in range(0, len(flat), self._max_texts):
            redacted_flat += await self._redacted(flat[start : start + self._max_texts])
        redacted: dict[str, str] = {}
        at = 0
        for text, split in zip(unique, pieces, strict=True):
            redacted[text] = "".join(redacted_flat[at : at + len(split)])
            at += len(split)
        cleaned = [payload.write([redacted[p.text] for p in payload.places]) for payload in parsed]
        return cleaned[: len(requests)], cleaned[len(requests) :]

    async def _redacted(self, texts: list[str]) -> list[str]:
        delay, most = self._retry_s
        waited = False
        while True:
            try:
                answer = await self._redact(texts)
            except InvalidInput:
                raise
            except (AisfError, OSError, TimeoutError) as error:
                self._waits.inc()
                if not waited:
                    log.warning(
                        "job payloads wait for the pii role before they are stored",
                        extra={"error": type(error).__name__, "retry_s": delay},
                    )
                    waited = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, most)
                continue
            if waited:
                log.info("the pii role answers again: waiting job payloads are stored redacted")
            if len(answer) != len(texts):
                raise InvalidInput(f"the pii role answered {len(answer)} texts for {len(texts)}")
            return answer
