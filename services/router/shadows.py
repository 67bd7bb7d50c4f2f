"""The shadows of every live model (both lanes): made from config.yaml as requests arrive, reported, and
promoted by an operator once their report passes its gates."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aisf.services.common.errors import AisfError, ShadowNotFound, ShadowNotPromotable
from aisf.services.common.model_config import ShadowConfig, TrafficConfig, TrafficRoute
from aisf.services.router.repository import LoadedModel, ModelRepository
from aisf.services.router.shadow import ShadowMirror, ShadowReport, empty_report

log = logging.getLogger(__name__)


def shadow_target(model: str, config: ShadowConfig) -> tuple[str, str]:
    """(model, version) the copies go to; an empty version means that model's newest."""
    return config.model or model, config.version


class ShadowRegistry:
    def __init__(self, repository: ModelRepository, timeout_s: float) -> None:
        self._repository = repository
        self._timeout_s = timeout_s
        self._mirrors: dict[str, ShadowMirror[Any, Any]] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._closed = False
        repository.on_change(self._model_changed)

    def mirror(
        self,
        live: LoadedModel,
        run: Callable[[Any], Awaitable[Any]],
        agree: Callable[[Any, Any], bool],
    ) -> ShadowMirror[Any, Any] | None:
        """The live model's mirror as its current config.yaml describes it (None without a shadow, once
        it is promoted, or while shutting down)."""
        config = live.config.shadow
        if config is None or self._closed or self._repository.overridden(live.name):
            return None
        existing = self._mirrors.get(live.name)
        if existing is not None and existing.config is config:
            return existing
        if existing is not None:
            self._retire(live.name)
        mirror: ShadowMirror[Any, Any] = ShadowMirror(
            live.name, shadow_target(live.name, config), config, run, agree, self._timeout_s
        )
        self._mirrors[live.name] = mirror
        return mirror

    def report(self, name: str) -> ShadowReport:
        config = self._config(name)
        mirror = self._mirrors.get(name)
        promoted = self._repository.overridden(name)
        if mirror is not None and mirror.config is config:
            return mirror.report(promoted)
        return empty_report(name, shadow_target(name, config), config, promoted)

    def reports(self) -> list[ShadowReport]:
        """Every mirror's report, for metrics."""
        return [m.report(self._repository.overridden(name)) for name, m in self._mirrors.items()]

    def promote(self, name: str, force: bool) -> ShadowReport:
        """Send the model's unversioned traffic to its shadow, if its report passes every gate (or
        `force`); stops the copies. Lasts until the model is loaded again (config.yaml decides then)."""
        report = self.report(name)
        if report.promoted:
            raise ShadowNotPromotable(f"model '{name}': its shadow is already promoted")
        failed = [g for g in report.gates if not g.passed]
        if failed and not force:
            details = "; ".join(f"{g.name}: {g.detail}" for g in failed)
            raise ShadowNotPromotable(f"model '{name}': shadow not promoted, gates failed: {details}")
        target, version = report.shadow_model, report.shadow_version
        route = TrafficRoute(
            model="" if target == name else target, version=int(version) if version else None, weight=1
        )
        self._repository.get(target, version)  # the shadow must be serving to take the traffic
        self._repository.override_traffic(name, TrafficConfig(routes=[route]))
        log.warning(
            "shadow promoted",
            extra={"model": name, "shadow": f"{target}:{version or 'newest'}", "forced": bool(failed)},
        )
        return self.report(name)

    async def close(self) -> None:
        self._closed = True
        for name in list(self._mirrors):
            self._retire(name)
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)

    def _config(self, name: str) -> ShadowConfig:
        config = self._repository.get(name).config.shadow
        if config is None:
            raise ShadowNotFound(f"model '{name}' has no shadow in its config.yaml")
        return config

    def _model_changed(self, name: str) -> None:
        """A reload or unload: a mirror of a config no longer served stops (a new one starts on demand)."""
        mirror = self._mirrors.get(name)
        if mirror is None:
            return
        try:
            current = self._repository.get(name).config.shadow
        except AisfError:
            current = None
        if current is not mirror.config:
            self._retire(name)

    def _retire(self, name: str) -> None:
        mirror = self._mirrors.pop(name)
        task = asyncio.get_running_loop().create_task(mirror.close())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
