"""Lazy public names for a package `__init__`: the package imports nothing until a name is used.

So `import precisionlab` costs no torch, and a chapter's cache key (`engine.staleness`, which
reads the `_LAZY` map) holds only the modules whose names it imports.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def attach(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any],
                                                         Callable[[], list[str]]]:
    """(`__getattr__`, `__dir__`) for `package` whose public `names` map to "module:attribute"
    (or to a submodule): each is imported on first use and then kept in the package."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = names[name].partition(":")
        value = importlib.import_module(module)
        value = getattr(value, attribute) if attribute else value
        setattr(importlib.import_module(package), name, value)
        return value

    def __dir__() -> list[str]:
        return sorted([*vars(importlib.import_module(package)), *names])

    return __getattr__, __dir__
