"""aisf.pii.v1.PiiService over the analyzer: checks the request, analyses on the role's own threads.

The analyzer (Presidio, spaCy, kiwipiepy) takes seconds to load: it loads in the background once the
role starts, and calls wait for it within their deadline."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any

from grpc import aio

from aisf.pii.v1 import pii_service_pb2 as pb
from aisf.pii.v1 import pii_service_pb2_grpc as pb_grpc
from aisf.services.common import deadlines, heap
from aisf.services.common.errors import DeadlineExceeded, EngineUnavailable, InvalidInput
from aisf.services.common.settings import Settings
from aisf.services.common.threads import BlockingPool
from aisf.services.pii.analyzer import ENTITIES, LANGUAGES, Found, PiiAnalyzer

SERVICE_NAME = "aisf.pii.v1.PiiService"
Context = aio.ServicerContext[Any, Any]
log = logging.getLogger(__name__)


class PiiLane:
    """The analyzer, loading or loaded, and the threads it runs on."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._threads = BlockingPool("pii", settings.pii_threads)
        self._loading: asyncio.Task[PiiAnalyzer] | None = None
        self._loaded: PiiAnalyzer | None = None
        self._ready = threading.Event()

    def start(self) -> None:
        settings = self._settings
        cache = (settings.data_dir / "pii").resolve()
        self._loading = asyncio.get_running_loop().create_task(
            self._threads.run(PiiAnalyzer, cache, settings.pii_korean_names, settings.pii_min_score)
        )
        self._loading.add_done_callback(self._report_load)

    def _report_load(self, task: asyncio.Task[PiiAnalyzer]) -> None:
        if task.cancelled():
            return
        if task.exception() is not None:
            log.error("the pii analyzer failed to load", exc_info=task.exception())
            return
        self._loaded = task.result()
        self._ready.set()
        heap.settle()  # its models are long-lived: out of the collector's way, as start-up's objects are
        log.info("pii analyzer ready", extra={"korean_names": self._loaded.korean_names})

    def redact_blocking(self, texts: list[str], timeout_s: float = 5.0) -> list[str]:
        """Redact `texts` for a caller outside the event loop (the log handler's thread), on the role's
        own threads; raises if the analyzer is not ready or does not answer within `timeout_s`."""
        if not self._ready.wait(timeout_s) or self._loaded is None:
            raise TimeoutError("the pii analyzer is not loaded")
        analyzer = self._loaded

        def redact_all() -> list[str]:
            return analyzer.redact_many(texts, analyzer.detect_many(texts))

        return self._threads.submit(redact_all).result(timeout_s)

    async def analyzer(self) -> PiiAnalyzer:
        assert self._loading is not None, "start() first"
        try:
            return await asyncio.wait_for(asyncio.shield(self._loading), deadlines.remaining())
        except TimeoutError:
            raise DeadlineExceeded("the pii analyzer is still loading (seconds after start-up)") from None
        except Exception as exc:
            raise EngineUnavailable(f"the pii analyzer failed to load: {exc}") from None

    async def findings(
        self, texts: Sequence[str], language: str, entities: Sequence[str], min_score: float
    ) -> list[list[Found]]:
        self._check(texts, language, entities, min_score)
        analyzer = await self.analyzer()
        chosen = tuple(entities)

        return await self._threads.run(analyzer.detect_many, list(texts), language, chosen, min_score)

    async def holds_personal_data(self, texts: tuple[str, ...]) -> bool:
        """Whether any of `texts` holds personal data (the semantic cache asks before it keeps an answer)."""
        chunks = [
            texts[i : i + self._settings.pii_max_texts]
            for i in range(0, len(texts), self._settings.pii_max_texts)
        ]
        for chunk in chunks:
            if any(await self.findings(chunk, "", (), 0)):
                return True
        return False

    async def redacted(
        self, texts: Sequence[str], language: str, entities: Sequence[str], min_score: float
    ) -> tuple[list[str], list[list[Found]]]:
        found = await self.findings(texts, language, entities, min_score)
        analyzer = await self.analyzer()
        return analyzer.redact_many(texts, found), found

    async def redact(self, texts: list[str]) -> list[str]:
        """`texts` redacted with the role's defaults (stored job payloads)."""
        return (await self.redacted(texts, "", (), 0))[0]

    def _check(self, texts: Sequence[str], language: str, entities: Sequence[str], min_score: float) -> None:
        settings = self._settings
        if not texts or len(texts) > settings.pii_max_texts:
            raise InvalidInput(f"texts: between 1 and {settings.pii_max_texts} texts, got {len(texts)}")
        for index, text in enumerate(texts):
            if len(text) > settings.pii_max_text_chars:
                raise InvalidInput(f"texts[{index}]: over {settings.pii_max_text_chars} characters")
        if language not in ("", *LANGUAGES):
            raise InvalidInput(f"language: '{language}' is not one of ko, en (or empty: by the text)")
        unknown = sorted(set(entities) - set(ENTITIES))
        if unknown:
            raise InvalidInput(f"entities: unknown {', '.join(unknown)}; known: {', '.join(ENTITIES)}")
        if not 0 <= min_score <= 1:
            raise InvalidInput(f"min_score: must be within 0..1, got {min_score}")

    async def close(self) -> None:
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        self._threads.close()


def _findings(found: list[Found]) -> pb.TextFindings:
    return pb.TextFindings(
        findings=[
            pb.Finding(entity_type=f.entity_type, start=f.start, end=f.end, score=f.score) for f in found
        ]
    )


class PiiServicer(pb_grpc.PiiServiceServicer):
    def __init__(self, lane: PiiLane) -> None:
        self._lane = lane

    async def Detect(self, request: pb.DetectRequest, context: Context) -> pb.DetectResponse:
        found = await self._lane.findings(
            request.texts, request.language, request.entities, request.min_score
        )
        return pb.DetectResponse(results=[_findings(f) for f in found])

    async def Redact(self, request: pb.RedactRequest, context: Context) -> pb.RedactResponse:
        texts, found = await self._lane.redacted(
            request.texts, request.language, request.entities, request.min_score
        )
        return pb.RedactResponse(texts=texts, results=[_findings(f) for f in found])


def register(lane: PiiLane) -> Any:
    def add(server: aio.Server) -> None:
        pb_grpc.add_PiiServiceServicer_to_server(PiiServicer(lane), server)

    return add
