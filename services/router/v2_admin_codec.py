"""Server, model, statistics and repository answers of the V2 / Triton contract, as protobuf."""

from __future__ import annotations

from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb

from aisf.services.router.dataplane import ServerMetadata
from aisf.services.router.repository import IndexEntry, LoadedModel
from aisf.services.router.statistics import Duration, ModelStatistics

_CONFIG_TYPES = {
    "BOOL": mc.TYPE_BOOL,
    "UINT8": mc.TYPE_UINT8,
    "UINT16": mc.TYPE_UINT16,
    "UINT32": mc.TYPE_UINT32,
    "UINT64": mc.TYPE_UINT64,
    "INT8": mc.TYPE_INT8,
    "INT16": mc.TYPE_INT16,
    "INT32": mc.TYPE_INT32,
    "INT64": mc.TYPE_INT64,
    "FP16": mc.TYPE_FP16,
    "FP32": mc.TYPE_FP32,
    "FP64": mc.TYPE_FP64,
    "BYTES": mc.TYPE_STRING,
}


def server_metadata_to_proto(metadata: ServerMetadata) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(
        name=metadata.name, version=metadata.version, extensions=metadata.extensions
    )


def model_metadata_to_proto(model: LoadedModel, versions: list[str]) -> pb.ModelMetadataResponse:
    def tensors(specs: list) -> list[pb.ModelMetadataResponse.TensorMetadata]:  # type: ignore[type-arg]
        return [
            pb.ModelMetadataResponse.TensorMetadata(name=t.name, datatype=t.datatype, shape=t.shape)
            for t in specs
        ]

    return pb.ModelMetadataResponse(
        name=model.name,
        versions=versions,
        platform=model.platform,
        inputs=tensors(model.request_inputs),
        outputs=tensors(model.outputs),
    )


def model_config_to_proto(model: LoadedModel) -> pb.ModelConfigResponse:
    config = model.config
    # A model that fetches its own features takes lists of entity ids, not batches of engine rows.
    max_batch_size = 0 if config.features is not None else config.max_batch_size
    skip = 1 if max_batch_size > 0 else 0
    message = mc.ModelConfig(
        name=model.name,
        platform=model.platform,
        backend=config.backend,
        max_batch_size=max_batch_size,
        input=[
            mc.ModelInput(name=t.name, data_type=_CONFIG_TYPES[t.datatype], dims=t.shape[skip:])
            for t in model.request_inputs
        ],
        output=[
            mc.ModelOutput(name=t.name, data_type=_CONFIG_TYPES[t.datatype], dims=t.shape[skip:])
            for t in model.outputs
        ],
        instance_group=[
            mc.ModelInstanceGroup(
                name=f"{model.name}_0", count=config.instance_count, kind=mc.ModelInstanceGroup.KIND_CPU
            )
        ],
    )
    policy = config.version_policy
    if policy.all:
        message.version_policy.all.SetInParent()
    elif policy.specific:
        message.version_policy.specific.versions.extend(policy.specific)
    else:
        message.version_policy.latest.num_versions = policy.latest or 1
    if config.dynamic_batching is not None:
        message.dynamic_batching.preferred_batch_size.extend(config.dynamic_batching.preferred_batch_size)
        message.dynamic_batching.max_queue_delay_microseconds = (
            config.dynamic_batching.max_queue_delay_microseconds
        )
    for key, value in config.parameters.items():
        message.parameters[key].string_value = str(value)
    for key, detail in model.details.items():  # what the engine chose at load (a decoder, a provider)
        message.parameters[key].string_value = detail
    return pb.ModelConfigResponse(config=message)


def _duration(value: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=value.count, ns=value.ns)


def statistics_to_proto(stats: list[ModelStatistics]) -> pb.ModelStatisticsResponse:
    return pb.ModelStatisticsResponse(
        model_stats=[
            pb.ModelStatistics(
                name=s.name,
                version=s.version,
                last_inference=s.last_inference_ms,
                inference_count=s.inference_count,
                execution_count=s.execution_count,
                inference_stats=pb.InferStatistics(
                    success=_duration(s.success),
                    fail=_duration(s.fail),
                    queue=_duration(s.queue),
                    compute_input=_duration(s.compute_input),
                    compute_infer=_duration(s.compute_infer),
                    compute_output=_duration(s.compute_output),
                ),
                batch_stats=[
                    pb.InferBatchStatistics(
                        batch_size=size,
                        compute_input=_duration(b.compute_input),
                        compute_infer=_duration(b.compute_infer),
                        compute_output=_duration(b.compute_output),
                    )
                    for size, b in sorted(s.batches.items())
                ],
            )
            for s in stats
        ]
    )


def repository_index_to_proto(entries: list[IndexEntry], ready_only: bool) -> pb.RepositoryIndexResponse:
    return pb.RepositoryIndexResponse(
        models=[
            pb.RepositoryIndexResponse.ModelIndex(
                name=e.name, version=e.version, state=e.state.value, reason=e.reason
            )
            for e in entries
            if not ready_only or e.state.value == "READY"
        ]
    )
