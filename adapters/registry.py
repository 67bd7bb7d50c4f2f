"""Finds engine adapters by backend name through the `aisf.adapters` entry-point group."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points

from aisf.adapters.base import ModelAdapter
from aisf.services.common.errors import ModelLoadFailed

ENTRY_POINT_GROUP = "aisf.adapters"

AdapterFactory = Callable[[], ModelAdapter]


class AdapterRegistry:
    """Backend name -> adapter factory; plugins register by entry point, tests by `register`."""

    def __init__(self) -> None:
        self._factories: dict[str, AdapterFactory] = {}

    @classmethod
    def from_entry_points(cls) -> AdapterRegistry:
        registry = cls()
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            registry._factories.setdefault(entry.name, _lazy(entry.name, entry.load))
        return registry

    def register(self, backend: str, factory: AdapterFactory) -> None:
        self._factories[backend] = factory

    def names(self) -> list[str]:
        return sorted(self._factories)

    def create(self, backend: str) -> ModelAdapter:
        factory = self._factories.get(backend)
        if factory is None:
            raise ModelLoadFailed(f"unknown backend '{backend}'; installed: {', '.join(self.names())}")
        return factory()


def _lazy(name: str, load: Callable[[], object]) -> AdapterFactory:
    """Import an engine only when a model asks for it, so unused engines cost nothing at start."""

    def factory() -> ModelAdapter:
        try:
            adapter_cls = load()
        except ImportError as exc:
            raise ModelLoadFailed(f"backend '{name}' is installed but cannot import: {exc}") from exc
        if not callable(adapter_cls):
            raise ModelLoadFailed(f"backend '{name}' entry point is not a class")
        adapter = adapter_cls()
        if not isinstance(adapter, ModelAdapter):
            raise ModelLoadFailed(f"backend '{name}' does not implement the ModelAdapter protocol")
        return adapter

    return factory
