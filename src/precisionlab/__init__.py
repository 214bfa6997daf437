"""Precision Lab: number formats, mixed-precision training and quantization, by measurement.

The public API at a glance:

    from precisionlab import FORMATS, get_format, round_to   # bit layouts and exact rounding
    from precisionlab import record                          # a verdict on a seed claim
"""

from __future__ import annotations

from precisionlab.lazy import attach

_LAZY = {  # public name -> "module:attribute" (or a submodule)
    "FORMATS": "precisionlab.formats:FORMATS",
    "get_format": "precisionlab.formats:get_format",
    "record": "precisionlab.study.claims:record",
    "round_to": "precisionlab.formats:round_to",
}
__all__ = sorted(_LAZY)
__version__ = "0.1.0"

__getattr__, __dir__ = attach(__name__, _LAZY)
