"""Real int8 kernels for speed: torch.ao dynamic quantization, or torchao's where torch.ao is gone.

Our `QuantizedLayer` computes in float32 on dequantized weights (exact, not fast). For latency,
`to_int8_backend` converts a float model's Linear layers to int8 weights with int8 activations
quantized on the fly per batch. Measured on this CPU (chapter 07), torch.ao's dynamic kernels
(fbgemm/x86) beat torchao's eager path, so `auto` prefers torch.ao. torch 2.13 marks
`torch.ao.quantization` deprecated: its warnings are silenced here so they stay out of the book.
"""

from __future__ import annotations

import copy
import logging
import warnings
from contextlib import contextmanager

from torch import nn

BACKENDS = ("auto", "torch.ao", "torchao")


@contextmanager
def _quiet():
    """Silence deprecation warnings and the import-time log lines of torch.ao/torchao."""
    loggers = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def torch_ao_available() -> bool:
    """Whether this torch still ships `torch.ao.quantization.quantize_dynamic`."""
    with _quiet():
        try:
            from torch.ao.quantization import quantize_dynamic  # noqa: F401
        except ImportError:
            return False
    return True


def to_int8_backend(model: nn.Module, backend: str = "auto") -> nn.Module:
    """A copy of `model` (eval mode) whose Linear layers run real int8 kernels.

    backend: 'torch.ao' (dynamic quantization, fbgemm/x86 kernels), 'torchao'
    (`Int8DynamicActivationInt8WeightConfig`), or 'auto' = torch.ao if present, else torchao.
    Conv layers stay in float32 (dynamic quantization covers Linear only).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "auto":
        backend = "torch.ao" if torch_ao_available() else "torchao"
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        raise ValueError("model: has no nn.Linear layer for the int8 backend to convert")
    float_model = copy.deepcopy(model).eval()
    with _quiet():
        if backend == "torch.ao":
            import torch
            from torch.ao.quantization import quantize_dynamic

            return quantize_dynamic(float_model, {nn.Linear}, dtype=torch.qint8)
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        quantize_(float_model, Int8DynamicActivationInt8WeightConfig())
        return float_model
