"""Answered job items lose their personal data before they are kept: every text of a V2 request or
response (BYTES elements, string parameters, ids) and every caller string of an OpenAI body goes to the
pii role in one call, and comes back in place; numbers, binary elements and the protocol's own words stay.
While the pii role does not answer, the items wait; they are never kept raw.

The pii role is stood in for by a function that replaces the texts this test knows (the role itself is
tested in test_pii_service and test_pii_stored_payloads)."""

from __future__ import annotations

import asyncio

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry
from tritonclient.grpc import service_pb2 as pb

from aisf.services.common.errors import EngineUnavailable, InvalidInput, PermissionDenied
from aisf.services.common.tensors import decode_bytes_tensor, encode_bytes_tensor
from aisf.services.job import payload_redaction
from aisf.services.job.model import JobKind
from aisf.services.job.payload_redaction import PayloadRedactor

PHONE, MAIL = "010-1234-5678", "jane.doe@example.com"


class KnownTexts:
    """Replaces PHONE and MAIL with placeholders, and records each call's texts."""

    def __init__(self, failures: int = 0) -> None:
        self.calls: list[list[str]] = []
        self._failures = failures

    async def __call__(self, texts: list[str]) -> list[str]:
        if self._failures:
            self._failures -= 1
            raise EngineUnavailable("pii role down")
        self.calls.append(texts)
        return [t.replace(PHONE, "<PHONE_NUMBER>").replace(MAIL, "<EMAIL_ADDRESS>") for t in texts]


def _redactor(
    redact: KnownTexts,
    max_texts: int = 256,
    max_chars: int = 100_000,
    registry: CollectorRegistry | None = None,
) -> PayloadRedactor:
    return PayloadRedactor(
        redact, max_texts, max_chars, registry or CollectorRegistry(), retry_s=(0.01, 0.02)
    )


def _v2_request() -> bytes:
    request = pb.ModelInferRequest(model_name="m", id=f"order for {MAIL}")
    request.parameters["customer"].string_param = f"call {PHONE}"
    request.parameters["rows"].int64_param = 2
    text = request.inputs.add(name="text", datatype="BYTES", shape=[2])
    text.parameters["note"].string_param = MAIL
    request.raw_input_contents.append(encode_bytes_tensor([f"me: {PHONE}".encode(), "그대로".encode()]))
    typed = request.inputs.add(name="typed", datatype="BYTES", shape=[1])
    typed.contents.bytes_contents.append(f"mail {MAIL}".encode())
    return request.SerializeToString()


async def test_every_text_of_a_v2_request_is_redacted_in_place_and_the_rest_is_kept() -> None:
    redact = KnownTexts()
    (cleaned,), _ = await _redactor(redact).clean(JobKind.V2, [_v2_request()], [])
    request = pb.ModelInferRequest.FromString(cleaned)
    assert request.id == "order for <EMAIL_ADDRESS>"
    assert request.parameters["customer"].string_param == "call <PHONE_NUMBER>"
    assert request.parameters["rows"].int64_param == 2
    assert request.inputs[0].parameters["note"].string_param == "<EMAIL_ADDRESS>"
    elements = decode_bytes_tensor(request.raw_input_contents[0], 2, "text")
    assert list(elements) == [b"me: <PHONE_NUMBER>", "그대로".encode()]
    assert list(request.inputs[1].contents.bytes_contents) == [b"mail <EMAIL_ADDRESS>"]
    assert len(redact.calls) == 1  # one call for the whole group


async def test_a_v2_response_and_an_items_error_answer_are_redacted() -> None:
    response = pb.ModelInferResponse(model_name="m", id="r1")
    out = response.outputs.add(name="y", datatype="BYTES", shape=[1])
    del out
    response.raw_output_contents.append(encode_bytes_tensor([f"reach me at {PHONE}"]))
    error = orjson.dumps({"error": f"bad value {MAIL}"})
    _, (answer, failure) = await _redactor(KnownTexts()).clean(
        JobKind.V2, [], [response.SerializeToString(), error]
    )
    parsed = pb.ModelInferResponse.FromString(answer)
    assert list(decode_bytes_tensor(parsed.raw_output_contents[0], 1, "y")) == [b"reach me at <PHONE_NUMBER>"]
    assert orjson.loads(failure) == {"error": "bad value <EMAIL_ADDRESS>"}


async def test_an_openai_body_keeps_its_protocol_words_and_loses_the_callers_personal_data() -> None:
    redact = KnownTexts()
    chat = {"model": "llm-demo", "messages": [{"role": "user", "content": f"text {PHONE}"}]}
    answer = {"object": "chat.completion", "choices": [{"message": {"role": "assistant", "content": MAIL}}]}
    (request,), (response,) = await _redactor(redact).clean(
        JobKind.CHAT, [orjson.dumps(chat)], [orjson.dumps(answer)]
    )
    assert orjson.loads(request)["messages"][0] == {"role": "user", "content": "text <PHONE_NUMBER>"}
    assert orjson.loads(request)["model"] == "llm-demo"
    assert orjson.loads(response)["choices"][0]["message"]["content"] == "<EMAIL_ADDRESS>"
    assert sorted(redact.calls[0]) == sorted([f"text {PHONE}", MAIL])


async def test_payloads_without_text_make_no_call() -> None:
    redact = KnownTexts()
    body = orjson.dumps({"model": "llm-demo", "max_tokens": 4, "messages": [{"role": "user", "content": ""}]})
    assert await _redactor(redact).clean(JobKind.CHAT, [body], []) == ([body], [])
    assert redact.calls == []


async def test_texts_go_in_calls_of_at_most_max_texts_and_a_long_text_in_pieces_it_accepts() -> None:
    redact = KnownTexts()
    long_text = " ".join([f"word{i}" for i in range(400)] + [PHONE])
    bodies = [orjson.dumps({"prompt": f"p{i} {MAIL}"}) for i in range(5)] + [
        orjson.dumps({"prompt": long_text})
    ]
    cleaned, _ = await _redactor(redact, max_texts=3, max_chars=1000).clean(JobKind.COMPLETION, bodies, [])
    assert all(len(call) <= 3 for call in redact.calls)
    assert all(len(text) <= 1000 for call in redact.calls for text in call)
    assert orjson.loads(cleaned[-1])["prompt"] == long_text.replace(PHONE, "<PHONE_NUMBER>")
    assert orjson.loads(cleaned[0])["prompt"] == "p0 <EMAIL_ADDRESS>"


async def test_items_wait_while_the_pii_role_is_down_and_are_redacted_once_it_answers() -> None:
    registry = CollectorRegistry()
    redact = KnownTexts(failures=3)
    (cleaned,), _ = await _redactor(redact, registry=registry).clean(
        JobKind.COMPLETION, [orjson.dumps({"prompt": PHONE})], []
    )
    assert cleaned is not None and orjson.loads(cleaned) == {"prompt": "<PHONE_NUMBER>"}
    assert registry.get_sample_value("aisf_job_payload_redaction_waits_total") == 3


async def test_a_wait_is_cancellable_and_keeps_nothing() -> None:
    redactor = _redactor(KnownTexts(failures=10**6))
    waiting = asyncio.ensure_future(redactor.clean(JobKind.COMPLETION, [orjson.dumps({"prompt": PHONE})], []))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


def _v2_with(datatype: str, raw: bytes) -> bytes:
    request = pb.ModelInferRequest(model_name="m", id=MAIL)
    request.inputs.add(name="x", datatype=datatype, shape=[1])
    request.raw_input_contents.append(raw)
    return request.SerializeToString()


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        (JobKind.V2, b"\x08\x96"),  # not a V2 request
        (JobKind.CHAT, orjson.dumps({"error": MAIL})[:-1]),  # not JSON
        (JobKind.V2, _v2_with("FP32", np.array([1.5], np.float32).tobytes())),  # numbers about someone
        (JobKind.V2, _v2_with("BYTES", encode_bytes_tensor([b"\xff\xd8\xff image"]))),  # not text
        (JobKind.COMPLETION, orjson.dumps({"prompt": [15, 3, 77], "user": MAIL})),  # token ids
        (JobKind.EMBEDDING, orjson.dumps({"data": [{"embedding": [0.1, 0.2]}], "user": MAIL})),
        (JobKind.CHAT, orjson.dumps({"messages": [{"content": "data:image/png;base64,iVBO"}]})),
    ],
)
async def test_a_payload_that_is_not_wholly_text_is_kept_sealed_not_redacted(
    kind: JobKind, payload: bytes
) -> None:
    redact = KnownTexts()
    assert await _redactor(redact).clean(kind, [payload], []) == ([None], [])
    assert redact.calls == []


async def test_a_text_with_no_whitespace_to_cut_at_keeps_its_payload_sealed_and_the_others_redacted() -> None:
    unbroken = orjson.dumps({"prompt": "x" * 3000 + MAIL})
    fine = orjson.dumps({"prompt": f"hi {MAIL}"})
    cleaned, _ = await _redactor(KnownTexts(), max_chars=1000).clean(JobKind.COMPLETION, [unbroken, fine], [])
    assert cleaned[0] is None
    assert cleaned[1] is not None and orjson.loads(cleaned[1]) == {"prompt": "hi <EMAIL_ADDRESS>"}


async def test_calls_are_bounded_by_characters_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(payload_redaction, "_CALL_CHARS", 100)
    redact = KnownTexts()
    bodies = [orjson.dumps({"prompt": f"{i:02d} " + "w " * 20}) for i in range(10)]
    await _redactor(redact).clean(JobKind.COMPLETION, bodies, [])
    assert len(redact.calls) > 1 and all(sum(map(len, call)) <= 100 for call in redact.calls)


async def test_a_refusal_other_than_unavailable_is_raised_not_waited_on() -> None:
    async def deny(texts: list[str]) -> list[str]:
        raise PermissionDenied("the pii role does not know this role's token")

    with pytest.raises(PermissionDenied):
        await PayloadRedactor(deny, 10, 100, CollectorRegistry()).clean(
            JobKind.COMPLETION, [orjson.dumps({"prompt": "x"})], []
        )


async def test_a_refusal_of_the_texts_themselves_is_not_waited_on() -> None:
    async def refuse(texts: list[str]) -> list[str]:
        raise InvalidInput("texts[0]: over the limit")

    with pytest.raises(InvalidInput):
        await PayloadRedactor(refuse, 10, 10, CollectorRegistry()).clean(
            JobKind.COMPLETION, [orjson.dumps({"prompt": "x"})], []
        )
