"""The gRPC client of the inference router (for the gateway, the job service and the workers): typed
errors in, request id and deadline out (the caller's remaining deadline when it has one, else a default)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any

from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from aisf.llm.v1 import llm_pb2 as llm_pb
from aisf.llm.v1 import llm_pb2_grpc as llm_grpc
from aisf.router.v1 import model_control_pb2 as control_pb
from aisf.router.v1 import model_control_pb2_grpc as control_grpc
from aisf.router.v1 import model_repository_pb2 as repo_pb
from aisf.router.v1 import model_repository_pb2_grpc as repo_grpc
from aisf.services.clients.grpc_client import GrpcClient
from aisf.services.common import call_context


class RouterClient(GrpcClient):
    """Unary calls get `timeout_s` and generations `stream_timeout_s` (a generation streams for as long
    as the engine needs) unless the caller's own deadline is sooner."""

    def __init__(
        self, target: str, max_message_bytes: int, timeout_s: float = 60.0, stream_timeout_s: float = 600.0
    ) -> None:
        super().__init__(target, max_message_bytes, timeout_s)
        self._stream_timeout_s = stream_timeout_s
        self._v2 = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self._repository = repo_grpc.ModelRepositoryServiceStub(self._channel)
        self._llm = llm_grpc.LlmServiceStub(self._channel)
        self._control = control_grpc.ModelControlServiceStub(self._channel)

    async def infer(self, request: pb.ModelInferRequest, request_id: str = "") -> pb.ModelInferResponse:
        return await self._call(self._v2.ModelInfer, request, request_id, request.model_name)

    async def server_live(self) -> bool:
        return bool((await self._call(self._v2.ServerLive, pb.ServerLiveRequest())).live)

    async def server_ready(self) -> bool:
        return bool((await self._call(self._v2.ServerReady, pb.ServerReadyRequest())).ready)

    async def server_metadata(self) -> pb.ServerMetadataResponse:
        return await self._call(self._v2.ServerMetadata, pb.ServerMetadataRequest())

    async def model_ready(self, name: str, version: str) -> bool:
        reply = await self._call(self._v2.ModelReady, pb.ModelReadyRequest(name=name, version=version))
        return bool(reply.ready)

    async def model_metadata(self, name: str, version: str) -> pb.ModelMetadataResponse:
        return await self._call(
            self._v2.ModelMetadata, pb.ModelMetadataRequest(name=name, version=version), ""
        )

    async def model_config(self, name: str, version: str) -> pb.ModelConfigResponse:
        return await self._call(self._v2.ModelConfig, pb.ModelConfigRequest(name=name, version=version))

    async def model_statistics(self, name: str, version: str) -> pb.ModelStatisticsResponse:
        return await self._call(
            self._v2.ModelStatistics, pb.ModelStatisticsRequest(name=name, version=version), ""
        )

    async def repository_index(self, ready: bool) -> pb.RepositoryIndexResponse:
        return await self._call(self._v2.RepositoryIndex, pb.RepositoryIndexRequest(ready=ready))

    async def load_model(self, name: str) -> None:
        await self._call(self._v2.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name=name))

    async def unload_model(self, name: str) -> None:
        await self._call(self._v2.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name=name))

    async def model_events(self, request: repo_pb.ListModelEventsRequest) -> repo_pb.ListModelEventsResponse:
        return await self._call(self._repository.ListModelEvents, request)

    # --- operating models (aisf.router.v1.ModelControlService) ---
    async def model_status(self, name: str) -> control_pb.GetModelStatusResponse:
        request = control_pb.GetModelStatusRequest(model_name=name)
        return await self._call(self._control.GetModelStatus, request)

    async def set_breaker_mode(
        self, name: str, version: str, mode: control_pb.BreakerMode.ValueType
    ) -> control_pb.SetBreakerModeResponse:
        request = control_pb.SetBreakerModeRequest(model_name=name, model_version=version, mode=mode)
        return await self._call(self._control.SetBreakerMode, request)

    async def shadow_report(self, name: str) -> control_pb.ShadowReport:
        request = control_pb.GetShadowReportRequest(model_name=name)
        return (await self._call(self._control.GetShadowReport, request)).report

    async def promote_shadow(self, name: str, force: bool) -> control_pb.ShadowReport:
        request = control_pb.PromoteShadowRequest(model_name=name, force=force)
        return (await self._call(self._control.PromoteShadow, request)).report

    # --- LLM lane (aisf.llm.v1.LlmService) ---
    @staticmethod
    def _llm_metadata(request_id: str, tenant: str, model: str) -> tuple[tuple[str, str], ...]:
        carried = [(k, v) for k, v in call_context.outgoing(request_id) if k != call_context.TENANT_KEY]
        if model:
            carried.append((call_context.MODEL_KEY, model))
        who = tenant or call_context.tenant.get()
        return tuple(carried + [(call_context.TENANT_KEY, who)] if who else carried)

    def _stream(
        self, method: Callable[..., Any], request: Any, request_id: str, tenant: str
    ) -> AsyncGenerator[Any, None]:
        """Yield the router's messages; closing this generator cancels the call, which stops the engine."""
        metadata = self._llm_metadata(request_id, tenant, request.model)
        return self._read(method, request, self._stream_timeout_s, metadata)

    def chat_completion(
        self, request: llm_pb.ChatCompletionRequest, request_id: str = "", tenant: str = ""
    ) -> AsyncGenerator[llm_pb.ChatCompletionResponse, None]:
        return self._stream(self._llm.ChatCompletion, request, request_id, tenant)

    def completion(
        self, request: llm_pb.CompletionRequest, request_id: str = "", tenant: str = ""
    ) -> AsyncGenerator[llm_pb.CompletionResponse, None]:
        return self._stream(self._llm.Completion, request, request_id, tenant)

    async def embed(self, request: llm_pb.EmbedRequest, request_id: str = "") -> llm_pb.EmbedResponse:
        return await self._call(self._llm.Embed, request, request_id, request.model)

    async def list_models(self) -> llm_pb.ListModelsResponse:
        return await self._call(self._llm.ListModels, llm_pb.ListModelsRequest())

    # --- end LLM lane ---
