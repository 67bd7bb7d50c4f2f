"""What a job submit checks before it is accepted: every item against the model it names, with the same
validation the router applies, off the event loop for large jobs (under --role all that loop serves
inference too), with the model's description cached briefly (a burst of submits asks the router once)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2 as pb

from aisf.services.clients.router_client import RouterClient
from aisf.services.common import llm_codec, v2_codec
from aisf.services.common.errors import AisfError, InvalidInput, ModelNotFound
from aisf.services.common.llm_outputs import ModelKind
from aisf.services.common.tensors import TensorSpec
from aisf.services.common.threads import BlockingPool
from aisf.services.common.validation import validate_request
from aisf.services.job.llm_items import parse_body
from aisf.services.job.model import JobKind

T = TypeVar("T")
_CACHE_S = 2.0
_INLINE_ITEMS = 32  # fewer than this are checked on the loop: a thread hop would cost more
_LLM_KIND = {JobKind.CHAT: ModelKind.GENERATIVE, JobKind.COMPLETION: ModelKind.GENERATIVE}


@dataclass(frozen=True, slots=True)
class _TensorModel:
    name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    max_batch_size: int


class SubmitChecks:
    def __init__(self, router: RouterClient, max_items: int) -> None:
        self._router = router
        self._max_items = max_items
        self._threads = BlockingPool("job-checks", 2)
        self._tensor_models: dict[tuple[str, str], tuple[float, _TensorModel]] = {}
        self._llm_kinds: tuple[float, dict[str, set[ModelKind]]] = (0.0, {})

    def close(self) -> None:
        self._threads.close()

    async def check(self, kind: JobKind, model: str, version: str, requests: Sequence[bytes]) -> None:
        """Every item must run: the first that cannot is a 400 naming it."""
        self._count(len(requests))
        await self._off_loop(requests, _first_error(requests, await self._checker(kind, model, version)))

    async def item_errors(
        self, kind: JobKind, model: str, version: str, requests: Sequence[bytes], total: int
    ) -> list[AisfError | None]:
        """Why each item cannot run, or None (a batch's lines fail one by one); `total` counts the
        batch's lines, malformed ones too, against the item limit. The model must exist either way."""
        self._count(total)
        check = await self._checker(kind, model, version)
        return await self._off_loop(requests, _each_error(requests, check)) if requests else []

    def _count(self, items: int) -> None:
        if not items:
            raise InvalidInput("requests: a job needs at least one request")
        if items > self._max_items:
            raise InvalidInput(f"requests: {items} exceed the limit of {self._max_items} per job")

    async def _checker(self, kind: JobKind, model: str, version: str) -> Callable[[bytes], object]:
        if kind is JobKind.V2:
            described = await self._tensor_model(model, version)
            return lambda raw: _check_tensors(described, raw)
        await self._check_llm_model(kind, model)
        return lambda raw: parse_body(kind, raw, model)

    async def _off_loop(self, requests: Sequence[bytes], run: Callable[[], T]) -> T:
        if len(requests) < _INLINE_ITEMS:
            return run()
        return await self._threads.run(run)

    async def _tensor_model(self, model: str, version: str) -> _TensorModel:
        now = time.monotonic()
        cached = self._tensor_models.get((model, version))
        if cached is not None and cached[0] > now:
            return cached[1]
        metadata = await self._router.model_metadata(model, version)
        config = (await self._router.model_config(model, version)).config
        described = _TensorModel(
            metadata.name,
            [TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in metadata.inputs],
            [TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in metadata.outputs],
            config.max_batch_size,
        )
        if len(self._tensor_models) > 256:
            self._tensor_models.clear()
        self._tensor_models[(model, version)] = (now + _CACHE_S, described)
        return described

    async def _check_llm_model(self, kind: JobKind, model: str) -> None:
        expires, kinds = self._llm_kinds
        if expires <= time.monotonic():
            kinds = {}
            for card in llm_codec.model_cards_from_proto(await self._router.list_models()):
                kinds.setdefault(card.name, set()).add(card.kind)
            self._llm_kinds = (time.monotonic() + _CACHE_S, kinds)
        wanted = _LLM_KIND.get(kind, ModelKind.EMBEDDING)
        if model not in kinds:
            raise ModelNotFound(f"model: '{model}' is not a served text or embedding model")
        if wanted not in kinds[model]:
            raise InvalidInput(f"model: '{model}' is not a {wanted.value} model")


def _check_tensors(model: _TensorModel, raw: bytes) -> None:
    try:
        request = v2_codec.request_from_proto(pb.ModelInferRequest.FromString(raw))
    except DecodeError:
        raise InvalidInput("not a valid inference request") from None
    validate_request(model.name, model.inputs, model.outputs, model.max_batch_size, request)


def _first_error(requests: Sequence[bytes], check: Callable[[bytes], object]) -> Callable[[], None]:
    def run() -> None:
        for index, raw in enumerate(requests):
            try:
                check(raw)
            except AisfError as error:
                raise InvalidInput(f"requests[{index}]: {error.message}") from None

    return run


def _each_error(
    requests: Sequence[bytes], check: Callable[[bytes], object]
) -> Callable[[], list[AisfError | None]]:
    def run() -> list[AisfError | None]:
        errors: list[AisfError | None] = []
        for raw in requests:
            try:
                check(raw)
            except AisfError as error:
                errors.append(error)
            else:
                errors.append(None)
        return errors

    return run
