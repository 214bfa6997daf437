"""Precision Lab: number formats, mixed-precision training and quantization, by measurement.

The public API at a glance:

    from precisionlab import FORMATS, get_format, round_to   # bit layouts and exact rounding
    from precisionlab import record                          # a verdict on a seed claim
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {  # public name -> "module:attribute" (or a submodule)
    "FORMATS": "precisionlab.formats:FORMATS",
    "get_format": "precisionlab.formats:get_format",
    "record": "precisionlab.study.claims:record",
    "round_to": "precisionlab.formats:round_to",
}
__all__ = sorted(_LAZY)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import a public name on first use, so importing the package imports nothing: a
    chapter's key holds the modules it uses, and `import precisionlab` costs no torch."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, _, attribute = _LAZY[name].partition(":")
    value = importlib.import_module(module)
    value = getattr(value, attribute) if attribute else value
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
