"""Envoy's Aggregated Discovery Service, state of the world over one stream: each type is pushed when
its served version changes or the names Envoy asks for do, an ACK records the version as good, a NACK
keeps the last good one served; a stale nonce (an answer to an older push) is ignored, as the xDS
protocol says."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from grpc import aio
from prometheus_client import CollectorRegistry, Counter, Gauge

from aisf.services.common.errors import InvalidInput, Unsupported
from aisf.services.common.grpc_server import Registrar
from aisf.services.mesh.envoy_resources import ENDPOINT, ROUTE, SHORT_NAMES, TYPES
from aisf.services.mesh.snapshots import SnapshotCache

log = logging.getLogger(__name__)
SERVICE_NAME = "envoy.service.discovery.v3.AggregatedDiscoveryService"
_NAMED_TYPES = frozenset({ENDPOINT, ROUTE})
"""Types Envoy asks for by name (the others it takes whole)."""


@dataclass(slots=True)
class _Subscription:
    names: frozenset[str] = frozenset()
    sent_version: str | None = None
    """What this Envoy runs (as far as we know): the version last pushed, or the one it fell back to."""
    nonce: str = ""
    pushed: bool = False


@dataclass(slots=True)
class _Stream:
    node: str = ""
    subscriptions: dict[str, _Subscription] = field(default_factory=dict)


class AdsServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, cache: SnapshotCache, metrics: CollectorRegistry) -> None:
        self._cache = cache
        self._nonces = itertools.count(1)
        self._streams = Gauge("aisf_mesh_xds_streams", "Envoys subscribed now", registry=metrics)
        self._pushes = Counter(
            "aisf_mesh_xds_pushes", "xDS responses sent, by type", ["type"], registry=metrics
        )

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: Any
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        stream = _Stream()
        requests: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        reader = asyncio.create_task(_read(request_iterator, requests))
        change = asyncio.create_task(self._cache.changed_since(self._cache.generation))
        incoming = asyncio.create_task(requests.get())
        self._streams.inc()
        try:
            while True:
                await asyncio.wait((change, incoming), return_when=asyncio.FIRST_COMPLETED)
                if incoming.done():
                    request = incoming.result()
                    if request is None:
                        return
                    self._take(stream, request)
                    incoming = asyncio.create_task(requests.get())
                if change.done():
                    change = asyncio.create_task(self._cache.changed_since(change.result()))
                for response in self._due(stream):
                    yield response
        finally:
            self._streams.dec()
            for task in (reader, change, incoming):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _take(self, stream: _Stream, request: discovery_pb2.DiscoveryRequest) -> None:
        type_url = request.type_url
        if type_url not in TYPES:
            raise InvalidInput(
                f"type_url: '{type_url}' is not served here (clusters, endpoints, listeners and routes)"
            )
        if request.node.id:
            stream.node = request.node.id
        subscription = stream.subscriptions.setdefault(type_url, _Subscription())
        if request.version_info:  # every request names the version Envoy runs: one it accepted
            self._cache.ack(type_url, request.version_info)
        if request.response_nonce and request.response_nonce != subscription.nonce:
            return  # an answer to an older push: the newer one is still to be answered
        if request.HasField("error_detail"):
            self._cache.nack(
                type_url, subscription.sent_version or "", stream.node, request.error_detail.message
            )
            subscription.sent_version = request.version_info  # Envoy kept what it had
        names = frozenset(request.resource_names)
        if names != subscription.names:
            subscription.names, subscription.pushed = names, False

    def _due(self, stream: _Stream) -> list[discovery_pb2.DiscoveryResponse]:
        due = []
        for type_url in TYPES:  # clusters and endpoints before the routes that name them
            subscription = stream.subscriptions.get(type_url)
            served = self._cache.served(type_url)
            if subscription is None or served is None:
                continue
            if subscription.pushed and subscription.sent_version == served.version:
                continue
            if type_url in _NAMED_TYPES:
                items = [served.resources[n] for n in sorted(subscription.names) if n in served.resources]
            else:
                items = list(served.resources.values())
            subscription.nonce = str(next(self._nonces))
            subscription.sent_version, subscription.pushed = served.version, True
            self._pushes.labels(SHORT_NAMES[type_url]).inc()
            due.append(
                discovery_pb2.DiscoveryResponse(
                    version_info=served.version,
                    resources=items,
                    type_url=type_url,
                    nonce=subscription.nonce,
                )
            )
        return due

    async def DeltaAggregatedResources(
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        raise Unsupported("incremental (delta) xDS: use StreamAggregatedResources, state of the world")
        yield  # an async generator, as the stream handler wrapping it expects


async def _read(
    requests: AsyncIterator[discovery_pb2.DiscoveryRequest],
    into: asyncio.Queue[discovery_pb2.DiscoveryRequest | None],
) -> None:
    try:
        async for request in requests:
            await into.put(request)
    finally:
        await into.put(None)


def register(servicer: AdsServicer) -> Registrar:
    def add(server: aio.Server) -> None:
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(servicer, server)

    return add
