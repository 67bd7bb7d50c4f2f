"""Which loaded model version serves a request: the version it names, else the model's canary split
(config.yaml `traffic`, or an operator's promotion), else the newest ready version."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping

from aisf.services.common.model_config import TrafficConfig, TrafficRoute
from aisf.services.common.tensors import ParameterValue
from aisf.services.router.repository import LoadedModel, ModelRepository


def _bucket(value: str) -> float:
    """A stable point in [0, 1) for a sticky key: the same caller always lands on the same route."""
    digest = hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def pick(traffic: TrafficConfig, point: float) -> TrafficRoute:
    """The route whose share of the total weight holds `point` (0 <= point < 1)."""
    total = sum(r.weight for r in traffic.routes)
    edge = 0.0
    for route in traffic.routes:
        edge += route.weight / total
        if point < edge and route.weight > 0:
            return route
    return next(r for r in reversed(traffic.routes) if r.weight > 0)


class TrafficRouter:
    def __init__(self, repository: ModelRepository, draw: Callable[[], float] = random.random) -> None:
        self._repository = repository
        self._draw = draw

    def resolve(self, name: str, version: str, parameters: Mapping[str, ParameterValue]) -> LoadedModel:
        newest = self._repository.get(name, version)
        if version:
            return newest
        traffic = self._repository.traffic(name)
        if traffic is None:
            return self._live_version(newest)
        sticky = parameters.get(traffic.sticky_parameter) if traffic.sticky_parameter else None
        # An empty key (an anonymous caller) is no caller: it draws, or every one would share a route.
        route = pick(traffic, _bucket(str(sticky)) if sticky not in (None, "") else self._draw())
        return self._repository.get(route.model or name, str(route.version or ""))

    def _live_version(self, newest: LoadedModel) -> LoadedModel:
        """The newest version, unless it is this model's own shadow: a shadow takes no live traffic
        until it is promoted."""
        shadow = newest.config.shadow
        own = shadow is not None and shadow.model in ("", newest.name)
        if not own or shadow is None or shadow.version != str(newest.version):
            return newest
        others = [m for m in self._repository.ready() if m.name == newest.name and m is not newest]
        return max(others, key=lambda m: m.version) if others else newest
