"""Quantization: uniform affine integers, calibration observers, fake quant for QAT, a
torchao-style `quantize_` API, real int8 kernels, and low-rank factorization as a contrast.

    from precisionlab.quant import QuantConfig, QuantSpec, calibrate, quantize_
    quantize_(model, QuantConfig(weight=QuantSpec(bits=4, granularity="per_channel")))
"""

from precisionlab.quant.affine import (
    GRANULARITIES,
    OBSERVERS,
    QTensor,
    QuantSpec,
    dequantize,
    fake_quantize,
    pack_int4,
    qparams,
    quantize,
    quantize_with_range,
    ste_fake_quantize,
    unpack_int4,
)
from precisionlab.quant.backends import BACKENDS, to_int8_backend
from precisionlab.quant.llm import (
    ACT_GRANULARITIES,
    LLMQuantLinear,
    block_minmax_grid,
    distinct_per_block,
    fake_int8_dynamic,
    input_absmax,
    quantize_llm_,
    smooth_scales,
)
from precisionlab.quant.lowrank import LowRankLinear, low_rank_, rank_for_bytes
from precisionlab.quant.modules import (
    FakeQuantLayer,
    QuantConfig,
    QuantizedLayer,
    calibrate,
    convert,
    payload_bytes,
    prepare_qat,
    quantize_,
    quantize_tensor,
    zero_fraction,
)
from precisionlab.quant.observers import Observer, entropy_threshold, observe_range

__all__ = [
    "ACT_GRANULARITIES", "LLMQuantLinear", "block_minmax_grid", "distinct_per_block",
    "fake_int8_dynamic", "input_absmax", "quantize_llm_", "smooth_scales",
    "BACKENDS", "GRANULARITIES", "OBSERVERS", "FakeQuantLayer", "LowRankLinear", "Observer",
    "QTensor", "QuantConfig", "QuantSpec", "QuantizedLayer", "calibrate", "convert",
    "dequantize", "entropy_threshold", "fake_quantize", "low_rank_", "observe_range",
    "pack_int4", "payload_bytes", "prepare_qat", "qparams", "quantize", "quantize_",
    "quantize_tensor", "quantize_with_range", "rank_for_bytes", "ste_fake_quantize",
    "to_int8_backend", "unpack_int4", "zero_fraction",
]
