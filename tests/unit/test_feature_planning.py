"""Planning a feature read: typed errors naming the field, before any store is asked."""

from __future__ import annotations

import numpy as np
import pytest

from aisf.services.common.errors import InvalidInput
from aisf.services.feature.catalog import Catalog, FeatureField, FeatureViewDef, OnlineStoreConfig
from aisf.services.feature.planning import plan
from aisf.services.feature.types import FeatureQuery

USERS = FeatureViewDef("users", ("user_id",), ("INT64",), (FeatureField("ctr", "FLOAT"),), 0.0)
SHOPS = FeatureViewDef("shops", ("shop",), ("STRING",), (FeatureField("ctr", "FLOAT"),), 0.0)
CATALOG = Catalog(
    "p",
    {"users": USERS, "shops": SHOPS},
    {"both": (("users", "ctr"), ("shops", "ctr"))},
    OnlineStoreConfig("redis"),
)


def test_integer_ids_from_the_router_are_checked_without_a_loop_and_named_when_out_of_range() -> None:
    ids = np.asarray([1, 2**63], dtype=np.uint64)
    with pytest.raises(
        InvalidInput, match=r"entities.user_id\[1\]: 9223372036854775808 is out of INT64's range"
    ):
        plan(CATALOG, FeatureQuery({"user_id": ids}, ("users:ctr",)), 10)
    ok = plan(CATALOG, FeatureQuery({"user_id": np.asarray([3, 4], dtype=np.int32)}, ("users:ctr",)), 10)
    assert ok.entities["user_id"].dtype == np.int64 and ok.rows == 2


def test_too_many_rows_are_refused_before_any_value_is_read() -> None:
    with pytest.raises(InvalidInput, match="the limit is 10"):
        plan(CATALOG, FeatureQuery({"user_id": [object()] * 11}, ("users:ctr",)), 10)  # type: ignore[list-item]


def test_string_keys_must_be_non_empty_strings() -> None:
    with pytest.raises(InvalidInput, match=r"entities.shop\[1\]: empty key"):
        plan(CATALOG, FeatureQuery({"shop": ["a", ""]}, ("shops:ctr",)), 10)
    with pytest.raises(InvalidInput, match=r"entities.shop\[0\]: join key 'shop' is STRING, got int"):
        plan(CATALOG, FeatureQuery({"shop": [5]}, ("shops:ctr",)), 10)


def test_two_views_answering_the_same_name_need_full_feature_names() -> None:
    entities = {"user_id": [1], "shop": ["a"]}
    with pytest.raises(InvalidInput, match="ask with full_feature_names"):
        plan(CATALOG, FeatureQuery(entities, feature_service="both"), 10)
    named = plan(CATALOG, FeatureQuery(entities, feature_service="both", full_feature_names=True), 10)
    assert [n for r in named.reads for n in r.names] == ["users__ctr", "shops__ctr"]
