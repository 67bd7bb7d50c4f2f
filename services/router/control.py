"""Operating served models under faults: breaker state and overrides, shadow reports and promotion."""

from __future__ import annotations

from dataclasses import dataclass

from aisf.services.common.model_config import TrafficConfig
from aisf.services.router.breaker import BreakerMode, BreakerStatus
from aisf.services.router.repository import LoadedModel, ModelRepository
from aisf.services.router.shadow import ShadowReport
from aisf.services.router.shadows import ShadowRegistry


@dataclass(frozen=True, slots=True)
class VersionStatus:
    version: str
    breaker: BreakerStatus
    queue_depth: int
    in_flight: int


@dataclass(frozen=True, slots=True)
class ModelStatus:
    name: str
    versions: list[VersionStatus]
    traffic: TrafficConfig | None


def _status(model: LoadedModel) -> VersionStatus:
    return VersionStatus(
        str(model.version), model.breaker.status(), model.executor.queue_depth(), model.calls.in_flight()
    )


class ModelControl:
    def __init__(self, repository: ModelRepository, shadows: ShadowRegistry) -> None:
        self._repository = repository
        self._shadows = shadows

    def _versions(self, name: str, version: str = "") -> list[LoadedModel]:
        if version:
            return [self._repository.get(name, version)]
        self._repository.get(name)  # unknown or unloaded models fail here, typed
        return sorted((m for m in self._repository.ready() if m.name == name), key=lambda m: m.version)

    def status(self, name: str) -> ModelStatus:
        versions = [_status(m) for m in self._versions(name)]
        return ModelStatus(name, versions, self._repository.traffic(name))

    def set_breaker(self, name: str, version: str, mode: BreakerMode) -> list[VersionStatus]:
        models = self._versions(name, version)
        for model in models:
            model.breaker.force(mode)
        return [_status(m) for m in models]

    def shadow_report(self, name: str) -> ShadowReport:
        return self._shadows.report(name)

    def promote_shadow(self, name: str, force: bool) -> ShadowReport:
        return self._shadows.promote(name, force)
