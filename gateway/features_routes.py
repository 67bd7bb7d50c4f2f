"""/v1/features: Feast's feature-server API (`POST /get-online-features`) over the feature service's gRPC
contract, so Feast clients (its `remote` online store, HTTP callers) work unchanged."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from aisf.gateway.errors import ERROR_RESPONSES
from aisf.gateway.http_body import read_body
from aisf.services.clients.feature_client import FeatureClient
from aisf.services.common.errors import InvalidInput
from aisf.services.feature.types import FeatureQuery, FeatureResult, Status

router = APIRouter(prefix="/v1/features", tags=["features"], responses=ERROR_RESPONSES)
_STATUS_NAMES = {s.value: s.name for s in Status}
_EPOCH = "1970-01-01T00:00:00Z"


class OnlineFeaturesBody(BaseModel):
    """Feast's feature-server request: features ("<view>:<feature>") or a feature service, and the entity
    rows as join key -> values."""

    model_config = ConfigDict(extra="forbid")

    features: list[StrictStr] = []
    feature_service: StrictStr = ""
    entities: Annotated[dict[StrictStr, list[StrictInt | StrictStr]], Field(min_length=1)]
    full_feature_names: bool = False
    # Feast's clients send it; aisf serves unversioned views, so there is no version metadata to add.
    include_feature_view_version_metadata: bool = False


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise InvalidInput(f"{key}: given twice in one JSON object")
        seen[key] = value
    return seen


def _parse(raw: bytes) -> OnlineFeaturesBody:
    try:
        document = json.loads(raw, object_pairs_hook=_no_duplicates)
    except ValueError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None
    try:
        return OnlineFeaturesBody.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidInput(f"{where}: {first['msg']}") from None


def _time(ns: int) -> str:
    if ns == 0:
        return _EPOCH
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def feast_document(result: FeatureResult) -> dict[str, Any]:
    """Feast's column-oriented answer: names in metadata, one result per column; null where no value."""
    results = []
    for column in result.columns:
        statuses = column.statuses.tolist()
        values = [
            v if s in (Status.PRESENT, Status.OUTSIDE_MAX_AGE) else None
            for v, s in zip(column.values.tolist(), statuses, strict=True)
        ]
        if column.value_type == "BYTES":
            values = [v.hex() if isinstance(v, bytes) else v for v in values]
        results.append(
            {
                "values": values,
                "statuses": [_STATUS_NAMES[s] for s in statuses],
                "event_timestamps": [_time(t) for t in column.event_time_ns.tolist()],
            }
        )
    return {"metadata": {"feature_names": [c.name for c in result.columns]}, "results": results}


@router.post("/get-online-features", summary="Online features of entities (Feast's feature-server API)")
async def get_online_features(request: Request) -> Response:
    body = _parse(await read_body(request, request.app.state.settings.max_request_bytes))
    client: FeatureClient = request.app.state.features
    query = FeatureQuery(body.entities, tuple(body.features), body.feature_service, body.full_feature_names)
    result = await client.get(query)
    return Response(
        orjson.dumps(feast_document(result), option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
    )
