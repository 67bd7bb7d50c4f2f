"""llama.cpp in process (llama-cpp-python): streamed chat/completions, embeddings, speculative decoding."""

from __future__ import annotations

import asyncio
import codecs
import collections
import contextlib
import functools
import json
import random
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import replace
from typing import Any, TypeVar

import llama_cpp
import numpy as np
import numpy.typing as npt
from llama_cpp import Llama, LogitsProcessorList
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

from aisf.adapters.base import Health, ModelMetadata, ModelSpec, engine_failure
from aisf.adapters.llama_draft import LlamaInstance
from aisf.services.common.errors import AisfError, InvalidInput, ModelLoadFailed, ModelNotReady, Unsupported
from aisf.services.common.llm_types import (
    EmbedRequest,
    EmbedResponse,
    FinishReason,
    GenerateRequest,
    ResponseFormat,
    SamplingParams,
    TokenChunk,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from aisf.services.common.tensors import InferRequest, InferResponse
from aisf.services.common.threads import BlockingPool

_T = TypeVar("_T")
# How many pieces the engine may run ahead of a slow consumer (merged into the chunks it has not taken):
# enough to stream at the engine's pace through a slower transport, few enough that a client that stops
# reading stops the engine within a few tokens.
AHEAD_PIECES = 8


def _mergeable(chunk: TokenChunk) -> bool:
    return chunk.finish_reason is None and chunk.usage is None and not chunk.tool_calls


class _Handoff:
    """Engine thread -> event loop. Pieces the consumer has not taken yet are merged into one chunk, so a
    consumer slower than the engine (a client, the network) gets fewer, longer chunks instead of holding
    the engine back; one that keeps up gets every piece as it comes (the first is never held). The engine
    runs at most `AHEAD_PIECES` pieces ahead, so a consumer that stops reading stops it soon."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._room = threading.Condition()
        self._pending: collections.deque[tuple[TokenChunk | None, int]] = (
            collections.deque()
        )  # (chunk, pieces)
        self._ahead = 0  # pieces put and not yet taken
        self._waiter: asyncio.Future[None] | None = None
        self.consumer_gone = threading.Event()

    def put(self, item: TokenChunk | None) -> None:
        with self._room:
            while self._ahead >= AHEAD_PIECES and not self.consumer_gone.is_set():
                self._room.wait()
            if self.consumer_gone.is_set():
                return
            previous, pieces = self._pending[-1] if self._pending else (None, 0)
            if item is not None and previous is not None:
                if _mergeable(previous) and _mergeable(item) and item.index == previous.index:
                    merged = replace(
                        item,
                        text=previous.text + item.text,
                        logprobs=previous.logprobs + item.logprobs,
                        pieces=previous.pieces + item.pieces,
                    )
                    self._pending[-1] = (merged, pieces + 1)
                    self._ahead += 1
                    return  # the consumer has not taken the previous piece: no wake-up needed
            self._pending.append((item, 1))
            self._ahead += 1
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._loop.call_soon_threadsafe(_wake, waiter)

    async def get(self) -> TokenChunk | None:
        while True:
            with self._room:
                if self._pending:
                    item, pieces = self._pending.popleft()
                    self._ahead -= pieces
                    self._room.notify()
                    return item
                waiter = self._waiter = self._loop.create_future()
            await waiter

    def stop(self) -> None:
        self.consumer_gone.set()
        with self._room:
            self._room.notify_all()  # wakes an engine waiting for room


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


@functools.lru_cache(maxsize=64)
def grammar_for(response_format: ResponseFormat) -> LlamaGrammar | None:
    """The GBNF grammar that constrains decoding to a response format (None: free text); built once per
    schema (the grammar is immutable: each generation's sampler parses its own copy)."""
    if response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    if response_format.strict:
        unenforced = next(_unenforced(json.loads(response_format.schema), "schema"), None)
        if unenforced is not None:
            raise InvalidInput(
                f"response_format.json_schema.{unenforced}: llama.cpp's grammars cannot enforce this "
                "keyword; drop it, or set strict to false to have the rest of the schema enforced"
            )
    try:
        return LlamaGrammar.from_json_schema(response_format.schema, verbose=False)
    except Exception as exc:  # the converter raises whatever it meets: an unsupported keyword, a bad ref
        raise InvalidInput(
            f"response_format.json_schema.schema: llama.cpp cannot constrain decoding to it ({exc})"
        ) from None


def _biased(bias: tuple[tuple[int, float], ...], vocab: int) -> LogitsProcessorList | None:
    """OpenAI's logit_bias: a constant added to some tokens' logits before sampling (ids past the
    vocabulary are the caller's to get right, as with OpenAI: they are refused)."""
    if not bias:
        return None
    if any(token >= vocab for token, _ in bias):
        raise InvalidInput(f"logit_bias: token ids must be below the model's vocabulary of {vocab}")
    ids = np.array([token for token, _ in bias], dtype=np.int64)
    values = np.array([value for _, value in bias], dtype=np.float32)

    def add(_: npt.NDArray[np.intc], logits: npt.NDArray[np.single]) -> npt.NDArray[np.single]:
        logits[ids] += values
        return logits

    return LogitsProcessorList([add])


def _logits_at(llm: Llama, position: int) -> npt.NDArray[np.float32]:
    """The logits at `position`, which the token after it was sampled from. With logits_all (a draft
    model sets it) llama-cpp-python keeps every position's; otherwise llama.cpp's last decoded position
    is that one (generation decodes one token at a time)."""
    if llm._logits_all:
        return np.asarray(llm.scores[position], dtype=np.float32)
    pointer = llm._ctx.get_logits_ith(-1)
    return np.asarray(np.ctypeslib.as_array(pointer, shape=(llm.n_vocab(),)), dtype=np.float32)


def _token_logprob(llm: Llama, logits: npt.NDArray[np.float32], token: int, top: int) -> TokenLogprob:
    """The sampled token's log probability under the model (before sampling's temperature and
    constraints, as OpenAI reports it) and the `top` most likely tokens at its position."""
    shifted = logits.astype(np.float64) - float(logits.max())
    logprobs = shifted - float(np.log(np.exp(shifted).sum()))
    best = np.argpartition(-logprobs, top)[:top] if top else np.array([], dtype=np.int64)
    ranked = sorted((int(t) for t in best), key=lambda t: -logprobs[t])

    def raw(t: int) -> bytes:
        return llm.detokenize([t])

    alternatives = tuple(
        TopLogprob(raw(t).decode("utf-8", "replace"), float(logprobs[t]), raw(t)) for t in ranked
    )
    piece = raw(token)
    return TokenLogprob(piece.decode("utf-8", "replace"), float(logprobs[token]), piece, alternatives)


# JSON Schema keywords llama.cpp's schema-to-grammar conversion leaves unenforced (value bounds and
# relations between values cannot be written as a context-free grammar it builds).
_UNENFORCED = frozenset({
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "uniqueItems", "contains",
    "not", "if", "then", "else", "dependentRequired", "dependentSchemas", "propertyNames", "minProperties",
    "maxProperties", "patternProperties", "unevaluatedProperties", "unevaluatedItems",
})  # fmt: skip
_SCHEMA_MAPS = frozenset({"properties", "$defs", "definitions"})  # name -> schema: names are not keywords
_VALUES = frozenset({"enum", "const", "default", "examples", "title", "description", "required"})


def _unenforced(node: object, path: str) -> Iterator[str]:
    """Paths of the keywords in a schema that decoding could not enforce."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from _unenforced(item, f"{path}[{i}]")
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in _UNENFORCED:
            yield f"{path}.{key}"
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            for name, schema in value.items():
                yield from _unenforced(schema, f"{path}.{key}.{name}")
        elif key not in _VALUES:
            yield from _unenforced(value, f"{path}.{key}")


class _StopMatcher:
    """Holds back text that may begin a stop sequence, so no part of a stop string is ever streamed."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to emit, whether a stop sequence ended the generation)."""
        buffer = self._held + text
        hits = [buffer.find(s) for s in self._stops if s in buffer]
        if hits:
            self._held = ""
            return buffer[: min(hits)], True
        keep = max((k for s in self._stops for k in range(1, len(s)) if buffer.endswith(s[:k])), default=0)
        safe = len(buffer) - keep
        self._held = buffer[safe:]
        return buffer[:safe], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held


class LlamaCppAdapter:
    """Parameters: `model_file` (model.gguf), `n_ctx` (0: the model's own), `n_threads`, `n_gpu_layers`,
    `chat_template` (overrides the GGUF's tokenizer.chat_template), `embedding` (false; true makes every
    prompt token an output, costly for big vocabularies), `draft_model` (a GGUF of the same vocabulary,
    relative to the version folder: speculative decoding) and `speculative_tokens` (4)."""

    def __init__(self) -> None:
        self._pool: asyncio.Queue[LlamaInstance] | None = None
        self._instances: list[LlamaInstance] = []
        self._threads: BlockingPool | None = None
        self._name = ""
        self._n_ctx = 0
        self._chat: Jinja2ChatFormatter | None = None
        self._embedding = False
        self._accepting = False
        self._unloading = threading.Event()

    async def load(self, spec: ModelSpec) -> ModelMetadata:
        params = spec.config.parameters
        path = spec.path / str(params.get("model_file", "model.gguf"))
        draft = spec.path / str(params["draft_model"]) if "draft_model" in params else None
        for needed in (path, draft):
            if needed is not None and not needed.is_file():
                raise ModelLoadFailed(f"model '{spec.name}' version {spec.version}: {needed.name} not found")
        self._name, self._embedding = spec.name, bool(params.get("embedding", False))
        settings: dict[str, Any] = {
            "n_ctx": int(params.get("n_ctx", 0)),
            "n_threads": int(params["n_threads"]) if "n_threads" in params else None,
            "n_gpu_layers": int(params.get("n_gpu_layers", 0)),
        }
        speculative = int(params.get("speculative_tokens", 4))
        self._threads = spec.threads
        try:
            for _ in range(spec.config.instance_count):
                build = LlamaInstance.build
                self._instances.append(
                    await spec.threads.run(build, path, draft, speculative, self._embedding, settings)
                )
            first = self._instances[0].llm
            template = str(params.get("chat_template", "")) or first.metadata.get("tokenizer.chat_template")
            if template:
                eos, bos = (
                    first.detokenize([t], special=True).decode()
                    for t in (first.token_eos(), first.token_bos())
                )
                self._chat = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)
        except Exception as exc:
            await self.unload()
            raise ModelLoadFailed(f"model '{spec.name}': llama.cpp cannot load {path.name}: {exc}") from exc
        self._n_ctx = first.n_ctx()
        self._pool = asyncio.Queue()
        for instance in self._instances:
            self._pool.put_nowait(instance)
        self._accepting = True
        device = "cuda:0" if settings["n_gpu_layers"] != 0 else "cpu"
        return ModelMetadata(inputs=[], outputs=[], platform="llama_cpp", device=device)

    async def infer(self, request: InferRequest) -> InferResponse:
        raise Unsupported(f"model '{self._name}' generates text: use the OpenAI-compatible API, not V2")

    def context_length(self) -> int:
        return self._n_ctx

    def speculative_stats(self) -> dict[str, int]:
        """Draft tokens proposed and accepted by the target since load (both 0 without a draft model)."""
        drafts = [i.draft for i in self._instances if i.draft is not None]
        return {"proposed": sum(d.proposed for d in drafts), "accepted": sum(d.accepted for d in drafts)}

    @property
    def tokens_generated(self) -> int:
        """Tokens the engine sampled since load, counted in the engine thread (cancelled streams too)."""
        return sum(i.generated for i in self._instances)

    async def stream(self, request: GenerateRequest) -> AsyncGenerator[TokenChunk]:
        grammar = grammar_for(request.params.response_format)  # a schema it cannot take fails here
        instance = await self._acquire()
        handoff = _Handoff(asyncio.get_running_loop())
        producer = self._in_thread(
            instance, functools.partial(self._produce, instance, request, grammar, handoff)
        )
        try:
            while (chunk := await handoff.get()) is not None:
                yield chunk
            await asyncio.shield(producer)
        except AisfError:
            raise
        except Exception as exc:
            raise engine_failure(exc, self._name) from exc
        finally:
            handoff.stop()
            with contextlib.suppress(Exception):
                await asyncio.shield(producer)  # so the engine has stopped once aclose() returns

    async def embed(self, request: EmbedRequest) -> EmbedResponse:
        if not self._embedding:
            raise Unsupported(f"model '{self._name}' is not loaded for embeddings (parameters.embedding)")
        instance = await self._acquire()
        work = self._in_thread(instance, functools.partial(self._embed, instance.llm, request.inputs))
        vectors, tokens = await asyncio.shield(work)
        return EmbedResponse(vectors=vectors, usage=Usage(prompt_tokens=tokens))

    async def health(self) -> Health:
        return Health(ready=self._accepting)

    async def unload(self) -> None:
        """Cancels running generations, waits for their engine threads, then frees the models."""
        self._accepting = False
        self._unloading.set()
        if self._pool is not None:
            for _ in self._instances:
                await self._pool.get()
        self._pool = None
        instances, self._instances = self._instances, []
        for instance in instances:
            if self._threads is not None:
                await self._threads.run(instance.close)
        self._unloading.clear()

    async def _acquire(self) -> LlamaInstance:
        if self._pool is None or not self._accepting:
            raise ModelNotReady(f"model '{self._name}' is not loaded")
        return await self._pool.get()

    def _in_thread(self, instance: LlamaInstance, work: Callable[[], _T]) -> asyncio.Future[_T]:
        """Runs blocking engine work; the instance returns to the pool when the thread ends, not when a
        caller stops waiting (callers shield it), so no two threads ever share a llama.cpp context."""
        assert self._threads is not None
        future = asyncio.ensure_future(self._threads.run(work))
        future.add_done_callback(lambda done: self._release(instance, done))
        return future

    def _release(self, instance: LlamaInstance, done: asyncio.Future[Any]) -> None:
        if not done.cancelled():
            done.exception()  # retrieved here: a caller that left early never awaits it
        if self._pool is not None:
            self._pool.put_nowait(instance)

    def _embed(self, llm: Llama, inputs: tuple[str, ...]) -> tuple[list[list[float]], int]:
        try:
            vectors, tokens = llm.embed(list(inputs), normalize=True, truncate=False, return_count=True)
        except ValueError as exc:  # an input longer than one batch: llama.cpp would otherwise truncate it
            raise InvalidInput(f"input: model '{self._name}': {exc}") from exc
        return vectors, tokens

    def _produce(
        self,
        instance: LlamaInstance,
        request: GenerateRequest,
        grammar: LlamaGrammar | None,
        handoff: _Handoff,
    ) -> None:
        """Engine thread: n sequential generations; always ends the handoff, even on error."""
        try:
            prompt = self._prompt_tokens(instance.llm, request)
            params = request.params
            completion = 0
            for index in range(params.n):
                generated, finish, tail, logprobs = self._generate(
                    instance, prompt, params, grammar, index, handoff
                )
                completion += generated
                if handoff.consumer_gone.is_set():
                    return
                usage = Usage(prompt_tokens=len(prompt), completion_tokens=completion)
                handoff.put(TokenChunk(tail, index, finish, usage, logprobs))
        finally:
            handoff.put(None)

    def _prompt_tokens(self, llm: Llama, request: GenerateRequest) -> list[int]:
        params = request.params
        if params.n < 1 or (params.max_tokens is not None and params.max_tokens < 1):
            raise InvalidInput(f"n ({params.n}) and max_tokens ({params.max_tokens}) must be at least 1")
        if request.prompt is None and not request.messages:
            raise InvalidInput("messages: at least one message is required")
        if request.prompt is not None:
            field, tokens = (
                "prompt",
                llm.tokenize(request.prompt.encode("utf-8"), add_bos=True, special=False),
            )
        else:
            if self._chat is None:
                raise Unsupported(f"model '{self._name}' has no chat template; use completions")
            messages: Any = [{"role": m.role, "content": m.content} for m in request.messages]
            try:
                text = self._chat(messages=messages).prompt
            except ValueError as exc:  # the template's raise_exception, e.g. roles must alternate
                raise InvalidInput(f"messages: {exc}") from exc
            bos = self._chat.bos_token
            # Templates that write the BOS token themselves must not get a second one.
            add_bos = not (bos and text.startswith(bos))
            field, tokens = "messages", llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
        if len(tokens) >= self._n_ctx:
            raise InvalidInput(
                f"{field} is {len(tokens)} tokens; model '{self._name}' has a context window of "
                f"{self._n_ctx} tokens (at least one must remain for the completion)"
            )
        return tokens

    def _generate(
        self,
        instance: LlamaInstance,
        prompt: list[int],
        params: SamplingParams,
        grammar: LlamaGrammar | None,
        index: int,
        handoff: _Handoff,
    ) -> tuple[int, FinishReason, str, tuple[TokenLogprob, ...]]:
        """One choice; returns (tokens sampled, finish reason, text still held back, and the log
        probabilities of the tokens that text came from)."""
        llm = instance.llm
        budget = self._n_ctx - len(prompt)
        if params.max_tokens is not None:
            budget = min(budget, params.max_tokens)
        llm.set_seed(params.seed + index if params.seed is not None else random.getrandbits(32))
        if instance.draft is not None:
            instance.draft.start_sequence()
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        stops = _StopMatcher(params.stop)
        generated = 0
        finish: FinishReason = "length"
        # OpenAI sampling: temperature and top_p only (llama.cpp's top_k/min_p defaults off).
        tokens = llm.generate(
            prompt,
            temp=params.temperature,
            top_p=params.top_p,
            top_k=0,
            min_p=0.0,
            repeat_penalty=1.0,
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
            logits_processor=_biased(params.logit_bias, llm.n_vocab()),
            grammar=grammar,  # structured outputs: only tokens the format allows can be sampled
        )
        sampled: list[int] = []
        pending: list[TokenLogprob] = []  # of tokens whose text the stop matcher still holds
        try:
            for token in tokens:
                generated += 1
                instance.generated += 1
                sampled.append(token)
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    finish = "stop"
                    break
                if params.logprobs is not None:
                    logits = _logits_at(llm, len(prompt) + generated - 2)
                    pending.append(_token_logprob(llm, logits, token, params.logprobs))
                text, stopped = stops.feed(decoder.decode(llm.detokenize([token])))
                if text:
                    handoff.put(TokenChunk(text, index=index, logprobs=tuple(pending)))
                    pending.clear()
                if stopped:
                    finish = "stop"
                    break
                if generated >= budget:
                    break
                # Checked between tokens: the next one is computed only if someone still wants it.
                if handoff.consumer_gone.is_set() or self._unloading.is_set():
                    finish = "cancelled"
                    break
        finally:
            tokens.close()
            if instance.draft is not None:
                instance.draft.finish_sequence(prompt + sampled)
        tail = "" if finish == "cancelled" else stops.flush() + decoder.decode(b"", final=True)
        return generated, finish, tail, tuple(pending) if tail else ()
