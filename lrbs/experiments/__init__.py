"""The experiments: one module each, and each one a page, a CLI command and an API call.

A module here that defines `KIND`, `Config`, `Result` and `run` is an experiment (the shape is
described in lrbs/runs/experiment.py); `registry()` finds them, so adding one needs no list
to be edited.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def registry() -> dict[str, ModuleType]:
    """Every experiment module by its KIND, in module-name order."""
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if all(hasattr(module, a) for a in ("KIND", "Config", "Result", "run")):
            found[module.KIND] = module
    return found


def get(kind: str) -> ModuleType:
    return registry()[kind]
