"""fp16 and bf16 matmuls emulated: fp32 kernels on the same 16-bit operands, rounded back once.

On a CPU without fp16/bf16 arithmetic (AVX2 only) torch's 16-bit matmul kernels are slow:
measured on an AMD EPYC (AVX2), 1 thread, a 64x256 by 256x256 linear layer forward and backward
took 0.77 ms in fp32 and 14 ms in bf16 or fp16; at 512x1024x1024, 49 ms against 2.2 s. The
product of two fp16 or bf16 numbers is exact in fp32 and both paths sum in fp32, so computing the
matmul in fp32 on the 16-bit operands and rounding the result to 16 bits once gives what a native
kernel gives, up to the order of the fp32 sums (as two CPUs' kernels differ). Only matmuls and
convolutions are replaced, only on the CPU, only when every floating operand has the same 16-bit
dtype; everything else (casts, softmax, the optimizer) runs as torch runs it.

The switch is global, like `torch.set_float32_matmul_precision`: `set_matmul16("auto")` emulates
on CPUs without native 16-bit arithmetic; the Trainer applies it to its 16-bit steps.

`applied_in` emulates something else: an update applied to the weights in a 16-bit format and
cast back to fp32 (one seed article's description of mixed precision, not what AMP does).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from precisionlab import provenance

MODES = ("native", "emulated", "auto")
LOW = (torch.float16, torch.bfloat16)
aten = torch.ops.aten
_MATMULS = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default,
            aten.convolution.default, aten.convolution_backward.default}
_mode = "native"


def native_16bit_cpu() -> bool:
    """True when torch's CPU kernels have both fp16 and bf16 instructions to run on
    (`provenance.has_native_16bit`), so 16-bit matmuls of either kind are not slow."""
    return all(provenance.has_native_16bit(dtype) for dtype in ("fp16", "bf16"))


def set_matmul16(mode: str) -> str:
    """Choose how 16-bit CPU matmuls run in the Trainer: 'native' (torch's kernels), 'emulated',
    or 'auto' (emulated when `native_16bit_cpu()` is False). Returns the mode now in force."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"matmul16: must be one of {', '.join(MODES)}; got {mode!r}")
    _mode = ("native" if native_16bit_cpu() else "emulated") if mode == "auto" else mode
    return _mode


def get_matmul16() -> str:
    """'native' or 'emulated': how 16-bit CPU matmuls run now."""
    return _mode


def describe() -> str:
    """For figure footers: a clause saying that 16-bit matmuls were emulated ('' if native)."""
    return ("; fp16/bf16 matmuls emulated (fp32 kernels on 16-bit operands, rounded once)"
            if _mode == "emulated" else "")


class Emulated16BitMatmuls(TorchDispatchMode):
    """Within this mode, CPU matmuls and convolutions whose floating operands all share one
    16-bit dtype run in fp32 and their results are rounded to that dtype."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        low = _shared_low_dtype((args, kwargs)) if func in _MATMULS else None
        if low is None:
            return func(*args, **kwargs)
        up = tree_map(lambda t: t.float() if isinstance(t, torch.Tensor) and t.dtype == low else t,
                      (args, kwargs))
        out = func(*up[0], **up[1])
        return tree_map(lambda t: t.to(low) if isinstance(t, torch.Tensor)
                        and t.dtype == torch.float32 else t, out)


def _shared_low_dtype(tree: object) -> torch.dtype | None:
    """The 16-bit dtype shared by every floating CPU tensor in `tree`, else None."""
    tensors = [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]
    floating = {t.dtype for t in tensors if t.is_floating_point()}
    if len(floating) != 1 or any(t.device.type != "cpu" for t in tensors):
        return None
    dtype = floating.pop()
    return dtype if dtype in LOW else None


@contextlib.contextmanager
def matmul16(dtype: torch.dtype, device: str) -> Iterator[bool]:
    """Emulate the 16-bit matmuls of a computation in `dtype` on `device` if the switch says so;
    yields whether it does."""
    emulate = _mode == "emulated" and dtype in LOW and str(device).startswith("cpu")
    if not emulate:
        yield False
        return
    with Emulated16BitMatmuls():
        yield True


def applied_in(before: torch.Tensor, after: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The weights a step from `before` to `after` gives when its update is applied in `dtype`
    and the result cast back: (before in `dtype` + (after - before) in `dtype`), added in
    `dtype`, returned in `before`'s dtype. An update below half the spacing of `dtype` at the
    weight is lost: 1 - 1e-4 is 1 in fp16 (its spacing at 1 is 2^-10)."""
    update = (after - before).to(dtype)
    return (before.to(dtype) + update).to(before.dtype)
