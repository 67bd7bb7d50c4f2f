"""Users' Python files (a python-backend model, a pipeline's functions) run as modules of their own: two
versions of one model never share state; the module stays in sys.modules (pickling and dataclasses look it
up there) until its model unloads and calls `forget`."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path
from typing import Any

from aisf.services.common.errors import ModelLoadFailed

_modules = itertools.count()


def import_user_module(path: Path, kind: str, model: str) -> tuple[str, Any]:
    """(its name in sys.modules, the module); the file's own exceptions propagate as they are."""
    module_name = f"aisf_{kind}_{next(_modules)}_{model.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ModelLoadFailed(f"model '{model}': {path.name} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        forget(module_name)
        raise
    return module_name, module


def forget(module_name: str) -> None:
    sys.modules.pop(module_name, None)
