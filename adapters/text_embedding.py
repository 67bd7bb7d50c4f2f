"""What every text-embedding engine shares: the OpenAI embeddings call, V2 BYTES in → FP32 vectors out,
and its calls on the model's own threads; an engine brings only `_encode` (texts → unit vectors and the
number of tokens read)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import numpy.typing as npt

from aisf.adapters.base import Health, ModelMetadata, engine_failure
from aisf.services.common.errors import InvalidInput, ModelNotReady
from aisf.services.common.llm_types import EmbedRequest, EmbedResponse, Usage
from aisf.services.common.tensors import InferRequest, InferResponse, Tensor, TensorSpec
from aisf.services.common.threads import BlockingPool

TEXT_INPUT = "text"
EMBEDDING_OUTPUT = "embedding"

Vectors = npt.NDArray[np.float32]


class TextEmbedder(ABC):
    def __init__(self) -> None:
        self._name = ""
        self._threads: BlockingPool | None = None
        self._dimensions = 0

    @abstractmethod
    def _encode(self, texts: list[str]) -> tuple[Vectors, int]:
        """Unit vectors of `texts` and the tokens read, on one of the model's threads."""

    @abstractmethod
    def _loaded(self) -> bool: ...

    def _metadata(self, platform: str, device: str = "cpu") -> ModelMetadata:
        return ModelMetadata(
            inputs=[TensorSpec(TEXT_INPUT, "BYTES", (-1,))],
            outputs=[TensorSpec(EMBEDDING_OUTPUT, "FP32", (-1, self._dimensions))],
            platform=platform,
            device=device,
        )

    async def _run(self, texts: list[str]) -> tuple[Vectors, int]:
        threads = self._threads
        if threads is None or not self._loaded():
            raise ModelNotReady(f"model '{self._name}' is not loaded")
        if not texts:  # nothing to embed: no engine call (an empty batch is no valid engine input)
            return np.zeros((0, self._dimensions), dtype=np.float32), 0
        try:
            return await threads.run(self._encode, texts)
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
        return Health(ready=self._loaded())
