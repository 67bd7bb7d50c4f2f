"""aisf.feature.v1 messages <-> the feature lane's domain types (both directions: the servicer and the
router's gRPC client use them)."""

from __future__ import annotations

import numpy as np

from aisf.feature.v1 import feature_service_pb2 as pb
from aisf.services.common.errors import InvalidInput
from aisf.services.feature.catalog import Catalog
from aisf.services.feature.types import COLUMN_DTYPES, EntityValue, FeatureColumn, FeatureQuery, FeatureResult

# Feast value type -> the FeatureColumn oneof field that carries it.
_COLUMN_FIELDS = {
    "DOUBLE": "double_values",
    "FLOAT": "float_values",
    "INT64": "int64_values",
    "UNIX_TIMESTAMP": "int64_values",
    "INT32": "int32_values",
    "STRING": "string_values",
    "BYTES": "bytes_values",
    "BOOL": "bool_values",
}
_LIST_TYPES = {
    "double_values": pb.DoubleValues,
    "float_values": pb.FloatValues,
    "int64_values": pb.Int64Values,
    "int32_values": pb.Int32Values,
    "string_values": pb.StringValues,
    "bytes_values": pb.BytesValues,
    "bool_values": pb.BoolValues,
}


def query_to_proto(query: FeatureQuery) -> pb.GetOnlineFeaturesRequest:
    request = pb.GetOnlineFeaturesRequest(
        features=list(query.features),
        feature_service=query.feature_service,
        full_feature_names=query.full_feature_names,
    )
    for key, values in query.entities.items():
        if isinstance(values, np.ndarray):  # the router's join: integer ids
            request.entities[key].int64_values.values.extend(values.tolist())
        elif all(isinstance(v, str) for v in values):
            request.entities[key].string_values.values.extend(values)  # type: ignore[arg-type]
        else:
            request.entities[key].int64_values.values.extend(int(v) for v in values)
    return request


def query_from_proto(request: pb.GetOnlineFeaturesRequest) -> FeatureQuery:
    entities: dict[str, list[EntityValue]] = {}
    for key, values in request.entities.items():
        kind = values.WhichOneof("values")
        if kind is None:
            raise InvalidInput(f"entities.{key}: no values")
        entities[key] = list(getattr(values, kind).values)
    return FeatureQuery(
        entities, tuple(request.features), request.feature_service, request.full_feature_names
    )


def result_to_proto(result: FeatureResult) -> pb.GetOnlineFeaturesResponse:
    response = pb.GetOnlineFeaturesResponse(online_store=result.online_store)
    for column in result.columns:
        field = _COLUMN_FIELDS[column.value_type]
        message = response.columns.add(
            name=column.name,
            value_type=column.value_type,
            statuses=column.statuses.tolist(),
            event_time_unix_nanos=column.event_time_ns.tolist(),
        )
        getattr(message, field).values.extend(column.values.tolist())
    return response


def result_from_proto(response: pb.GetOnlineFeaturesResponse) -> FeatureResult:
    columns = []
    for column in response.columns:
        kind = column.WhichOneof("values")
        raw = list(getattr(column, kind).values) if kind else []
        dtype = COLUMN_DTYPES.get(column.value_type, np.dtype(np.object_))
        columns.append(
            FeatureColumn(
                column.name,
                column.value_type,
                np.asarray(raw, dtype=dtype),
                np.asarray(column.statuses, dtype=np.uint8),
                np.asarray(column.event_time_unix_nanos, dtype=np.int64),
            )
        )
    return FeatureResult(columns, response.online_store)


def catalog_to_proto(catalog: Catalog) -> pb.ListFeaturesResponse:
    return pb.ListFeaturesResponse(
        project=catalog.project,
        online_store=catalog.online_store.type,
        feature_views=[
            pb.FeatureView(
                name=v.name,
                join_keys=list(v.join_keys),
                features=[pb.FeatureField(name=f.name, value_type=f.value_type) for f in v.features],
                ttl_seconds=v.ttl_s,
            )
            for v in catalog.views.values()
        ],
        feature_services=[
            pb.FeatureServiceDefinition(name=name, features=[f"{v}:{f}" for v, f in refs])
            for name, refs in catalog.services.items()
        ],
    )
