"""aisf.llm.v1.LlmService: decode, call the LLM dataplane, encode (streams stop when the caller leaves)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from grpc import aio

from aisf.llm.v1 import llm_pb2 as pb
from aisf.llm.v1 import llm_pb2_grpc as pb_grpc
from aisf.services.common import call_context
from aisf.services.common import llm_codec as codec
from aisf.services.router.llm_dataplane import LlmDataplane

Context = aio.ServicerContext[Any, Any]
SERVICE_NAME = "aisf.llm.v1.LlmService"


def _caller() -> tuple[str, str]:
    """Bound from the call's metadata when it arrived (grpc_errors.TypedErrors)."""
    return call_context.tenant.get(), call_context.request_id.get()


class LlmServicer(pb_grpc.LlmServiceServicer):
    def __init__(self, dataplane: LlmDataplane) -> None:
        self._dataplane = dataplane

    async def ChatCompletion(
        self, request: pb.ChatCompletionRequest, context: Context
    ) -> AsyncIterator[pb.ChatCompletionResponse]:
        decoded = codec.chat_request_from_proto(request, *_caller())
        async with aclosing(self._dataplane.generate(*decoded)) as generation:
            async for chunk in generation:
                yield codec.chunk_to_proto(chunk, pb.ChatCompletionResponse)

    async def Completion(
        self, request: pb.CompletionRequest, context: Context
    ) -> AsyncIterator[pb.CompletionResponse]:
        decoded = codec.completion_request_from_proto(request, *_caller())
        async with aclosing(self._dataplane.generate(*decoded)) as generation:
            async for chunk in generation:
                yield codec.chunk_to_proto(chunk, pb.CompletionResponse)

    async def Embed(self, request: pb.EmbedRequest, context: Context) -> pb.EmbedResponse:
        result = await self._dataplane.embed(codec.embed_request_from_proto(request))
        return codec.embed_result_to_proto(result)

    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:
        return codec.model_cards_to_proto(self._dataplane.models())


def register(dataplane: LlmDataplane) -> Any:
    def add(server: aio.Server) -> None:
        pb_grpc.add_LlmServiceServicer_to_server(LlmServicer(dataplane), server)

    return add
