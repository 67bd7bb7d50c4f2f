"""inference.GRPCInferenceService (KServe V2 + Triton extensions), served from tritonclient's own stubs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from grpc import aio
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from aisf.services.common import v2_codec
from aisf.services.common.errors import AisfError, Unsupported
from aisf.services.router import v2_admin_codec as admin
from aisf.services.router.dataplane import Dataplane, StreamItem

Context = aio.ServicerContext[Any, Any]
SERVICE_NAME = "inference.GRPCInferenceService"


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, dataplane: Dataplane) -> None:
        self._dataplane = dataplane

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._dataplane.live())

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._dataplane.ready())

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=await self._dataplane.model_ready(request.name, request.version))

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        return admin.server_metadata_to_proto(self._dataplane.server_metadata())

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        model = self._dataplane.model(request.name, request.version)
        return admin.model_metadata_to_proto(model, self._dataplane.model_versions(request.name))

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Context) -> pb.ModelConfigResponse:
        return admin.model_config_to_proto(self._dataplane.model(request.name, request.version))

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Context
    ) -> pb.ModelStatisticsResponse:
        return admin.statistics_to_proto(self._dataplane.statistics(request.name, request.version))

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> pb.RepositoryIndexResponse:
        return admin.repository_index_to_proto(self._dataplane.repository_index(), request.ready)

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> pb.RepositoryModelLoadResponse:
        if request.parameters:
            raise Unsupported(
                "load parameters (config override, file content) are not supported; edit config.yaml"
            )
        await self._dataplane.load_model(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> pb.RepositoryModelUnloadResponse:
        await self._dataplane.unload_model(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        result = await self._dataplane.infer(v2_codec.request_from_proto(request))
        return v2_codec.response_to_proto(result)

    async def ModelStreamInfer(
        self, requests: AsyncIterator[pb.ModelInferRequest], context: Context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Each request answered (or failed) alone, tagged with its id, the stream left open (as Triton)."""
        async with aclosing(self._dataplane.infer_stream(_stream_items(requests))) as answers:
            async for answer in answers:
                if answer.response is not None:
                    yield pb.ModelStreamInferResponse(
                        infer_response=v2_codec.response_to_proto(answer.response)
                    )
                else:
                    assert answer.error is not None
                    failed = pb.ModelInferResponse(model_name=answer.model_name, id=answer.id)
                    yield pb.ModelStreamInferResponse(
                        error_message=answer.error.message, infer_response=failed
                    )


async def _stream_items(requests: AsyncIterator[pb.ModelInferRequest]) -> AsyncIterator[StreamItem]:
    async for message in requests:
        try:
            yield StreamItem(message.model_name, message.id, request=v2_codec.request_from_proto(message))
        except AisfError as error:
            yield StreamItem(message.model_name, message.id, error=error)


def _unsupported(feature: str) -> Any:
    async def handler(self: InferenceServicer, request: Any, context: Context) -> Any:
        raise Unsupported(f"{feature} is not supported by aisf")

    return handler


for _rpc, _feature in {
    "SystemSharedMemoryStatus": "system shared memory",
    "SystemSharedMemoryRegister": "system shared memory",
    "SystemSharedMemoryUnregister": "system shared memory",
    "CudaSharedMemoryStatus": "CUDA shared memory",
    "CudaSharedMemoryRegister": "CUDA shared memory",
    "CudaSharedMemoryUnregister": "CUDA shared memory",
    "TraceSetting": "trace settings",
    "LogSettings": "log settings",
}.items():
    setattr(InferenceServicer, _rpc, _unsupported(_feature))


def register(dataplane: Dataplane) -> Any:
    def add(server: aio.Server) -> None:
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(dataplane), server)

    return add
