"""The ADS stream over a real gRPC server: pushes on subscription and on change, ACKs recorded, NACKs
falling back to the last good version without a push loop, stale nonces ignored, unknown types refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2
from grpc import aio
from prometheus_client import CollectorRegistry

from aisf.services.common.grpc_server import build_server
from aisf.services.mesh import ads
from aisf.services.mesh.envoy_resources import CLUSTER, ENDPOINT, MeshOptions, resources
from aisf.services.mesh.registry import Replica
from aisf.services.mesh.snapshots import SnapshotCache

NOW = datetime.now(UTC)
ONE = [Replica("a", "router", "10.0.0.1:8001", ("m",), NOW)]
TWO = [*ONE, Replica("b", "router", "10.0.0.2:8001", ("m",), NOW)]
QUIET_S = 0.3


class Envoyish:
    """One ADS stream, driven by hand."""

    def __init__(self, channel: aio.Channel) -> None:
        self._requests: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        self.call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(
            self._send()
        )

    async def _send(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        while (request := await self._requests.get()) is not None:
            yield request

    async def ask(self, type_url: str, names: tuple[str, ...] = (), **fields: Any) -> None:
        await self._requests.put(
            discovery_pb2.DiscoveryRequest(
                type_url=type_url, resource_names=names, node={"id": "envoy-test"}, **fields
            )
        )

    async def answer(self) -> discovery_pb2.DiscoveryResponse:
        return await asyncio.wait_for(self.call.read(), 5)

    async def silent(self) -> bool:
        try:
            await asyncio.wait_for(asyncio.shield(self.call.read()), QUIET_S)
        except TimeoutError:
            return True
        return False

    async def close(self) -> None:
        await self._requests.put(None)
        self.call.cancel()


@pytest.fixture()
async def plane() -> AsyncIterator[tuple[SnapshotCache, aio.Channel]]:
    metrics = CollectorRegistry()
    cache = SnapshotCache(metrics)
    cache.publish(resources(ONE, MeshOptions()))
    server = build_server(
        [ads.register(ads.AdsServicer(cache, metrics))], [ads.SERVICE_NAME], ["127.0.0.1:0"], 1 << 22
    )
    await server.start()
    channel = aio.insecure_channel(f"127.0.0.1:{server.ports['127.0.0.1:0']}")
    yield cache, channel
    await channel.close()
    await server.stop(0)


async def test_a_subscription_is_answered_and_its_ack_recorded_without_another_push(
    plane: tuple[SnapshotCache, aio.Channel],
) -> None:
    cache, channel = plane
    envoy = Envoyish(channel)
    await envoy.ask(CLUSTER)
    clusters = await envoy.answer()
    assert clusters.type_url == CLUSTER and clusters.version_info == cache.served(CLUSTER).version  # type: ignore[union-attr]
    names = {cluster_pb2.Cluster.FromString(r.value).name for r in clusters.resources}
    assert names == {"aisf-router", "aisf-job", "aisf-feature", "aisf-pii", "aisf-model-m"}
    await envoy.ask(CLUSTER, version_info=clusters.version_info, response_nonce=clusters.nonce)
    assert await envoy.silent()
    assert cache.accepted()[CLUSTER] == clusters.version_info
    await envoy.close()


async def test_endpoints_are_sent_for_the_names_asked_and_pushed_again_when_replicas_change(
    plane: tuple[SnapshotCache, aio.Channel],
) -> None:
    cache, channel = plane
    envoy = Envoyish(channel)
    await envoy.ask(ENDPOINT, ("aisf-model-m",))
    first = await envoy.answer()
    (assignment,) = [endpoint_pb2.ClusterLoadAssignment.FromString(r.value) for r in first.resources]
    assert assignment.cluster_name == "aisf-model-m"
    assert len(assignment.endpoints[0].lb_endpoints) == 1
    await envoy.ask(ENDPOINT, ("aisf-model-m",), version_info=first.version_info, response_nonce=first.nonce)
    cache.publish(resources(TWO, MeshOptions()))
    pushed = await envoy.answer()
    assert pushed.version_info != first.version_info
    (assignment,) = [endpoint_pb2.ClusterLoadAssignment.FromString(r.value) for r in pushed.resources]
    assert len(assignment.endpoints[0].lb_endpoints) == 2
    await envoy.close()


async def test_a_nack_keeps_the_last_good_version_and_starts_no_push_loop(
    plane: tuple[SnapshotCache, aio.Channel],
) -> None:
    cache, channel = plane
    envoy = Envoyish(channel)
    await envoy.ask(ENDPOINT, ("aisf-router",))
    good = await envoy.answer()
    await envoy.ask(ENDPOINT, ("aisf-router",), version_info=good.version_info, response_nonce=good.nonce)
    cache.publish(resources(TWO, MeshOptions()))
    bad = await envoy.answer()
    rejected = status_pb2.Status(code=3, message="endpoint: invalid")
    await envoy.ask(
        ENDPOINT,
        ("aisf-router",),
        version_info=good.version_info,
        response_nonce=bad.nonce,
        error_detail=rejected,
    )
    assert await envoy.silent()  # Envoy runs the good one: nothing to push
    assert cache.served(ENDPOINT).version == good.version_info  # type: ignore[union-attr]
    await envoy.close()


async def test_an_answer_to_an_older_push_is_ignored(plane: tuple[SnapshotCache, aio.Channel]) -> None:
    cache, channel = plane
    envoy = Envoyish(channel)
    await envoy.ask(ENDPOINT, ("aisf-router",))
    first = await envoy.answer()
    cache.publish(resources(TWO, MeshOptions()))
    second = await envoy.answer()  # pushed before Envoy answered the first
    rejected = status_pb2.Status(code=3, message="stale")
    await envoy.ask(ENDPOINT, ("aisf-router",), response_nonce=first.nonce, error_detail=rejected)
    assert await envoy.silent()
    assert cache.served(ENDPOINT).version == second.version_info  # type: ignore[union-attr]  # not rejected
    await envoy.close()


async def test_an_unknown_type_url_is_invalid_argument_naming_it(
    plane: tuple[SnapshotCache, aio.Channel],
) -> None:
    cache, channel = plane
    envoy = Envoyish(channel)
    version = cache.version()
    await envoy.ask("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret")
    with pytest.raises(aio.AioRpcError) as raised:
        await envoy.answer()
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "type_url: 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret'" in str(
        raised.value.details()
    )
    assert cache.version() == version  # nothing it sent touched the snapshot


async def test_incremental_xds_is_unimplemented(plane: tuple[SnapshotCache, aio.Channel]) -> None:
    _, channel = plane

    async def nothing() -> AsyncIterator[discovery_pb2.DeltaDiscoveryRequest]:
        yield discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER)

    call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).DeltaAggregatedResources(nothing())
    with pytest.raises(aio.AioRpcError) as raised:
        await asyncio.wait_for(call.read(), 5)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
