"""Precision Lab: number formats, mixed-precision training and quantization, by measurement.

The public API at a glance:

    from precisionlab import FORMATS, get_format, round_to   # bit layouts and exact rounding
    from precisionlab import record                          # a verdict on a seed claim
"""

from precisionlab.claims import record
from precisionlab.formats import FORMATS, get_format, round_to

__all__ = ["FORMATS", "get_format", "record", "round_to"]
__version__ = "0.1.0"
