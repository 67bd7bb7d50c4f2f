"""ONNX Runtime in process: TensorRT/CUDA providers when the machine has them, CPU otherwise."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

from aisf.adapters.base import Health, ModelMetadata, ModelSpec, engine_failure
from aisf.services.common.errors import InvalidInput, ModelLoadFailed, ModelNotReady
from aisf.services.common.tensors import InferRequest, InferResponse, Tensor, TensorSpec
from aisf.services.common.threads import BlockingPool

_ORT_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
_TENSORRT = "TensorrtExecutionProvider"
_PREFERRED_PROVIDERS = (_TENSORRT, "CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(requested: str, available: list[str]) -> list[str]:
    """The model's comma-separated `providers` parameter if given, else the fastest present."""
    if requested:
        wanted = [p.strip() for p in requested.split(",") if p.strip()]
        missing = [p for p in wanted if p not in available]
        if missing:
            raise ModelLoadFailed(f"providers {missing} are not available; present: {available}")
        return wanted
    return [p for p in _PREFERRED_PROVIDERS if p in available]


def _spec(arg: Any) -> TensorSpec:
    datatype = _ORT_TYPES.get(arg.type)
    if datatype is None:
        raise ModelLoadFailed(f"tensor '{arg.name}' has unsupported ONNX type {arg.type}")
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
    return TensorSpec(arg.name, datatype, shape)


_cpu_arena_limit: int | None = None


def device_of(active: list[str], options: list[dict[str, str]] | None = None) -> str:
    """The session's first provider decides where it runs (ORT falls back along the list)."""
    if active and active[0] in _PREFERRED_PROVIDERS[:2]:
        index = next((o.get("device_id", "") for o in options or () if o.get("device_id")), "0")
        return f"cuda:{index}"
    return "cpu"


def _memory_capped(provider: str, limit: int, options: ort.SessionOptions) -> dict[str, str]:
    """Cap the engine's memory so an oversized batch fails with a real out-of-memory error
    (REQ-ORC-02 reroutes it): the CUDA arena per session; on CPU one process-wide arena,
    whose size the first capped model sets."""
    global _cpu_arena_limit
    if not limit:
        return {}
    if provider == "CUDAExecutionProvider":
        return {"gpu_mem_limit": str(limit)}
    if provider == "CPUExecutionProvider":
        if _cpu_arena_limit is None:
            arena = ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR
            memory = ort.OrtMemoryInfo("Cpu", arena, 0, ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(memory, ort.OrtArenaCfg(limit, -1, -1, -1))
            _cpu_arena_limit = limit
        options.add_session_config_entry("session.use_env_allocators", "1")
    return {}


def _tensorrt_fp16(providers: list[str], options: list[dict[str, str]], wanted: bool) -> dict[str, str]:
    """`tensorrt_fp16: true` asks TensorRT for FP16 kernels; without TensorRT the model runs on what is
    present, and its config says so (a caller must not believe it got FP16)."""
    if not wanted:
        return {}
    if _TENSORRT in providers:
        options[providers.index(_TENSORRT)]["trt_fp16_enable"] = "True"
        return {"tensorrt": "fp16"}
    return {"tensorrt": f"fp16 requested, {_TENSORRT} not available here: running on {providers[0]} (FP32)"}


class OnnxRuntimeAdapter:
    def __init__(self) -> None:
        self._session: ort.InferenceSession | None = None
        self._threads: BlockingPool | None = None
        self._name = ""
        self._string_inputs: frozenset[str] = frozenset()

    async def load(self, spec: ModelSpec) -> ModelMetadata:
        params = spec.config.parameters
        path = spec.path / str(params.get("model_file", "model.onnx"))
        if not path.is_file():
            raise ModelLoadFailed(f"model '{spec.name}' version {spec.version}: {path.name} not found")
        providers = choose_providers(str(params.get("providers", "")), ort.get_available_providers())
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", 1))
        # Failures reach the caller as typed errors; ORT's own error log would repeat each one.
        options.log_severity_level = 4
        limit = int(params.get("memory_limit_bytes", 0))
        provider_options = [_memory_capped(p, limit, options) for p in providers]
        details = _tensorrt_fp16(providers, provider_options, bool(params.get("tensorrt_fp16", False)))
        try:
            session = await spec.threads.run(
                ort.InferenceSession,
                str(path),
                sess_options=options,
                providers=providers,
                provider_options=provider_options,
            )
        except Exception as exc:
            raise ModelLoadFailed(f"model '{spec.name}': onnxruntime cannot load {path.name}: {exc}") from exc
        inputs = [_spec(i) for i in session.get_inputs()]
        self._session, self._name, self._threads = session, spec.name, spec.threads
        self._string_inputs = frozenset(i.name for i in inputs if i.datatype == "BYTES")
        return ModelMetadata(
            inputs=inputs,
            outputs=[_spec(o) for o in session.get_outputs()],
            platform="onnxruntime_onnx",
            device=device_of(session.get_providers(), provider_options),
            details={**details, "execution_provider": session.get_providers()[0]},
        )

    async def infer(self, request: InferRequest) -> InferResponse:
        session, threads = self._session, self._threads
        if session is None or threads is None:
            raise ModelNotReady(f"model '{self._name}' is not loaded")
        feeds = {t.name: self._feed(t) for t in request.inputs}
        names = [o.name for o in request.outputs] or None
        try:
            results = await threads.run(session.run, names, feeds)
        except Exception as exc:
            if type(exc).__name__ == "InvalidArgument":
                raise InvalidInput(f"model '{self._name}': {exc}") from exc
            raise engine_failure(exc, self._name) from exc
        output_names = names or [o.name for o in session.get_outputs()]
        return InferResponse(
            model_name=request.model_name,
            model_version=request.model_version,
            outputs=[Tensor.from_numpy(n, np.asarray(r)) for n, r in zip(output_names, results, strict=True)],
            id=request.id,
        )

    def _feed(self, tensor: Tensor) -> Any:
        if tensor.name in self._string_inputs:
            # ORT takes str elements for tensor(string); V2 BYTES carries bytes.
            return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(tensor.data)
        return tensor.data

    async def health(self) -> Health:
        return Health(ready=self._session is not None)

    async def unload(self) -> None:
        self._session = None
