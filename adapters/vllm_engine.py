"""vLLM's engine (V1 AsyncLLM) in process, for CUDA hosts; vllm is imported only when a model loads."""

from __future__ import annotations

import contextlib
import importlib
import json
import uuid
from collections.abc import AsyncGenerator
from pathlib import Path
from types import ModuleType
from typing import Any

from aisf.adapters.base import Health, ModelMetadata, ModelSpec, engine_failure
from aisf.services.common.errors import AisfError, InvalidInput, ModelLoadFailed, ModelNotReady, Unsupported
from aisf.services.common.llm_types import (
    FinishReason,
    GenerateRequest,
    ResponseFormat,
    TokenChunk,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from aisf.services.common.tensors import InferRequest, InferResponse

# Parameters handed to vLLM's AsyncEngineArgs unchanged.
_ENGINE_ARGS = ("max_model_len", "gpu_memory_utilization", "tensor_parallel_size", "dtype", "enforce_eager")
_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "abort": "cancelled"}


def _local(spec: ModelSpec, name: str) -> str:
    """A path relative to the version folder if it exists there, else the name as given (a hub id)."""
    path = spec.path / name
    return str(path) if path.exists() else name


def speculative_config(spec: ModelSpec) -> dict[str, Any] | None:
    """vLLM's speculative_config from the same parameters llama_cpp takes: `draft_model` (a draft model,
    relative to the version folder) or `speculative_method` (e.g. ngram), and `speculative_tokens`."""
    params = spec.config.parameters
    config: dict[str, Any] = {"num_speculative_tokens": int(params.get("speculative_tokens", 4))}
    if "draft_model" in params:
        return {**config, "model": _local(spec, str(params["draft_model"]))}
    if "speculative_method" in params:
        return {**config, "method": str(params["speculative_method"])}
    return None


def _logprobs(choice: Any, top: int | None) -> tuple[TokenLogprob, ...]:
    """vLLM's per-token maps (token id -> Logprob(logprob, rank, decoded_token), the sampled token and
    the `top` most likely) as the domain's entries."""
    if top is None or not choice.logprobs:
        return ()

    def text(entry: Any) -> str:
        return str(entry.decoded_token or "")

    entries = []
    for token_id, candidates in zip(choice.token_ids, choice.logprobs, strict=False):
        sampled = candidates[token_id]
        ranked = sorted(
            (c for c in candidates.values() if c.rank is not None and c.rank <= top), key=lambda c: c.rank
        )
        alternatives = tuple(TopLogprob(text(c), float(c.logprob), text(c).encode()) for c in ranked)
        entries.append(
            TokenLogprob(text(sampled), float(sampled.logprob), text(sampled).encode(), alternatives)
        )
    return tuple(entries)


class VllmAdapter:
    """Parameters: `model` (a model folder or GGUF relative to the version folder, default the version
    folder itself), vLLM's `max_model_len`, `gpu_memory_utilization`, `tensor_parallel_size`, `dtype`,
    `enforce_eager`, and the speculative decoding ones above. vLLM exports its own series (vllm:*, the
    draft acceptance counters vllm:spec_decode_* among them) to the process's default Prometheus
    registry; aisf's /metrics forwards them (`llm_metrics._InProcessEngineSeries`)."""

    def __init__(self) -> None:
        self._vllm: ModuleType | None = None
        self._engine: Any = None
        self._tokenizer: Any = None
        self._name = ""
        self._max_len = 0

    async def load(self, spec: ModelSpec) -> ModelMetadata:
        try:
            vllm = importlib.import_module("vllm")
        except ImportError as exc:
            raise ModelLoadFailed(f"model '{spec.name}': backend vllm needs the vllm package: {exc}") from exc
        params = spec.config.parameters
        args: dict[str, Any] = {k: params[k] for k in _ENGINE_ARGS if k in params}
        args["model"] = _local(spec, str(params["model"])) if "model" in params else str(spec.path)
        if (speculative := speculative_config(spec)) is not None:
            args["speculative_config"] = speculative
        try:
            # On the event loop, as vLLM's own server does: its engine client binds to the running loop.
            engine = vllm.AsyncLLMEngine.from_engine_args(vllm.AsyncEngineArgs(**args))
            self._tokenizer = await engine.get_tokenizer()
        except Exception as exc:
            raise ModelLoadFailed(
                f"model '{spec.name}': vLLM cannot load {Path(args['model']).name}: {exc}"
            ) from exc
        self._vllm, self._engine, self._name = vllm, engine, spec.name
        self._max_len = int(engine.model_config.max_model_len)
        return ModelMetadata(inputs=[], outputs=[], platform="vllm", device="cuda:0")

    async def infer(self, request: InferRequest) -> InferResponse:
        raise Unsupported(
            f"model '{self._name}' generates text: use the OpenAI-compatible API, not V2 tensors"
        )

    def context_length(self) -> int:
        return self._max_len

    def _structured(self, form: ResponseFormat) -> dict[str, Any]:
        """vLLM's structured-output argument of SamplingParams for a response format: newer releases
        take `structured_outputs=StructuredOutputsParams(...)`, older ones
        `guided_decoding=GuidedDecodingParams(...)`."""
        if form.type == "text":
            return {}
        schema: Any = json.loads(form.schema) if form.type == "json_schema" else None
        options = importlib.import_module("vllm.sampling_params")
        if hasattr(options, "StructuredOutputsParams"):
            kind = options.StructuredOutputsParams
            return {"structured_outputs": kind(json=schema) if schema else kind(json_object=True)}
        kind = options.GuidedDecodingParams
        return {"guided_decoding": kind(json=schema) if schema else kind(json_object=True)}

    async def stream(self, request: GenerateRequest) -> AsyncGenerator[TokenChunk]:
        if self._engine is None or self._vllm is None:
            raise ModelNotReady(f"model '{self._name}' is not loaded")
        params = request.params
        request_id = f"{request.request_id or 'aisf'}-{uuid.uuid4().hex}"
        completion = 0
        try:
            prompt = self._prompt_ids(request)  # the chat template may refuse the messages (ValueError)
            sampling = self._vllm.SamplingParams(
                n=params.n,
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=params.max_tokens or self._max_len - len(prompt),  # vLLM's own default is 16
                stop=list(params.stop),
                seed=params.seed,
                logprobs=params.logprobs,
                presence_penalty=params.presence_penalty,
                frequency_penalty=params.frequency_penalty,
                logit_bias=dict(params.logit_bias) or None,
                output_kind=importlib.import_module("vllm.sampling_params").RequestOutputKind.DELTA,
                **self._structured(params.response_format),
            )
            # aclosing: a consumer that stops closes vLLM's generator, which aborts the request at once.
            async with contextlib.aclosing(
                self._engine.generate({"prompt_token_ids": prompt}, sampling, request_id)
            ) as outputs:
                async for output in outputs:
                    for choice in output.outputs:
                        completion += len(choice.token_ids)
                        finish = _FINISH.get(choice.finish_reason, "stop") if choice.finish_reason else None
                        usage = Usage(len(prompt), completion) if finish else None
                        if choice.text or finish:
                            logprobs = _logprobs(choice, params.logprobs)
                            yield TokenChunk(choice.text, choice.index, finish, usage, logprobs)
        except AisfError:
            raise
        except ValueError as exc:  # vLLM's request validation
            raise InvalidInput(f"model '{self._name}': {exc}") from exc
        except Exception as exc:
            raise engine_failure(exc, self._name) from exc

    async def health(self) -> Health:
        if self._engine is None:
            return Health(ready=False, reason="not loaded")
        try:
            await self._engine.check_health()
        except Exception as exc:
            return Health(ready=False, reason=f"vLLM engine unhealthy: {exc}")
        return Health(ready=True)

    async def unload(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.shutdown()

    def _prompt_ids(self, request: GenerateRequest) -> list[int]:
        if request.prompt is not None:
            field, ids = "prompt", list(self._tokenizer.encode(request.prompt))
        else:
            messages = [{"role": m.role, "content": m.content} for m in request.messages]
            ids = list(
                self._tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
            )
            field = "messages"
        if len(ids) >= self._max_len:
            window = f"model '{self._name}' has a context window of {self._max_len} tokens"
            raise InvalidInput(f"{field} is {len(ids)} tokens; {window}")
        return ids
