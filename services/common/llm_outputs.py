"""Domain types the LLM dataplane answers with: streamed generations, embeddings, model cards."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from aisf.services.common.llm_types import EmbedResponse, TokenChunk, Usage


class CacheMode(StrEnum):
    """Whether a request may use the semantic cache (the X-Aisf-Cache header's values)."""

    DEFAULT = "default"  # deterministic requests only
    BYPASS = "bypass"
    OPT_IN = "opt-in"


@dataclass(frozen=True, slots=True)
class GenerationChunk:
    """One streamed message: a piece of one choice, or (last) the usage totals of every choice."""

    id: str
    model: str
    model_version: str
    created: int
    choice: TokenChunk | None = None
    usage: Usage | None = None
    cached: bool = False
    fallback: str = ""  # what answered instead of the model while its circuit was open ("rule")


@dataclass(frozen=True, slots=True)
class EmbedResult:
    model: str
    model_version: str
    response: EmbedResponse


class ModelKind(StrEnum):
    GENERATIVE = "generative"
    EMBEDDING = "embedding"


@dataclass(frozen=True, slots=True)
class ModelCard:
    name: str
    version: str
    kind: ModelKind
    created: int
    context_length: int = 0
