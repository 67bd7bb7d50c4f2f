"""Any KServe V2 server (Triton, MLServer, another aisf) over gRPC, with the V2 contract's own stubs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

from grpc import aio
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from aisf.adapters.base import Health, ModelMetadata, ModelSpec
from aisf.adapters.remote_retries import with_retries
from aisf.services.common import deadlines, v2_codec
from aisf.services.common.errors import (
    AisfError,
    EngineMisconfigured,
    EngineOverloaded,
    ModelLoadFailed,
    ModelNotFound,
    ModelNotReady,
    RequestTooLarge,
)
from aisf.services.common.grpc_errors import error_from_rpc
from aisf.services.common.grpc_server import channel_options
from aisf.services.common.tensors import InferRequest, InferResponse, TensorSpec

Reply = TypeVar("Reply")
_HEALTH_TIMEOUT_S = 5.0  # a readiness probe must not hang for an inference-sized timeout
_MAX_MESSAGE_BYTES = 1 << 30


def remote_failure(error: aio.AioRpcError, where: str) -> AisfError:
    """The remote's status (and, from another aisf, its reason and Retry-After) through the one shared
    table, so retries, the breaker and HTTP treat it like a local error of the same kind. Two statuses
    mean something else from behind a model that exists here: the remote lacks the model (our
    deployment is wrong), or its transport refused a message over its size limit."""
    typed = error_from_rpc(error)
    message = f"{where}: {typed.message}"
    if isinstance(typed, ModelNotFound):
        return EngineMisconfigured(message)
    if isinstance(typed, EngineOverloaded) and "larger than max" in typed.message:
        return RequestTooLarge(message)
    return type(typed)(message, typed.retry_after)


class V2RemoteAdapter:
    """Parameters: `url` (host:port, required), `remote_model` (default: our model name),
    `remote_version` (default: the server's choice), `timeout_s` (30: the longest one call waits, less when
    the request's deadline is nearer), `retries` (2: further attempts of a call that failed transiently)."""

    def __init__(self) -> None:
        self._channel: aio.Channel | None = None
        self._stub: service_pb2_grpc.GRPCInferenceServiceStub | None = None
        self._remote_model = ""
        self._remote_version = ""
        self._timeout_s = 30.0
        self._attempts = 3
        self._circuit_open: Callable[[], bool] = lambda: False
        self._where = ""

    async def load(self, spec: ModelSpec) -> ModelMetadata:
        params = spec.config.parameters
        url = str(params.get("url", ""))
        if not url:
            raise ModelLoadFailed(f"model '{spec.name}': backend v2_remote needs parameters.url")
        self._remote_model = str(params.get("remote_model", spec.name))
        self._remote_version = str(params.get("remote_version", ""))
        self._timeout_s = float(params.get("timeout_s", 30))
        self._attempts = 1 + int(params.get("retries", 2))
        self._circuit_open = spec.circuit_open
        self._where = f"remote model '{self._remote_model}' at {url}"
        channel = aio.insecure_channel(url, options=channel_options(_MAX_MESSAGE_BYTES))
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelMetadataRequest(name=self._remote_model, version=self._remote_version)
        try:
            metadata = await self._call(stub.ModelMetadata, request, self._timeout_s)
        except AisfError as exc:
            await channel.close(None)
            raise ModelLoadFailed(exc.message) from exc
        self._channel, self._stub = channel, stub
        return ModelMetadata(
            inputs=[TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in metadata.inputs],
            outputs=[TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in metadata.outputs],
            platform=metadata.platform or "v2_remote",
            device="remote",
        )

    async def _call(
        self, method: Callable[..., Awaitable[Reply]], request: object, timeout_s: float
    ) -> Reply:
        """One call within the request's deadline and at most `timeout_s`; a failure is a typed error."""
        try:
            return await method(request, timeout=deadlines.capped(timeout_s))
        except aio.AioRpcError as exc:
            raise remote_failure(exc, self._where) from None

    async def infer(self, request: InferRequest) -> InferResponse:
        stub = self._stub
        if stub is None:
            raise ModelNotReady(f"{self._where or 'remote model'} is not loaded")
        remote = replace(request, model_name=self._remote_model, model_version=self._remote_version)
        message = v2_codec.request_to_proto(remote)
        reply = await with_retries(
            lambda: self._call(stub.ModelInfer, message, self._timeout_s), self._attempts, self._circuit_open
        )
        answer = v2_codec.response_from_proto(reply)
        return InferResponse(
            request.model_name, request.model_version, answer.outputs, request.id, answer.parameters
        )

    async def health(self) -> Health:
        stub = self._stub
        if stub is None:
            return Health(ready=False, reason="not loaded")
        request = pb.ModelReadyRequest(name=self._remote_model, version=self._remote_version)
        try:
            reply = await self._call(stub.ModelReady, request, min(_HEALTH_TIMEOUT_S, self._timeout_s))
        except AisfError as exc:
            return Health(ready=False, reason=exc.message or "unreachable")
        return Health(ready=bool(reply.ready), reason="" if reply.ready else "remote model not ready")

    async def unload(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = self._stub = None
