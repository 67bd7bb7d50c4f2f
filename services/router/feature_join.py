"""A model that fetches its own features (config.yaml `features:`): the request's entity-id inputs become
a feature lookup, and the answer becomes the engine's input tensor, one row per entity row."""

from __future__ import annotations

from dataclasses import replace
from typing import cast

import numpy as np
import numpy.typing as npt

from aisf.services.common.errors import EngineOverloaded, EntityNotFound, InvalidInput, ModelNotReady
from aisf.services.common.model_config import FeatureJoinConfig
from aisf.services.common.tensors import NUMPY_DTYPES, InferRequest, Tensor, TensorSpec
from aisf.services.common.validation import validate_request
from aisf.services.feature.online import OnlineFeatures
from aisf.services.feature.types import EntityValues, FeatureQuery, FeatureResult, Status

_USABLE = (Status.PRESENT, Status.OUTSIDE_MAX_AGE)


class FeatureJoin:
    def __init__(self, source: OnlineFeatures | None) -> None:
        self._source = source
        self._pending: dict[str, int] = {}

    def use(self, source: OnlineFeatures) -> None:
        self._source = source

    async def join(
        self,
        model: str,
        config: FeatureJoinConfig,
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        request: InferRequest,
        limit: int = 256,
    ) -> InferRequest:
        """The request with the engine input filled in; one that already carries it goes through as it is
        (a client may send the features itself, and a shadow copy gets the joined request). At most `limit`
        requests of a model fetch features at once (its queue bound): more are refused, not queued."""
        target = _target(model, config, inputs)
        if any(t.name == target.name for t in request.inputs):
            return request
        if self._source is None:
            raise ModelNotReady(
                f"model '{model}' declares features but no feature service is configured "
                "(AISF_FEATURE_REPO, or AISF_FEATURE_ADDRESS for a remote one)"
            )
        validate_request(model, config.entity_specs(), outputs, 0, request)
        entities = _entities(model, request)
        query = FeatureQuery(
            entities, tuple(config.features), "" if config.features else config.feature_service
        )
        pending = self._pending.get(model, 0)
        if pending >= limit:
            raise EngineOverloaded(
                f"model '{model}': {limit} requests are already fetching their features (its queue bound)",
                retry_after=1,
            )
        self._pending[model] = pending + 1
        try:
            result = await self._source.get(query)
        finally:
            self._pending[model] -= 1
        matrix = _matrix(model, config, result, entities, NUMPY_DTYPES[target.datatype])
        tensor = Tensor(target.name, target.datatype, tuple(matrix.shape), matrix)
        return replace(request, inputs=[tensor])


def _target(model: str, config: FeatureJoinConfig, inputs: list[TensorSpec]) -> TensorSpec:
    if config.input:
        found = next((t for t in inputs if t.name == config.input), None)
        if found is None:
            raise ModelNotReady(f"model '{model}': features.input '{config.input}' is not one of its inputs")
        return found
    if len(inputs) != 1:
        raise ModelNotReady(
            f"model '{model}' has {len(inputs)} inputs: its features need `input` to name one"
        )
    return inputs[0]


def _entities(model: str, request: InferRequest) -> dict[str, EntityValues]:
    """Entity inputs, flattened; a one-value input applies to every row (the user of a ranking)."""
    columns: dict[str, EntityValues] = {}
    for tensor in request.inputs:
        flat = tensor.data.reshape(-1)
        if flat.dtype.kind in "iu":
            columns[tensor.name] = cast("npt.NDArray[np.integer]", flat)
        elif flat.dtype.kind == "O":
            columns[tensor.name] = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in flat]
        else:
            raise InvalidInput(
                f"input '{tensor.name}': entity ids are integers or BYTES (strings), got {tensor.datatype}"
            )
    rows = max(len(v) for v in columns.values())
    for name, values in columns.items():
        if len(values) == 1 and rows > 1:
            columns[name] = np.repeat(values, rows) if isinstance(values, np.ndarray) else list(values) * rows
        elif len(values) != rows:
            raise InvalidInput(f"input '{name}': {len(values)} entity ids, other inputs have {rows}")
    return columns


def _matrix(
    model: str,
    config: FeatureJoinConfig,
    result: FeatureResult,
    entities: dict[str, EntityValues],
    dtype: np.dtype[np.generic],
) -> np.ndarray:
    features = [c for c in result.columns if c.name not in entities]
    matrix = np.empty((len(entities[next(iter(entities))]), len(features)), dtype=dtype)
    for j, column in enumerate(features):
        usable = np.isin(column.statuses, _USABLE)
        missing = column.statuses == Status.NOT_FOUND
        if config.missing == "not_found" and missing.any():
            row = int(np.argmax(missing))
            who = ", ".join(f"{k}={v[row]}" for k, v in entities.items())
            raise EntityNotFound(
                f"model '{model}': no features for entity {who} (feature '{column.name}'); "
                "its features.missing policy is not_found"
            )
        matrix[:, j] = np.where(usable, column.values.astype(dtype, copy=False), config.default)
    return matrix
