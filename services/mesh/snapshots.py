"""What Envoys are served, per resource type: the newest snapshot, unless an Envoy rejected it (NACK),
then the last one an Envoy accepted (ACK). Versions are content hashes, so every control-plane replica
names the same configuration the same way and an unchanged type is never pushed again."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from google.protobuf import any_pb2
from google.protobuf.message import Message
from prometheus_client import CollectorRegistry, Counter, Gauge

from aisf.services.mesh.envoy_resources import SHORT_NAMES, TYPES, resource_name

log = logging.getLogger(__name__)
_RECENT = 16


@dataclass(frozen=True, slots=True)
class TypeSnapshot:
    version: str
    resources: Mapping[str, any_pb2.Any]
    """By resource name."""


def _packed(resources: Sequence[Message]) -> tuple[str, dict[str, any_pb2.Any]]:
    packed: dict[str, any_pb2.Any] = {}
    digest = hashlib.sha256()
    for resource in sorted(resources, key=resource_name):
        item = any_pb2.Any()
        item.Pack(resource)
        packed[resource_name(resource)] = item
        digest.update(item.SerializeToString(deterministic=True))
    return digest.hexdigest()[:12], packed


class SnapshotCache:
    def __init__(self, metrics: CollectorRegistry) -> None:
        self._newest: dict[str, TypeSnapshot] = {}
        self._recent: dict[str, OrderedDict[str, TypeSnapshot]] = {t: OrderedDict() for t in TYPES}
        """Versions pushed lately, by type: an ACK may come after a newer snapshot was taken."""
        self._accepted: dict[str, TypeSnapshot] = {}
        self._rejected: dict[str, set[str]] = {t: set() for t in TYPES}
        self._changed = asyncio.Event()
        self.generation = 0
        self._versions = Gauge(
            "aisf_mesh_snapshot_info",
            "The served snapshot version of each xDS type (1 on the version's series)",
            ["type", "version"],
            registry=metrics,
        )
        self._nacks = Counter(
            "aisf_mesh_xds_rejections",
            "xDS responses an Envoy rejected (NACK), by type",
            ["type"],
            registry=metrics,
        )
        for type_url in TYPES:
            self._nacks.labels(SHORT_NAMES[type_url])

    def publish(self, resources: Mapping[str, Sequence[Message]]) -> bool:
        """Take a new snapshot; True when any type changed (Envoys subscribed to it get it)."""
        changed = False
        for type_url, items in resources.items():
            version, packed = _packed(items)
            current = self._newest.get(type_url)
            if current is not None and current.version == version:
                continue
            self._newest[type_url] = snapshot = TypeSnapshot(version, packed)
            recent = self._recent[type_url]
            recent[version] = snapshot
            if len(recent) > _RECENT:
                recent.popitem(last=False)
            changed = True
        if changed:
            self._wake()
        return changed

    def served(self, type_url: str) -> TypeSnapshot | None:
        newest = self._newest.get(type_url)
        if newest is not None and newest.version in self._rejected[type_url]:
            return self._accepted.get(type_url)
        return newest

    def version(self) -> str:
        """One version for the whole snapshot served now (of its types' versions)."""
        parts = [(self.served(t) or TypeSnapshot("", {})).version for t in TYPES]
        return hashlib.sha256("/".join(parts).encode()).hexdigest()[:12] if any(parts) else ""

    def accepted(self) -> dict[str, str]:
        return {t: snapshot.version for t, snapshot in self._accepted.items()}

    def ack(self, type_url: str, version: str) -> None:
        snapshot = self._recent[type_url].get(version)
        if snapshot is not None:
            self._accepted[type_url] = snapshot

    def nack(self, type_url: str, version: str, node: str, message: str) -> None:
        """An Envoy rejected `version`: serve the last accepted one; log each rejected version once."""
        if version in self._rejected[type_url]:
            return
        self._rejected[type_url].add(version)
        self._nacks.labels(SHORT_NAMES[type_url]).inc()
        log.error(
            "an Envoy rejected the %s snapshot %s; serving the last accepted one (%s): %s",
            SHORT_NAMES[type_url],
            version,
            (self._accepted.get(type_url) or TypeSnapshot("none", {})).version,
            message,
            extra={"node": node, "xds_type": SHORT_NAMES[type_url], "version": version},
        )
        self._wake()

    async def changed_since(self, generation: int) -> int:
        while self.generation == generation:
            await self._changed.wait()
        return self.generation

    def _wake(self) -> None:
        self.generation += 1
        self._changed.set()
        self._changed = asyncio.Event()
        self._versions.clear()
        for type_url in TYPES:
            served = self.served(type_url)
            if served is not None:
                self._versions.labels(SHORT_NAMES[type_url], served.version).set(1)
