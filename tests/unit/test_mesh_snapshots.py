"""The snapshot cache: content-hash versions, one push per change, and a rejected (NACKed) version
never served again: the last accepted one is."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from aisf.services.mesh.envoy_resources import CLUSTER, ROUTE, MeshOptions, resources
from aisf.services.mesh.registry import Replica
from aisf.services.mesh.snapshots import SnapshotCache

ONE = [Replica("a", "router", "10.0.0.1:8001", ("m",), datetime.now(UTC))]
TWO = [*ONE, Replica("b", "router", "10.0.0.2:8001", (), datetime.now(UTC))]


def test_versions_are_content_hashes_and_an_unchanged_snapshot_is_no_change() -> None:
    first, second = SnapshotCache(CollectorRegistry()), SnapshotCache(CollectorRegistry())
    assert first.publish(resources(ONE, MeshOptions())) and second.publish(resources(ONE, MeshOptions()))
    assert first.version() == second.version() != ""  # two control planes name it alike
    generation = first.generation
    assert not first.publish(resources(ONE, MeshOptions()))
    assert first.generation == generation
    before = first.served(CLUSTER)
    assert first.publish(resources(TWO, MeshOptions()))
    assert first.served(CLUSTER) == before  # clusters did not change, only endpoints
    assert first.version() != second.version()


def test_a_rejected_version_falls_back_to_the_last_accepted_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = CollectorRegistry()
    cache = SnapshotCache(metrics)
    cache.publish(resources(ONE, MeshOptions()))
    good = cache.served(ROUTE)
    assert good is not None
    cache.ack(ROUTE, good.version)
    cache.publish(resources(TWO, MeshOptions(retries=1)))
    bad = cache.served(ROUTE)
    assert bad is not None and bad.version != good.version
    with caplog.at_level(logging.ERROR):
        cache.nack(ROUTE, bad.version, "envoy-1", "route: unknown cluster 'x'")
        cache.nack(ROUTE, bad.version, "envoy-2", "route: unknown cluster 'x'")
    assert cache.served(ROUTE) == good
    assert [r.getMessage() for r in caplog.records].count(
        f"an Envoy rejected the routes snapshot {bad.version}; serving the last accepted one "
        f"({good.version}): route: unknown cluster 'x'"
    ) == 1
    assert metrics.get_sample_value("aisf_mesh_xds_rejections_total", {"type": "routes"}) == 1
    assert (
        metrics.get_sample_value("aisf_mesh_snapshot_info", {"type": "routes", "version": good.version}) == 1
    )
    cache.publish(resources(TWO, MeshOptions(retries=1)))  # the same bad content again: still not served
    assert cache.served(ROUTE) == good
    assert cache.accepted()[ROUTE] == good.version
