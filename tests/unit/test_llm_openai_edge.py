"""The OpenAI REST edge translates to the router's LlmService over real gRPC: shapes, SSE, errors.

Engines are real: llm-demo on llama.cpp (greedy answers repeat, so the edge's output is compared with
what the engine streams itself), all-MiniLM-L6-v2 for embeddings and the semantic cache."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry

from aisf.gateway.app import create_app
from aisf.services.clients.batch_client import BatchClient
from aisf.services.clients.job_client import JobClient
from aisf.services.clients.router_client import RouterClient
from aisf.services.common.grpc_server import GrpcServer, build_server
from aisf.services.common.llm_metrics import LlmMetrics
from aisf.services.common.llm_types import ChatMessage, GenerateRequest, SamplingParams
from aisf.services.common.settings import Settings
from aisf.services.router import llm_servicer
from aisf.services.router.llm_dataplane import LlmDataplane
from aisf.services.router.repository import ModelRepository, RepositoryDefaults
from aisf.services.router.semantic_cache import SemanticCache, served_embedder
from aisf.services.router.semantic_index import MemoryIndex
from tests.support.llm import (
    EMBEDDER,
    LLM,
    REMOTE,
    build_llm_models,
    kill,
    llama,
    reference,
    served_repository,
    upstream,
)

CHAT = {"model": LLM, "messages": [{"role": "user", "content": "hi"}]}
GREEDY = {**CHAT, "max_tokens": 8, "temperature": 0}

# Generations do not queue here: a busy engine answers 429 at once.
NO_QUEUE = RepositoryDefaults(llm_max_waiting=0)


def greedy(prompt: str | None = None) -> GenerateRequest:
    """GREEDY as the engine gets it (or the same as a completion of `prompt`)."""
    params = SamplingParams(max_tokens=8, temperature=0.0)
    if prompt is not None:
        return GenerateRequest(LLM, prompt=prompt, params=params)
    return GenerateRequest(LLM, messages=(ChatMessage("user", "hi"),), params=params)


@dataclass
class Edge:
    client: httpx.AsyncClient
    dataplane: LlmDataplane
    registry: CollectorRegistry


@asynccontextmanager
async def serving(repository: ModelRepository, cache: bool = True) -> AsyncIterator[Edge]:
    """gateway app -> RouterClient -> grpc.aio server on a free port -> LlmServicer -> LlmDataplane."""
    registry = CollectorRegistry()
    semantic = (
        SemanticCache(MemoryIndex(60, 100), served_embedder(repository, EMBEDDER), 0.9) if cache else None
    )
    dataplane = LlmDataplane(repository, LlmMetrics(registry), semantic)
    server: GrpcServer = build_server(
        [llm_servicer.register(dataplane)], [llm_servicer.SERVICE_NAME], ["127.0.0.1:0"], 1 << 20
    )
    await server.start()
    try:
        target = f"127.0.0.1:{server.ports['127.0.0.1:0']}"
        settings = Settings(max_request_bytes=1 << 20)
        app = create_app(
            settings, RouterClient(target, 1 << 20), JobClient(target, 1 << 20), BatchClient(target, 1 << 20)
        )
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield Edge(client, dataplane, registry)
    finally:
        await server.stop(0)


@pytest.fixture(scope="module")
async def repository(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ModelRepository]:
    root = tmp_path_factory.mktemp("llm-edge")
    build_llm_models(root / "models")
    async with served_repository(root, NO_QUEUE) as repository:
        yield repository


@pytest.fixture
async def edge(repository: ModelRepository) -> AsyncIterator[Edge]:
    async with serving(repository) as edge:
        yield edge


@pytest.fixture
def rest(edge: Edge) -> httpx.AsyncClient:
    return edge.client


def events(body: bytes) -> list[Any]:
    frames = body.split(b"\n\n")
    assert frames[-1] == b"" and all(f.startswith(b"data: ") for f in frames[:-1])
    return [f[6:].decode() if f == b"data: [DONE]" else orjson.loads(f[6:]) for f in frames[:-1]]


async def test_a_chat_completion_answers_in_openai_shape_with_usage(
    rest: httpx.AsyncClient, repository: ModelRepository
) -> None:
    expected = await reference(repository, greedy())
    usage = expected[-1].usage
    assert usage is not None and usage.completion_tokens == 8
    response = await rest.post("/v1/chat/completions", json=GREEDY)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == LLM
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "".join(c.text for c in expected)},
            "logprobs": None,
            "finish_reason": "length",
        }
    ]
    assert body["usage"] == {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": 8,
        "total_tokens": usage.prompt_tokens + 8,
    }


async def test_a_streamed_chat_is_framed_as_openai_sends_it(
    rest: httpx.AsyncClient, repository: ModelRepository
) -> None:
    expected = await reference(repository, greedy())
    text = "".join(c.text for c in expected)
    request = {**GREEDY, "stream": True, "stream_options": {"include_usage": True}}
    response = await rest.post("/v1/chat/completions", json=request)
    assert response.headers["content-type"].startswith("text/event-stream")
    *chunks, usage, done = events(response.content)
    assert done == "[DONE]"
    deltas = [c["choices"][0]["delta"] for c in chunks]
    # The role on the first delta, text on every one but the last (pieces the edge had not sent yet
    # arrive merged, so how many depends on timing), an empty delta ending the choice.
    assert deltas[0]["role"] == "assistant" and deltas[-1] == {}
    assert all(set(d) == {"content"} and d["content"] for d in deltas[1:-1])
    assert "".join(d.get("content", "") for d in deltas) == text
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * (len(chunks) - 1) + ["length"]
    assert all(c["object"] == "chat.completion.chunk" and c["usage"] is None for c in chunks)
    assert len({c["id"] for c in [*chunks, usage]}) == 1
    prompt_tokens = expected[-1].usage.prompt_tokens if expected[-1].usage else -1
    assert usage == {
        **usage,
        "choices": [],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 8, "total_tokens": prompt_tokens + 8},
    }


async def test_a_streamed_completion_carries_text_pieces(
    rest: httpx.AsyncClient, repository: ModelRepository
) -> None:
    expected = await reference(repository, greedy(prompt="Say"))
    response = await rest.post(
        "/v1/completions",
        json={"model": LLM, "prompt": "Say", "max_tokens": 8, "temperature": 0, "stream": True},
    )
    *chunks, done = events(response.content)
    assert done == "[DONE]" and all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == "".join(c.text for c in expected)
    assert "".join(c["choices"][0]["text"] for c in chunks).strip()
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_the_tenant_header_reaches_the_router_request(rest: httpx.AsyncClient) -> None:
    """The router scopes cached answers by the request's tenant: only the same tenant hits."""

    async def cached(tenant: str | None) -> bool:
        headers = {"X-Aisf-Tenant": tenant} if tenant else {}
        response = await rest.post("/v1/chat/completions", json=GREEDY, headers=headers)
        assert response.status_code == 200
        return response.headers.get("x-aisf-cache") == "hit"

    assert await cached("acme") is False
    assert await cached("acme") is True
    assert await cached("rival") is False
    assert await cached(None) is False


async def test_a_cached_answer_says_so_in_a_header(
    rest: httpx.AsyncClient, repository: ModelRepository
) -> None:
    first = await rest.post("/v1/chat/completions", json=GREEDY)
    tokens = llama(repository).tokens_generated
    again = await rest.post("/v1/chat/completions", json={**GREEDY, "stream": True})
    assert "x-aisf-cache" not in first.headers and again.headers["x-aisf-cache"] == "hit"
    replayed = events(again.content)
    assert replayed[-1] == "[DONE]"
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in replayed[:-1] if e["choices"])
    assert text == first.json()["choices"][0]["message"]["content"]
    assert llama(repository).tokens_generated == tokens
    bypass = await rest.post("/v1/chat/completions", json=GREEDY, headers={"X-Aisf-Cache": "bypass"})
    assert "x-aisf-cache" not in bypass.headers
    assert llama(repository).tokens_generated == tokens + 8
    wrong = await rest.post("/v1/chat/completions", json=GREEDY, headers={"X-Aisf-Cache": "sometimes"})
    assert wrong.status_code == 400 and "x-aisf-cache" in wrong.json()["error"]["message"]


async def test_a_cached_answer_carries_the_usage_it_cost_and_a_field_saying_it_is_cached(
    rest: httpx.AsyncClient,
) -> None:
    body = {**GREEDY, "messages": [{"role": "user", "content": "Name a colour, please."}]}
    first = (await rest.post("/v1/chat/completions", json=body)).json()
    again = (await rest.post("/v1/chat/completions", json=body)).json()
    assert "aisf_cache" not in first and again["aisf_cache"] == "hit"
    assert again["usage"] == first["usage"] and first["usage"]["completion_tokens"] > 0
    streamed = await rest.post(
        "/v1/chat/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}}
    )
    replayed = [e for e in events(streamed.content) if e != "[DONE]"]
    assert replayed[-1]["usage"] == first["usage"] and all(e["aisf_cache"] == "hit" for e in replayed)


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ({**CHAT, "model": "nope"}, 404, None, "model_not_found"),
        ({**CHAT, "messages": []}, 400, "messages", None),
        (
            {**CHAT, "messages": [{"role": "wizard", "content": "x"}]},
            400,
            "messages[0].role",
            "invalid_input",
        ),
        ({**CHAT, "messages": [{"content": "x"}]}, 400, "messages[0].role", None),
        ({**CHAT, "max_tokens": -3}, 400, "max_tokens", None),
        ({**CHAT, "max_tokens": 4096}, 400, "max_tokens", "invalid_input"),
        (
            {**CHAT, "tools": [{"type": "function", "function": {"name": "a b"}}]},
            400,
            "tools[0].function.name",
            "invalid_input",
        ),
        ({**CHAT, "top_logprobs": 2}, 400, "top_logprobs", "invalid_input"),
        (
            {**CHAT, "messages": [{"role": "assistant", "content": "", "tool_calls": [{"id": "1"}]}]},
            400,
            "messages[0].tool_calls[0].function",
            None,
        ),
        (
            {**CHAT, "response_format": {"type": "json_schema"}},
            400,
            "response_format.json_schema.schema",
            "invalid_input",
        ),
        ({**CHAT, "model": EMBEDDER}, 400, "model", "invalid_input"),
    ],
)
async def test_bad_requests_get_openai_error_bodies_naming_the_field(
    rest: httpx.AsyncClient, body: dict[str, object], status: int, param: str | None, code: str | None
) -> None:
    response = await rest.post("/v1/chat/completions", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["param"], error["code"]) == (param, code)
    assert error["type"] == "invalid_request_error" and error["message"]


async def test_invalid_json_is_a_400_in_openai_shape(rest: httpx.AsyncClient) -> None:
    response = await rest.post("/v1/chat/completions", content=b"{not json")
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("request body is not valid JSON")


async def test_an_overloaded_engine_answers_429_with_retry_after(edge: Edge) -> None:
    # llm-demo has one instance and no queue here: a stream held open keeps the engine busy.
    request = GenerateRequest(
        LLM, messages=(ChatMessage("user", "hi"),), params=SamplingParams(max_tokens=400)
    )
    async with aclosing(edge.dataplane.generate(request)) as busy:
        await anext(busy)
        response = await edge.client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    assert response.json()["error"]["type"] == "rate_limit_error"
    assert response.json()["error"]["code"] == "engine_overloaded"
    assert (await edge.client.post("/v1/chat/completions", json=GREEDY)).status_code == 200


async def test_a_failure_mid_stream_ends_with_an_error_event_then_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model's upstream (a llama.cpp server) dies after its first chunk was streamed."""
    models = build_llm_models(tmp_path / "models", embedder=False)
    with upstream(models, monkeypatch) as server:
        async with (
            served_repository(tmp_path, NO_QUEUE) as repository,
            serving(repository, cache=False) as edge,
        ):
            body = {**CHAT, "model": REMOTE, "max_tokens": 1500, "stream": True}
            pending = asyncio.create_task(edge.client.post("/v1/chat/completions", json=body))
            labels = {"model": REMOTE, "version": "1"}
            while not edge.registry.get_sample_value("aisf_llm_time_to_first_token_seconds_count", labels):
                assert not pending.done(), pending.result().text
                await asyncio.sleep(0.001)
            kill(server)
            response = await pending
    assert response.status_code == 200
    *chunks, error, done = events(response.content)
    assert chunks and chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks) and len(chunks) < 1500
    assert error["error"]["code"] == "engine_unavailable" and error["error"]["type"] == "server_error"
    assert "remote model 'upstream'" in error["error"]["message"]
    assert done == "[DONE]"


async def test_v2_routes_keep_their_own_error_shape(rest: httpx.AsyncClient) -> None:
    response = await rest.get("/v2/models/nope/ready/extra")
    assert response.status_code == 404 and isinstance(response.json()["error"], str)


async def test_embeddings_come_back_as_floats_or_base64(rest: httpx.AsyncClient) -> None:
    floats = (await rest.post("/v1/embeddings", json={"model": EMBEDDER, "input": ["a b", "c"]})).json()
    assert [d["index"] for d in floats["data"]] == [0, 1]
    assert floats["usage"]["prompt_tokens"] == 7  # [CLS] a b [SEP], [CLS] c [SEP]
    assert len(floats["data"][0]["embedding"]) == 384
    assert np.linalg.norm(floats["data"][0]["embedding"]) == pytest.approx(1.0, abs=1e-5)
    packed = (
        await rest.post(
            "/v1/embeddings", json={"model": EMBEDDER, "input": "a b", "encoding_format": "base64"}
        )
    ).json()
    decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, floats["data"][0]["embedding"], atol=1e-5)
    unsupported = await rest.post("/v1/embeddings", json={"model": EMBEDDER, "input": "a", "dimensions": 8})
    assert unsupported.status_code == 400 and unsupported.json()["error"]["param"] == "dimensions"


async def test_models_lists_text_and_embedding_models(rest: httpx.AsyncClient) -> None:
    listed = (await rest.get("/v1/models")).json()
    assert listed["object"] == "list"
    assert sorted(m["id"] for m in listed["data"]) == [LLM, EMBEDDER]
    assert (await rest.get(f"/v1/models/{LLM}")).json()["object"] == "model"
    missing = await rest.get("/v1/models/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
