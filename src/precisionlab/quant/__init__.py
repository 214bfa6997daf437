"""Quantization: uniform affine integers, calibration observers, fake quant for QAT, a
torchao-style `quantize_` API, real int8 kernels, and low-rank factorization as a contrast.

    from precisionlab.quant import QuantConfig, QuantSpec, calibrate, quantize_
    quantize_(model, QuantConfig(weight=QuantSpec(bits=4, granularity="per_channel")))
"""

from __future__ import annotations

from precisionlab.lazy import attach

_LAZY = {  # public name -> "module:attribute" (or a submodule)
    "ACT_GRANULARITIES": "precisionlab.quant.llm:ACT_GRANULARITIES",
    "BACKENDS": "precisionlab.quant.backends:BACKENDS",
    "block_minmax_grid": "precisionlab.quant.llm:block_minmax_grid",
    "calibrate": "precisionlab.quant.modules:calibrate",
    "convert": "precisionlab.quant.modules:convert",
    "dequantize": "precisionlab.quant.affine:dequantize",
    "distinct_per_block": "precisionlab.quant.llm:distinct_per_block",
    "entropy_threshold": "precisionlab.quant.observers:entropy_threshold",
    "fake_int8_dynamic": "precisionlab.quant.llm:fake_int8_dynamic",
    "fake_quantize": "precisionlab.quant.affine:fake_quantize",
    "FakeQuantLayer": "precisionlab.quant.modules:FakeQuantLayer",
    "GRANULARITIES": "precisionlab.quant.affine:GRANULARITIES",
    "input_absmax": "precisionlab.quant.llm:input_absmax",
    "LLMQuantLinear": "precisionlab.quant.llm:LLMQuantLinear",
    "low_rank_": "precisionlab.quant.lowrank:low_rank_",
    "LowRankLinear": "precisionlab.quant.lowrank:LowRankLinear",
    "observe_range": "precisionlab.quant.observers:observe_range",
    "Observer": "precisionlab.quant.observers:Observer",
    "OBSERVERS": "precisionlab.quant.affine:OBSERVERS",
    "pack_int4": "precisionlab.quant.affine:pack_int4",
    "payload_bytes": "precisionlab.quant.modules:payload_bytes",
    "prepare_qat": "precisionlab.quant.modules:prepare_qat",
    "qparams": "precisionlab.quant.affine:qparams",
    "QTensor": "precisionlab.quant.affine:QTensor",
    "QuantConfig": "precisionlab.quant.modules:QuantConfig",
    "quantize": "precisionlab.quant.affine:quantize",
    "quantize_": "precisionlab.quant.modules:quantize_",
    "quantize_llm_": "precisionlab.quant.llm:quantize_llm_",
    "quantize_tensor": "precisionlab.quant.modules:quantize_tensor",
    "quantize_with_range": "precisionlab.quant.affine:quantize_with_range",
    "QuantizedLayer": "precisionlab.quant.modules:QuantizedLayer",
    "QuantSpec": "precisionlab.quant.affine:QuantSpec",
    "rank_for_bytes": "precisionlab.quant.lowrank:rank_for_bytes",
    "smooth_scales": "precisionlab.quant.llm:smooth_scales",
    "ste_fake_quantize": "precisionlab.quant.affine:ste_fake_quantize",
    "to_int8_backend": "precisionlab.quant.backends:to_int8_backend",
    "unpack_int4": "precisionlab.quant.affine:unpack_int4",
    "zero_fraction": "precisionlab.quant.modules:zero_fraction",
}
__all__ = sorted(_LAZY)

__getattr__, __dir__ = attach(__name__, _LAZY)
