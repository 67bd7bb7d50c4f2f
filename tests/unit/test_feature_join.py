"""The router's feature join: entity inputs become a lookup, the answer becomes the engine's input rows."""

from __future__ import annotations

import numpy as np
import pytest

from aisf.services.common.errors import EntityNotFound, InvalidInput, ModelNotReady
from aisf.services.common.model_config import FeatureJoinConfig, TensorConfig
from aisf.services.common.tensors import InferRequest, Tensor, TensorSpec
from aisf.services.feature.types import FeatureColumn, FeatureQuery, FeatureResult, Status
from aisf.services.router.feature_join import FeatureJoin

ENGINE = [TensorSpec("input__0", "FP32", (-1, 2))]
OUTPUTS = [TensorSpec("output__0", "FP32", (-1, 1))]


class StaticFeatures:
    """Answers every lookup from a table: item id -> two features (absent ids are NOT_FOUND)."""

    def __init__(self) -> None:
        self.queries: list[FeatureQuery] = []
        self.table = {1: (0.5, 10.0), 2: (0.25, 20.0)}

    async def get(self, query: FeatureQuery) -> FeatureResult:
        self.queries.append(query)
        ids = list(query.entities["item_id"])
        found = [i in self.table for i in ids]
        status = np.where(found, Status.PRESENT, Status.NOT_FOUND).astype(np.uint8)
        columns = [FeatureColumn("item_id", "INT64", np.asarray(ids), status, np.zeros(len(ids), np.int64))]
        for j, name in enumerate(("ctr", "price")):
            values = np.asarray([self.table.get(i, (0.0, 0.0))[j] for i in ids])
            columns.append(FeatureColumn(name, "DOUBLE", values, status, np.zeros(len(ids), np.int64)))
        return FeatureResult(columns, "static")


def config(missing: str = "not_found") -> FeatureJoinConfig:
    entities = [
        TensorConfig(name="user_id", datatype="INT64", dims=[-1]),
        TensorConfig(name="item_id", datatype="INT64", dims=[-1]),
    ]
    return FeatureJoinConfig(
        entities=entities, features=["items:ctr", "items:price"], missing=missing, default=-1.0
    )  # type: ignore[arg-type]


def request(**inputs: list[int]) -> InferRequest:
    tensors = [Tensor(n, "INT64", (len(v),), np.asarray(v, dtype=np.int64)) for n, v in inputs.items()]
    return InferRequest("ranker", "", tensors)


async def test_one_user_is_applied_to_every_candidate_row() -> None:
    source = StaticFeatures()
    joined = await FeatureJoin(source).join(
        "ranker", config(), ENGINE, OUTPUTS, request(user_id=[7], item_id=[1, 2])
    )
    assert {k: list(v) for k, v in source.queries[0].entities.items()} == {
        "user_id": [7, 7],
        "item_id": [1, 2],
    }
    assert joined.inputs[0].name == "input__0" and joined.inputs[0].data.dtype == np.float32
    np.testing.assert_array_equal(joined.inputs[0].data, [[0.5, 10.0], [0.25, 20.0]])


async def test_missing_entities_get_defaults_or_a_not_found_naming_them() -> None:
    rows = request(user_id=[7], item_id=[1, 99])
    filled = await FeatureJoin(StaticFeatures()).join("ranker", config("default"), ENGINE, OUTPUTS, rows)
    np.testing.assert_array_equal(filled.inputs[0].data[1], [-1.0, -1.0])
    with pytest.raises(EntityNotFound, match="item_id=99"):
        await FeatureJoin(StaticFeatures()).join("ranker", config(), ENGINE, OUTPUTS, rows)


async def test_bad_entity_inputs_are_invalid_input_naming_the_input() -> None:
    join = FeatureJoin(StaticFeatures())
    with pytest.raises(InvalidInput, match="input 'item_id': 2 entity ids, other inputs have 3"):
        await join.join("ranker", config(), ENGINE, OUTPUTS, request(user_id=[1, 2, 3], item_id=[1, 2]))
    with pytest.raises(InvalidInput, match="unexpected input 'shop_id'"):
        await join.join("ranker", config(), ENGINE, OUTPUTS, request(user_id=[1], shop_id=[1]))
    floats = InferRequest("ranker", "", [Tensor("user_id", "FP32", (1,), np.ones(1, np.float32))])
    with pytest.raises(InvalidInput, match="input 'user_id' has datatype FP32, expected INT64"):
        await join.join("ranker", config(), ENGINE, OUTPUTS, floats)


async def test_a_request_that_brings_its_own_features_goes_through_untouched() -> None:
    source = StaticFeatures()
    own = InferRequest("ranker", "", [Tensor("input__0", "FP32", (1, 2), np.ones((1, 2), np.float32))])
    assert await FeatureJoin(source).join("ranker", config(), ENGINE, OUTPUTS, own) is own
    assert source.queries == []


async def test_without_a_feature_service_the_model_is_not_ready_naming_the_setting() -> None:
    with pytest.raises(ModelNotReady, match="AISF_FEATURE_REPO"):
        await FeatureJoin(None).join("ranker", config(), ENGINE, OUTPUTS, request(user_id=[1], item_id=[1]))


async def test_lookups_beyond_the_models_queue_bound_are_refused_not_queued() -> None:
    import asyncio

    from aisf.services.common.errors import EngineOverloaded

    release = asyncio.Event()

    class Slow(StaticFeatures):
        async def get(self, query: FeatureQuery) -> FeatureResult:
            await release.wait()
            return await super().get(query)

    join = FeatureJoin(Slow())
    rows = request(user_id=[1], item_id=[1])
    first = asyncio.create_task(join.join("ranker", config(), ENGINE, OUTPUTS, rows, limit=1))
    await asyncio.sleep(0)
    with pytest.raises(EngineOverloaded, match="1 requests are already fetching"):
        await join.join("ranker", config(), ENGINE, OUTPUTS, rows, limit=1)
    release.set()
    assert (await first).inputs[0].name == "input__0"
    assert (await join.join("ranker", config(), ENGINE, OUTPUTS, rows, limit=1)).inputs[0].name == "input__0"
