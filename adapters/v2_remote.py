"""Any KServe V2 server (Triton, MLServer, another aisf) reached over gRPC with tritonclient."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from aisf.adapters.base import Health, ModelMetadata, ModelSpec
from aisf.services.common.errors import (
    AisfError,
    Code,
    ModelLoadFailed,
    ModelNotReady,
)
from aisf.services.common.tensors import InferRequest, InferResponse, Tensor, TensorSpec

_STATUS_CODES = {f"StatusCode.{c.name}": c for c in Code}


def remote_failure(exc: InferenceServerException, where: str) -> AisfError:
    """Keep the remote's status code so retries and HTTP mapping treat it like a local error."""
    code = _STATUS_CODES.get(str(exc.status()), Code.UNAVAILABLE)
    error_cls = AisfError.class_for("", code)
    return error_cls(f"{where}: {exc.message()}")


class V2RemoteAdapter:
    """Parameters: `url` (host:port, required), `remote_model` (default: our model name),
    `remote_version` (default: the server's choice), `timeout_s` (default 30)."""

    def __init__(self) -> None:
        self._client: grpcclient.InferenceServerClient | None = None
        self._remote_model = ""
        self._remote_version = ""
        self._timeout_s = 30.0
        self._where = ""

    async def load(self, spec: ModelSpec) -> ModelMetadata:
        params = spec.config.parameters
        url = str(params.get("url", ""))
        if not url:
            raise ModelLoadFailed(f"model '{spec.name}': backend v2_remote needs parameters.url")
        self._remote_model = str(params.get("remote_model", spec.name))
        self._remote_version = str(params.get("remote_version", ""))
        self._timeout_s = float(params.get("timeout_s", 30))
        self._where = f"remote model '{self._remote_model}' at {url}"
        client = grpcclient.InferenceServerClient(url)
        try:
            metadata = await client.get_model_metadata(
                self._remote_model, self._remote_version, client_timeout=self._timeout_s
            )
        except InferenceServerException as exc:
            await client.close()
            raise ModelLoadFailed(f"{self._where}: {exc.message()}") from exc
        self._client = client
        return ModelMetadata(
            inputs=[TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in metadata.inputs],
            outputs=[TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in metadata.outputs],
            platform=metadata.platform or "v2_remote",
        )

    async def infer(self, request: InferRequest) -> InferResponse:
        client = self._client
        if client is None:
            raise ModelNotReady(f"{self._where or 'remote model'} is not loaded")
        inputs = []
        for tensor in request.inputs:
            remote_input = grpcclient.InferInput(tensor.name, list(tensor.shape), tensor.datatype)
            remote_input.set_data_from_numpy(np.asarray(tensor.data))
            inputs.append(remote_input)
        outputs = [grpcclient.InferRequestedOutput(o.name) for o in request.outputs] or None
        try:
            result = await client.infer(
                self._remote_model,
                inputs,
                model_version=self._remote_version,
                outputs=outputs,
                request_id=request.id,
                client_timeout=self._timeout_s,
            )
        except InferenceServerException as exc:
            raise remote_failure(exc, self._where) from exc
        response = result.get_response()
        return InferResponse(
            model_name=request.model_name,
            model_version=request.model_version,
            outputs=[Tensor.from_numpy(o.name, result.as_numpy(o.name)) for o in response.outputs],
            id=request.id,
        )

    async def health(self) -> Health:
        client = self._client
        if client is None:
            return Health(ready=False, reason="not loaded")
        try:
            ready = await client.is_model_ready(self._remote_model, self._remote_version)
        except InferenceServerException as exc:
            return Health(ready=False, reason=exc.message() or "unreachable")
        return Health(ready=bool(ready), reason="" if ready else "remote model not ready")

    async def unload(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
