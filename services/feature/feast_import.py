"""Imports Feast (seconds: typeguard) once, without its process-wide side effect: `feast.metrics` sets
PROMETHEUS_MULTIPROC_DIR to a temp folder, which every Python child started afterwards would inherit,
switching its prometheus_client to multiprocess files."""

from __future__ import annotations

import os
from types import ModuleType

_VARIABLES = ("PROMETHEUS_MULTIPROCESS_DIR", "PROMETHEUS_MULTIPROC_DIR")


def import_feast() -> ModuleType:
    before = {name: os.environ.get(name) for name in _VARIABLES}
    import feast
    import feast.metrics  # noqa: F401  (imported here so its environment change is undone here)

    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
    module: ModuleType = feast
    return module
