"""Any OpenAI-speaking server (vLLM, SGLang, llama.cpp's server, TGI) over pooled async HTTP."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import httpx

from aisf.adapters.base import Health, ModelMetadata, ModelSpec
from aisf.adapters.remote_retries import with_retries
from aisf.services.common import deadlines
from aisf.services.common.errors import (
    MISCONFIGURED_HTTP_STATUSES,
    AisfError,
    DeadlineExceeded,
    EngineMisconfigured,
    EngineUnavailable,
    InternalError,
    ModelLoadFailed,
    ModelNotFound,
    ModelNotReady,
    Unsupported,
    code_for_http_status,
)
from aisf.services.common.llm_types import (
    ChatMessage,
    EmbedRequest,
    EmbedResponse,
    FinishReason,
    GenerateRequest,
    ResponseFormat,
    TokenChunk,
    TokenLogprob,
    Tool,
    ToolCallDelta,
    ToolChoice,
    TopLogprob,
    Usage,
)
from aisf.services.common.openai_responses import tool_call_body
from aisf.services.common.tensors import InferRequest, InferResponse

_HEALTH_TIMEOUT_S = 5.0  # readiness probes must not hang for a generation-sized timeout
# vLLM says "abort" for a request it cancelled; a content filter ends the text like a stop.
_FINISH: dict[str, FinishReason] = {
    "length": "length",
    "abort": "cancelled",
    "cancelled": "cancelled",
    "tool_calls": "tool_calls",
}


def upstream_error(status: int, body: str, retry_after: str | None, where: str) -> AisfError:
    """The typed error for an upstream HTTP status, through the one shared table (refused credentials
    and a model the upstream lacks are our deployment's fault); the upstream's Retry-After is kept."""
    if status in MISCONFIGURED_HTTP_STATUSES:
        return EngineMisconfigured(f"{where}: HTTP {status}: {_message(body)}")
    error_cls = AisfError.class_for("", code_for_http_status(status))
    wait = int(retry_after) if retry_after and retry_after.isdigit() else None
    return error_cls(f"{where}: HTTP {status}: {_message(body)}", wait)


def _message(body: str) -> str:
    """The error text of OpenAI ({"error": {"message"}}), TGI ({"error": "..."}) or FastAPI bodies."""
    try:
        data = json.loads(body)
    except ValueError:
        return body[:300]
    if not isinstance(data, dict):
        return body[:300]
    error = data.get("error")
    if isinstance(error, dict):
        return str(error.get("message", error))
    return str(error or data.get("message") or data.get("detail") or body[:300])


def _stream_error(event: dict[str, Any], where: str) -> AisfError:
    """An error sent as a stream event (vLLM: {"object": "error", "code": 400, ...}) after the 200."""
    error = event.get("error", event)
    status = error.get("code") if isinstance(error, dict) else None
    return upstream_error(status if isinstance(status, int) else 500, json.dumps(event), None, where)


class OpenAIRemoteAdapter:
    """Parameters: `base_url` (the API root, e.g. http://vllm:8000/v1; required), `remote_model` (default:
    our model name), `api_key_env` (name of the environment variable holding the key: secrets stay out of
    config.yaml), `timeout_s` (60; for streams, the longest wait between chunks; less when the request's
    deadline is nearer), `retries` (2: further attempts when the server is unreachable, overloaded or
    restarting, before any answer arrived), `context_length` (default: the server's max_model_len when
    its model card has one, else 0 for unknown)."""

    calls_tools = True  # OpenAI servers call tools themselves: requests keep their tools

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._transport = transport  # tests substitute the network
        self._client: httpx.AsyncClient | None = None
        self._remote_model = ""
        self._where = ""
        self._context_length = 0
        self._timeout_s = 60.0
        self._attempts = 3
        self._circuit_open: Callable[[], bool] = lambda: False

    async def load(self, spec: ModelSpec) -> ModelMetadata:
        params = spec.config.parameters
        base_url = str(params.get("base_url", "")).rstrip("/")
        if not base_url:
            raise ModelLoadFailed(f"model '{spec.name}': backend openai_remote needs parameters.base_url")
        self._remote_model = str(params.get("remote_model", spec.name))
        self._where = f"remote model '{self._remote_model}' at {base_url}"
        self._timeout_s = float(params.get("timeout_s", 60))
        self._attempts = 1 + int(params.get("retries", 2))
        self._circuit_open = spec.circuit_open
        headers = {}
        if key_env := str(params.get("api_key_env", "")):
            key = os.environ.get(key_env, "")
            if not key:
                raise ModelLoadFailed(f"model '{spec.name}': environment variable {key_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        client = httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=self._timeout_s, transport=self._transport
        )
        try:
            card = await self._model_card(client)
        except AisfError as exc:
            await client.aclose()
            raise ModelLoadFailed(exc.message) from exc
        self._context_length = int(params.get("context_length", card.get("max_model_len") or 0))
        self._client = client
        return ModelMetadata(inputs=[], outputs=[], platform="openai", device="remote")

    async def infer(self, request: InferRequest) -> InferResponse:
        raise Unsupported(f"{self._where} generates text: use the OpenAI-compatible API, not V2 tensors")

    def context_length(self) -> int:
        return self._context_length

    async def stream(self, request: GenerateRequest) -> AsyncGenerator[TokenChunk]:
        client = self._require_client()
        path, body = self._generate_body(request)
        # Finish chunks wait for the usage chunk, which OpenAI servers send after every choice finished.
        finished: list[tuple[int, FinishReason]] = []
        usage: Usage | None = None
        # Leaving this block (the consumer stopped) closes the response, so the server cancels the work.
        async with (
            self._call(client, "POST", path, body) as response,
            contextlib.aclosing(_events(response, self._where)) as events,
        ):
            async for event in events:
                if "error" in event or event.get("object") == "error":
                    raise _stream_error(event, self._where)
                if counts := event.get("usage"):
                    usage = Usage(counts.get("prompt_tokens", 0), counts.get("completion_tokens", 0))
                for choice in event.get("choices") or []:
                    index = int(choice.get("index", 0))
                    text = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
                    logprobs = _logprobs_of(choice.get("logprobs"))
                    calls = _call_deltas((choice.get("delta") or {}).get("tool_calls"))
                    if text or logprobs or calls:
                        yield TokenChunk(text, index=index, logprobs=logprobs, tool_calls=calls)
                    if reason := choice.get("finish_reason"):
                        finished.append((index, _FINISH.get(reason, "stop")))
        for index, reason in finished:
            yield TokenChunk("", index=index, finish_reason=reason, usage=usage)

    async def embed(self, request: EmbedRequest) -> EmbedResponse:
        client = self._require_client()
        body = {"model": self._remote_model, "input": list(request.inputs)}
        async with self._call(client, "POST", "embeddings", body) as response:
            data = await self._json(response)
        try:
            items = sorted(data["data"], key=lambda item: int(item["index"]))
            vectors = [[float(x) for x in item["embedding"]] for item in items]
            usage = Usage(prompt_tokens=int((data.get("usage") or {}).get("prompt_tokens", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise InternalError(f"{self._where}: unexpected embeddings response: {exc!r}") from exc
        return EmbedResponse(vectors=vectors, usage=usage)

    async def health(self) -> Health:
        if self._client is None:
            return Health(ready=False, reason="not loaded")
        try:
            await self._model_card(self._client, _HEALTH_TIMEOUT_S)
        except AisfError as exc:
            return Health(ready=False, reason=exc.message)
        return Health(ready=True)

    async def unload(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _require_client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise ModelNotReady(f"{self._where or 'remote model'} is not loaded")
        return self._client

    @contextlib.asynccontextmanager
    async def _call(
        self,
        client: httpx.AsyncClient,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """One upstream call: until the answer's status arrives, transient failures are retried (nothing
        was generated yet); after it, transport failures (also mid-stream) are typed errors."""

        async def send() -> httpx.Response:
            return await self._send(client, method, path, body, timeout_s)

        response = await with_retries(send, self._attempts, self._circuit_open)
        try:
            yield response
        except httpx.TimeoutException as exc:
            raise DeadlineExceeded(f"{self._where}: no answer in time ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise EngineUnavailable(f"{self._where}: broken off: {exc!r}") from exc
        finally:
            await response.aclose()

    async def _send(
        self,
        client: httpx.AsyncClient,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        timeout_s: float | None,
    ) -> httpx.Response:
        """Send once, within the request's deadline; an HTTP error status is a typed error."""
        timeout = httpx.Timeout(deadlines.capped(timeout_s or self._timeout_s))
        request = client.build_request(method, path, json=body, timeout=timeout)
        try:
            response = await client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise DeadlineExceeded(f"{self._where}: no answer in time ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            # No answer began: not connected, or (most often) a pooled keep-alive connection the server
            # had closed. Retried, as the OpenAI SDK does; a server that did start on the request and then
            # died may so run it twice, which beats failing every request behind a stale connection.
            raise EngineUnavailable(f"{self._where}: unreachable: {exc!r}") from exc
        if response.status_code >= 400:
            try:
                text = (await response.aread()).decode("utf-8", "replace")
            finally:
                await response.aclose()
            raise upstream_error(response.status_code, text, response.headers.get("retry-after"), self._where)
        return response

    async def _json(self, response: httpx.Response) -> dict[str, Any]:
        text = await response.aread()
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise InternalError(f"{self._where}: expected a JSON object, got {text[:200]!r}")
        return data

    async def _model_card(self, client: httpx.AsyncClient, timeout_s: float | None = None) -> dict[str, Any]:
        async with self._call(client, "GET", "models", timeout_s=timeout_s) as response:
            data = await self._json(response)
        cards = {str(card.get("id")): card for card in data.get("data", []) if isinstance(card, dict)}
        if self._remote_model not in cards:
            raise ModelNotFound(
                f"{self._where}: the server serves {sorted(cards)}, not '{self._remote_model}'"
            )
        return cards[self._remote_model]

    def _generate_body(self, request: GenerateRequest) -> tuple[str, dict[str, Any]]:
        params = request.params
        body: dict[str, Any] = {
            "model": self._remote_model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": params.temperature,
            "top_p": params.top_p,
            "n": params.n,
        }
        optional = {
            "max_tokens": params.max_tokens,
            "seed": params.seed,
            "stop": list(params.stop) or None,
            "response_format": _response_format(params.response_format),
            "presence_penalty": params.presence_penalty or None,
            "frequency_penalty": params.frequency_penalty or None,
            "logit_bias": {str(t): v for t, v in params.logit_bias} or None,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        if request.prompt is not None:
            if params.logprobs is not None:
                body["logprobs"] = params.logprobs
            return "completions", {**body, "prompt": request.prompt}
        if params.logprobs is not None:
            body.update(logprobs=True, top_logprobs=params.logprobs)
        if request.tools:
            body["tools"] = [_tool(t) for t in request.tools]
            body["tool_choice"] = _tool_choice(request.tool_choice)
            if not request.tool_choice.parallel:
                body["parallel_tool_calls"] = False
        return "chat/completions", {**body, "messages": [_wire_message(m) for m in request.messages]}


def _wire_message(message: ChatMessage) -> dict[str, Any]:
    body: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        body["content"] = message.content or None
        body["tool_calls"] = [tool_call_body(c.id, c.name, c.arguments) for c in message.tool_calls]
    if message.tool_call_id:
        body["tool_call_id"] = message.tool_call_id
    return body


def _tool(tool: Tool) -> dict[str, Any]:
    function = {"name": tool.name, "description": tool.description, "parameters": json.loads(tool.parameters)}
    return {"type": "function", "function": function}


def _tool_choice(choice: ToolChoice) -> str | dict[str, Any]:
    if choice.mode == "function":
        return {"type": "function", "function": {"name": choice.name}}
    return choice.mode


def _call_deltas(calls: Any) -> tuple[ToolCallDelta, ...]:
    """A streamed delta's tool-call pieces (id and name on a call's first, then argument pieces)."""
    if not isinstance(calls, list):
        return ()
    deltas = []
    for call in calls:
        if isinstance(call, dict):
            function = call.get("function") or {}
            deltas.append(
                ToolCallDelta(
                    int(call.get("index", 0)),
                    str(call.get("id") or ""),
                    str(function.get("name") or ""),
                    str(function.get("arguments") or ""),
                )
            )
    return tuple(deltas)


def _logprobs_of(body: Any) -> tuple[TokenLogprob, ...]:
    """A streamed choice's logprobs in either of OpenAI's forms (chat `content` entries, or the legacy
    completions' parallel lists); an entry without a token is left out."""
    if not isinstance(body, dict):
        return ()
    if isinstance(body.get("content"), list):
        return tuple(_chat_entry(e) for e in body["content"] if isinstance(e, dict) and "token" in e)
    tokens, values = body.get("tokens") or [], body.get("token_logprobs") or []
    tops = body.get("top_logprobs") or [None] * len(tokens)
    return tuple(
        TokenLogprob(
            str(token),
            float(value),
            str(token).encode(),
            tuple(TopLogprob(str(t), float(v), str(t).encode()) for t, v in (top or {}).items()),
        )
        for token, value, top in zip(tokens, values, tops, strict=False)
        if value is not None
    )


def _chat_entry(entry: dict[str, Any]) -> TokenLogprob:
    def raw(item: dict[str, Any]) -> bytes:
        data = item.get("bytes")
        return bytes(data) if isinstance(data, list) else str(item["token"]).encode()

    top = tuple(
        TopLogprob(str(t["token"]), float(t["logprob"]), raw(t)) for t in entry.get("top_logprobs") or []
    )
    return TokenLogprob(str(entry["token"]), float(entry["logprob"]), raw(entry), top)


def _response_format(form: ResponseFormat) -> dict[str, Any] | None:
    """OpenAI's wire form of a response format (None: free text, the server's default)."""
    if form.type == "text":
        return None
    if form.type == "json_object":
        return {"type": "json_object"}
    spec = {"name": form.name or "response", "schema": json.loads(form.schema), "strict": form.strict}
    return {"type": "json_schema", "json_schema": spec}


async def _events(response: httpx.Response, where: str) -> AsyncGenerator[dict[str, Any]]:
    """Server-sent `data:` payloads as JSON objects, up to the final `[DONE]`."""
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue  # blank separators, comments (keep-alive pings), event names
        payload = line[len("data:") :].strip()
        if payload == "[DONE]":
            return
        try:
            event = json.loads(payload)
        except ValueError as exc:
            raise InternalError(f"{where}: malformed stream event {payload[:200]!r}") from exc
        if isinstance(event, dict):
            yield event
    raise EngineUnavailable(f"{where}: the stream ended before [DONE]")
