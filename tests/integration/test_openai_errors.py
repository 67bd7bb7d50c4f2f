"""Bad input, overload and client disconnects on the OpenAI routes of a real `aisf serve`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai import OpenAI

from aisf.services.llm_samples import build_llm_demo
from tests.support.llm import scrape
from tests.support.processes import AisfProcess, running_aisf

pytestmark = pytest.mark.integration

MODEL = "llm-demo"
HELLO = [{"role": "user", "content": "hello world"}]
LABELS = {"model": MODEL, "version": "1"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AisfProcess]:
    """llm-demo alone, with no queue: a second concurrent generation is refused at once."""
    repository = tmp_path_factory.mktemp("llm-models")
    build_llm_demo(repository)
    env = {"AISF_LLM_MAX_WAITING": "0"}
    with running_aisf(repository, tmp_path_factory.mktemp("data"), env=env) as server:
        yield server


@pytest.fixture(scope="module")
def client(server: AisfProcess) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"http://{server.http_url}/v1", api_key="unused", max_retries=0) as client:
        yield client


def test_an_unknown_model_is_a_404_model_not_found(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert raised.value.code == "model_not_found"
    assert raised.value.body == {
        "message": "unknown model 'no-such-model'",
        "type": "invalid_request_error",
        "param": None,
        "code": "model_not_found",
    }


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "hello world " * 800}]}, "messages"),
        ({"n": 0}, "n"),
    ],
)
def test_bad_requests_are_a_400_naming_the_field(
    client: OpenAI, options: dict[str, object], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(**{"model": MODEL, "messages": HELLO, **options})
    assert raised.value.param == param and param.split("[")[0] in raised.value.message


def test_invalid_json_is_a_400_in_openai_shape(server: AisfProcess) -> None:
    response = httpx.post(f"http://{server.http_url}/v1/chat/completions", content=b'{"model": ', timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "not valid JSON" in response.json()["error"]["message"]


def _long_stream(http: httpx.Client, url: str) -> httpx.Response:
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 480, "n": 16, "stream": True}
    return http.send(http.build_request("POST", url, json=body), stream=True)


def test_an_overloaded_engine_answers_429_with_retry_after(server: AisfProcess, client: OpenAI) -> None:
    url = f"http://{server.http_url}/v1/chat/completions"
    with httpx.Client(timeout=30) as http:
        busy = _long_stream(http, url)
        # Keep the iterator alive: a collected one closes the response, which frees the engine.
        lines = busy.iter_lines()
        try:
            assert next(lines).startswith("data: ")
            with pytest.raises(openai.RateLimitError) as raised:
                client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4)
        finally:
            busy.close()
    assert raised.value.response.headers["retry-after"] == "1"
    assert raised.value.code == "engine_overloaded"


def _wait_idle(server: AisfProcess) -> None:
    deadline = time.monotonic() + 10
    while scrape(server.metrics_port, "aisf_llm_generations_in_flight", **LABELS) != 0:
        assert time.monotonic() < deadline, "the generation kept running after the client left"
        time.sleep(0.05)


def test_closing_the_sse_response_early_stops_the_engine(server: AisfProcess) -> None:
    _wait_idle(server)
    url = f"http://{server.http_url}/v1/chat/completions"
    before = scrape(server.metrics_port, "aisf_llm_engine_tokens_total", **LABELS)
    cancelled = scrape(
        server.metrics_port, "aisf_llm_requests_total", **LABELS, kind="chat", outcome="cancelled"
    )
    with httpx.Client(timeout=30) as http:
        response = _long_stream(http, url)
        lines = response.iter_lines()
        events = [line for line in (next(lines) for _ in range(10)) if line.startswith("data: {")]
        response.close()
    assert events  # it was streaming when the client left
    _wait_idle(server)
    stopped_at = scrape(server.metrics_port, "aisf_llm_engine_tokens_total", **LABELS)
    time.sleep(0.5)
    assert scrape(server.metrics_port, "aisf_llm_engine_tokens_total", **LABELS) == stopped_at
    # 16 x 480 tokens were asked for; the server may run ahead of a slow reader by what the socket
    # buffers hold, but not to the end.
    assert 0 < stopped_at - before < 16 * 480 / 2
    outcome = {"kind": "chat", "outcome": "cancelled"}
    assert scrape(server.metrics_port, "aisf_llm_requests_total", **LABELS, **outcome) == cancelled + 1


def test_the_server_logs_one_line_per_request_without_the_prompt(server: AisfProcess, client: OpenAI) -> None:
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "zebra quartz"}], max_tokens=3
    )
    deadline = time.monotonic() + 5

    def lines() -> list[dict[str, object]]:
        parsed = (json.loads(line) for line in server.log_text().splitlines() if line.startswith("{"))
        return [entry for entry in parsed if entry["msg"] == "llm request"]

    while not any(e["completion_tokens"] == 3 for e in lines()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(e["completion_tokens"] == 3 and e["ttft_ms"] for e in lines())
    assert "zebra" not in server.log_text()
