"""What each gRPC method asks of a caller: nothing (health), a role, and for methods naming a model, a key
whose scope includes it. Every method of every service has a rule here (a test holds the table to the
services); one missing would need an admin key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aisf.services.common.auth.principal import ADMIN, INFER, Principal
from aisf.services.common.errors import PermissionDenied


@dataclass(frozen=True, slots=True)
class Rule:
    role: str | None
    """None: public (no key needed)."""
    model_field: str = ""
    """The request field naming the model a scoped key must include."""
    any_model: bool = False
    """The call reaches models it does not name (a batch file's lines): a scoped key may not make it."""

    @property
    def public(self) -> bool:
        return self.role is None

    def require(self, principal: Principal) -> None:
        if self.role is not None and not principal.has(self.role):
            raise PermissionDenied(f"this key lacks the '{self.role}' role")
        if self.any_model and principal.models:
            raise PermissionDenied("a key scoped to models may not make this call (it reaches any model)")

    def check(self, principal: Principal, request: Any) -> None:
        """The model scope, on one request message (each message of a stream)."""
        if not self.model_field or not principal.models:
            return
        model = getattr(request, self.model_field, "")
        if not principal.may_use(model):
            named = f"'{model}'" if model else "every model"
            raise PermissionDenied(f"{self.model_field}: this key may not use {named}")


PUBLIC = Rule(None)
_INFER = Rule(INFER)
_ADMIN = Rule(ADMIN)


def _infer_on(field: str) -> Rule:
    return Rule(INFER, field)


def _admin_on(field: str) -> Rule:
    return Rule(ADMIN, field)


_V2 = "/inference.GRPCInferenceService/"
_LLM = "/aisf.llm.v1.LlmService/"
_CONTROL = "/aisf.router.v1.ModelControlService/"
_JOBS = "/aisf.job.v1.JobService/"
_FILES = "/aisf.job.v1.FileService/"
_BATCHES = "/aisf.job.v1.BatchService/"
_FEATURES = "/aisf.feature.v1.FeatureService/"
_MESH = "/aisf.mesh.v1.MeshService/"
_ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"

RULES: dict[str, Rule] = {
    # KServe V2 / Triton: health is public, as on REST.
    _V2 + "ServerLive": PUBLIC,
    _V2 + "ServerReady": PUBLIC,
    _V2 + "ModelReady": PUBLIC,
    _V2 + "ServerMetadata": _INFER,
    _V2 + "ModelMetadata": _infer_on("name"),
    _V2 + "ModelConfig": _infer_on("name"),
    _V2 + "ModelStatistics": _infer_on("name"),
    _V2 + "ModelInfer": _infer_on("model_name"),
    _V2 + "ModelStreamInfer": _infer_on("model_name"),
    _V2 + "RepositoryIndex": _INFER,
    _V2 + "RepositoryModelLoad": _admin_on("model_name"),
    _V2 + "RepositoryModelUnload": _admin_on("model_name"),
    _V2 + "SystemSharedMemoryStatus": _ADMIN,
    _V2 + "SystemSharedMemoryRegister": _ADMIN,
    _V2 + "SystemSharedMemoryUnregister": _ADMIN,
    _V2 + "CudaSharedMemoryStatus": _ADMIN,
    _V2 + "CudaSharedMemoryRegister": _ADMIN,
    _V2 + "CudaSharedMemoryUnregister": _ADMIN,
    _V2 + "TraceSetting": _ADMIN,
    _V2 + "LogSettings": _ADMIN,
    _LLM + "ChatCompletion": _infer_on("model"),
    _LLM + "Completion": _infer_on("model"),
    _LLM + "Embed": _infer_on("model"),
    _LLM + "ListModels": _INFER,
    _CONTROL + "GetModelStatus": _infer_on("model_name"),
    _CONTROL + "SetBreakerMode": _admin_on("model_name"),
    _CONTROL + "GetShadowReport": _admin_on("model_name"),
    _CONTROL + "PromoteShadow": _admin_on("model_name"),
    "/aisf.router.v1.ModelRepositoryService/ListModelEvents": _ADMIN,
    # Jobs, files and batches: a key sees its own tenant's (the services check ownership).
    _JOBS + "SubmitJob": _infer_on("model_name"),
    _JOBS + "GetJob": _INFER,
    _JOBS + "WatchJob": _INFER,
    _JOBS + "CancelJob": _INFER,
    _JOBS + "ListJobs": _INFER,
    _JOBS + "GetJobResult": _INFER,
    _FILES + "UploadFile": _INFER,
    _FILES + "GetFile": _INFER,
    _FILES + "GetFileContent": _INFER,
    _FILES + "ListFiles": _INFER,
    _FILES + "DeleteFile": _INFER,
    _BATCHES + "CreateBatch": Rule(INFER, any_model=True),
    _BATCHES + "GetBatch": _INFER,
    _BATCHES + "CancelBatch": _INFER,
    _BATCHES + "ListBatches": _INFER,
    _FEATURES + "GetOnlineFeatures": _INFER,
    _FEATURES + "ListFeatures": _INFER,
    "/aisf.pii.v1.PiiService/Detect": _INFER,
    "/aisf.pii.v1.PiiService/Redact": _INFER,
    # The mesh: replicas register with the roles' token (or an admin key); Envoy holds no key, so its
    # ADS stream is open: the control plane's port belongs on the private network (docs/deploy.md).
    _MESH + "Register": _ADMIN,
    _MESH + "Heartbeat": _ADMIN,
    _MESH + "Leave": _ADMIN,
    _MESH + "ListReplicas": _ADMIN,
    _ADS + "StreamAggregatedResources": PUBLIC,
    _ADS + "DeltaAggregatedResources": PUBLIC,
}


def rule_for(method: str) -> Rule:
    return RULES.get(method, _ADMIN)
