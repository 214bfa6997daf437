"""Quantization recipes for language models that the per-tensor, statically calibrated
`quantize_` does not cover: dynamic per-token / per-tensor int8 activations, SmoothQuant-style
migration of activation scale into the weights, an LLM.int8()-style split that keeps outlier
input channels in floating point, and the block grid of GGUF's Q4_1 (a float scale and a float
minimum per block), used to test whether a model already lies on such a grid.

    quantize_llm_(model, act="per_token")                          # W8A8, dynamic activations
    absmax = input_absmax(model, calibration_ids)                  # per input channel
    quantize_llm_(model, act="per_tensor", smooth_alpha=0.5, act_absmax=absmax)  # SmoothQuant
    quantize_llm_(model, act="per_token", outlier_threshold=6.0)   # LLM.int8()-style

Everything is fake quantization in float32: the values are exactly the integer model's, the
speed is not.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from precisionlab.quant.affine import EPS, QuantSpec
from precisionlab.quant.modules import quantize_tensor

ACT_GRANULARITIES = ("per_tensor", "per_token")
INT8_MAX = 127  # symmetric narrow int8 range [-127, 127], as the rest of the library uses


def fake_int8_dynamic(x: torch.Tensor, granularity: str = "per_token") -> torch.Tensor:
    """`x` rounded to symmetric int8 with a scale from its own absolute maximum: one scale per
    token (row of the last dimension) or one for the whole tensor, computed at run time."""
    if granularity not in ACT_GRANULARITIES:
        raise ValueError(f"granularity: must be one of {', '.join(ACT_GRANULARITIES)}; "
                         f"got {granularity!r}")
    xf = x.float()
    amax = (xf.abs().amax(dim=-1, keepdim=True) if granularity == "per_token"
            else xf.abs().amax())
    scale = torch.clamp(amax / INT8_MAX, min=EPS)
    return (torch.clamp(torch.round(xf / scale), -INT8_MAX, INT8_MAX) * scale).to(x.dtype)


def smooth_scales(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant's per-input-channel factor s_j = max|X_j|^alpha / max|W_:,j|^(1 - alpha):
    the layer computes (X / s) (W * s)^T, the same product, with activation outliers shrunk."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha: must be in [0, 1]; got {alpha!r}")
    if act_absmax.shape != weight.shape[1:2]:
        raise ValueError(f"act_absmax: needs one value per input channel ({weight.shape[1]}); "
                         f"got shape {tuple(act_absmax.shape)}")
    w_max = weight.detach().abs().amax(dim=0).float().clamp(min=1e-5)
    a_max = act_absmax.float().clamp(min=1e-5)
    return (a_max.pow(alpha) / w_max.pow(1 - alpha)).clamp(min=1e-5)


class LLMQuantLinear(nn.Module):
    """A Linear with int8 per-output-channel weights and dynamically int8-quantized inputs.

    Optional: `smooth` (per input channel) divides the input and multiplies the weight columns
    before either is quantized (SmoothQuant); `outlier_threshold` keeps every input channel in
    which some |x| exceeds it, in this forward pass, in float32 for both input and weight
    columns, and quantizes the rest (LLM.int8()'s mixed-precision decomposition).
    """

    def __init__(self, layer: nn.Linear, act: str = "per_token",
                 smooth: torch.Tensor | None = None,
                 outlier_threshold: float | None = None) -> None:
        super().__init__()
        if act not in ACT_GRANULARITIES:
            raise ValueError(f"act: must be one of {', '.join(ACT_GRANULARITIES)}; got {act!r}")
        if outlier_threshold is not None and not outlier_threshold > 0:
            raise ValueError(f"outlier_threshold: must be > 0 or None; got {outlier_threshold!r}")
        w = layer.weight.detach().float()
        if smooth is not None:
            w = w * smooth.to(w.device)[None, :]
            self.register_buffer("smooth", smooth.detach().float().to(w.device))
        else:
            self.smooth = None
        spec = QuantSpec(bits=8, granularity="per_channel")
        self.register_buffer("qweight", quantize_tensor(w.cpu(), spec).dequantize().to(w.device))
        self.register_buffer("weight_fp", w.clone() if outlier_threshold is not None else None)
        self.bias = (None if layer.bias is None
                     else nn.Parameter(layer.bias.detach().clone(), requires_grad=False))
        self.act = act
        self.outlier_threshold = outlier_threshold
        self.outlier_channels = 0  # outlier input channels seen in the last forward pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.smooth is not None:
            x = x / self.smooth.to(x.dtype)
        if self.outlier_threshold is None:
            return F.linear(fake_int8_dynamic(x, self.act), self.qweight.to(x.dtype), self.bias)
        flat = x.reshape(-1, x.shape[-1])
        outlier = flat.abs().amax(dim=0) > self.outlier_threshold
        self.outlier_channels = int(outlier.sum())
        x_in = torch.where(outlier, torch.zeros_like(x), x)
        out = F.linear(fake_int8_dynamic(x_in, self.act), self.qweight.to(x.dtype), self.bias)
        if self.outlier_channels:
            out = out + F.linear(x[..., outlier], self.weight_fp[:, outlier].to(x.dtype))
        return out

    def extra_repr(self) -> str:
        extra = "" if self.smooth is None else ", smoothed"
        if self.outlier_threshold is not None:
            extra += f", fp outliers |x| > {self.outlier_threshold:g}"
        return f"W int8 per_channel / A int8 {self.act} dynamic{extra}"


def input_absmax(model: nn.Module, inputs: torch.Tensor,
                 filter_fn: Callable[[nn.Module, str], bool] | None = None
                 ) -> dict[str, torch.Tensor]:
    """Per Linear (that `filter_fn(module, name)` accepts): the largest |x| of each input channel
    over calibration `inputs` (run one example at a time), for SmoothQuant's scales."""
    seen: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            a = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(dim=0).float()
            seen[name] = a if name not in seen else torch.maximum(seen[name], a)
        return record

    handles = [m.register_forward_pre_hook(hook(name)) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and (filter_fn is None or filter_fn(m, name))]
    if not handles:
        raise ValueError("model: has no Linear layer (after filter_fn) to observe")
    try:
        with torch.no_grad():
            for row in inputs:
                model(row.unsqueeze(0))
    finally:
        for h in handles:
            h.remove()
    return seen


def quantize_llm_(model: nn.Module, act: str = "per_token", smooth_alpha: float | None = None,
                  act_absmax: dict[str, torch.Tensor] | None = None,
                  outlier_threshold: float | None = None,
                  filter_fn: Callable[[nn.Module, str], bool] | None = None) -> nn.Module:
    """Swap, in place, each Linear (that `filter_fn` accepts) for an `LLMQuantLinear`. With
    `smooth_alpha`, `act_absmax` (from `input_absmax`) must name every swapped layer."""
    if smooth_alpha is not None and act_absmax is None:
        raise ValueError("act_absmax: SmoothQuant (smooth_alpha) needs the calibrated input "
                         "maxima from input_absmax(model, inputs)")
    targets = [(name, m) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and name and (filter_fn is None or filter_fn(m, name))]
    if not targets:
        raise ValueError("model: has no Linear layer to quantize (after filter_fn)")
    made = {}
    for name, m in targets:
        smooth = None
        if smooth_alpha is not None:
            if name not in act_absmax:
                raise ValueError(f"act_absmax: has no entry for layer {name!r}")
            smooth = smooth_scales(act_absmax[name], m.weight, smooth_alpha)
        made[name] = LLMQuantLinear(m, act, smooth, outlier_threshold)
    for name, new in made.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
    return model


def block_minmax_grid(w: torch.Tensor, block: int = 32, bits: int = 4) -> torch.Tensor:
    """`w` re-quantized as GGUF's Q4_1 does: per block of `block` consecutive values, the scale
    d = (max - min) / (2^bits - 1) and the minimum m kept as floats, values d * q + m with
    q = round((x - m) / d). Unlike torch.ao's affine grid, the minimum is not rounded to a
    multiple of d and 0 need not be on the grid."""
    if w.numel() % block:
        raise ValueError(f"block: {block} does not divide the {w.numel()} values of the tensor")
    r = w.detach().float().reshape(-1, block)
    lo, hi = r.amin(dim=1, keepdim=True), r.amax(dim=1, keepdim=True)
    d = ((hi - lo) / (2**bits - 1)).clamp(min=EPS)
    q = torch.clamp(torch.round((r - lo) / d), 0, 2**bits - 1)
    return (q * d + lo).reshape(w.shape).to(w.dtype)


def distinct_per_block(w: torch.Tensor, block: int = 32) -> torch.Tensor:
    """Number of distinct values in each block of `block` consecutive values of `w`."""
    if w.numel() % block:
        raise ValueError(f"block: {block} does not divide the {w.numel()} values of the tensor")
    s, _ = w.detach().reshape(-1, block).sort(dim=1)
    return (s[:, 1:] != s[:, :-1]).sum(dim=1) + 1
