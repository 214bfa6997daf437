"""FP8 and MX training simulated by a module swap, in the spirit of torchao's
`convert_to_float8_training`: every converted `nn.Linear` runs its three matmuls (forward, grad
of the input, grad of the weight) on operands rounded to a low-precision element format with a
scale, and accumulates in fp32. Nothing here is fast: the operands are rounded, then multiplied
by fp32 kernels, so this measures the numerics of FP8/MX training, not its speed.

A scaled quantization is q(x) = round(x * s) / s, with x * s saturated at the format's largest
finite value first. The recipes (`RECIPES`):

- ``current``: one scale per tensor from this step's amax, s = fmt_max / amax (torchao's
  tensorwise default); e4m3 forward, e5m2 gradients (Transformer Engine's HYBRID format).
- ``delayed``: Transformer Engine's `DelayedScaling`: s = fmt_max / amax / 2**margin with amax
  taken from a history of the last `history_len` amaxes ("max" of the window, or the
  "most_recent" one); this step's amax enters the history after it is used; the very first
  step, with an empty history, uses its own amax (current scaling, margin still applied).
- ``rowwise``: torchao's ROWWISE recipe: one scale per row along the contracted dimension of
  each of the three matmuls (so an operand is quantized twice, once per layout), scales rounded
  down to a power of two, e4m3 for activations, weights and gradients alike.
- ``mxfp8``: OCP Microscaling v1.0: blocks of `block_size` (32) consecutive values along the
  contracted dimension share an e8m0 scale 2**(floor(log2 amax) - emax(element)); e4m3 elements
  forward, e5m2 gradients.
- ``mxfp4``: the same blocks with fp4 e2m1 elements forward and backward; with
  grad_rounding="stochastic" the gradient operands are rounded stochastically (as MXFP4
  training papers do), everything else to nearest.

Statistics per training forward/backward and tensor ("input", "weight", "grad_output"): amax,
scale (the per-tensor scale, or the median scale of the rows/blocks), and the shares of the
tensor's nonzero entries that underflow to zero and that saturate (|x * scale| beyond max + half
the spacing at max, so that the clamp, not rounding, decides); `float8_stats` gathers them.
For rowwise/MX the stats are those of the layout used first (forward for input and weight, the
grad-input matmul for grad_output). Evaluation (no grad, or module.eval()) records nothing and
leaves delayed histories unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from precisionlab.formats import FORMATS, FloatFormat

try:  # torch's (private) switch that pauses Python dispatch modes, e.g. the Trainer's
    # emulated 16-bit matmuls, which would add ~20 us of Python to every op here and change nothing
    from torch.utils._python_dispatch import _disable_current_modes as _no_dispatch_modes
except ImportError:  # pragma: no cover - older or newer torch without it
    _no_dispatch_modes = contextlib.nullcontext

__all__ = ["RECIPES", "Float8Linear", "Float8Recipe", "convert_to_float8_training",
           "float8_stats", "keep_first_last"]

RECIPES = ("current", "delayed", "rowwise", "mxfp8", "mxfp4")
AMAX_ALGOS = ("max", "most_recent")
GRAD_ROUNDINGS = ("nearest", "stochastic")
ROLES = ("input", "weight", "grad_output")


# The element formats, from the one registry (`formats.FORMATS`): layout, constants, torch dtype.
E4M3 = FORMATS["fp8_e4m3fn"]  # max 448, emax 8
E5M2 = FORMATS["fp8_e5m2"]  # max 57344, emax 15
E2M1 = FORMATS["fp4_e2m1"]  # max 6, emax 2; no torch dtype
# Element format per recipe: (forward operands, gradient operand).
_ELEMENTS = {"current": (E4M3, E5M2), "delayed": (E4M3, E5M2), "rowwise": (E4M3, E4M3),
             "mxfp8": (E4M3, E5M2), "mxfp4": (E2M1, E2M1)}
E8M0_EXP = 127  # e8m0 holds 2**-127 .. 2**127: the shared exponent is clamped to this range


@dataclass(frozen=True)
class Float8Recipe:
    """How converted Linears quantize: the scaling recipe and its settings (checked here)."""

    scaling: str = "current"
    history_len: int = 16  # delayed: amaxes kept (Transformer Engine's amax_history_len)
    margin: int = 0  # delayed: scale divided by 2**margin, headroom for growing tensors
    amax_compute_algo: str = "max"  # delayed: "max" of the history, or "most_recent"
    block_size: int = 32  # mxfp8 / mxfp4: values sharing one e8m0 scale (OCP MX: 32)
    grad_rounding: str = "nearest"  # "stochastic": gradient operands rounded stochastically

    def __post_init__(self) -> None:
        _check(self.scaling in RECIPES,
               f"scaling: must be one of {', '.join(RECIPES)}; got {self.scaling!r}")
        _check(_integer(self.history_len) and self.history_len >= 1,
               f"history_len: must be an integer >= 1; got {self.history_len!r}")
        _check(_integer(self.margin) and self.margin >= 0,
               f"margin: must be an integer >= 0; got {self.margin!r}")
        _check(self.amax_compute_algo in AMAX_ALGOS,
               f"amax_compute_algo: must be one of {', '.join(AMAX_ALGOS)}; "
               f"got {self.amax_compute_algo!r}")
        _check(_integer(self.block_size) and self.block_size >= 1,
               f"block_size: must be an integer >= 1; got {self.block_size!r}")
        _check(self.grad_rounding in GRAD_ROUNDINGS,
               f"grad_rounding: must be one of {', '.join(GRAD_ROUNDINGS)}; "
               f"got {self.grad_rounding!r}")

    @property
    def blocked(self) -> bool:
        """True for the MX recipes (block scales along the contracted dimension)."""
        return self.scaling in ("mxfp8", "mxfp4")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------
# Rounding and scales
# --------------------------------------------------------------------------------------------

def round_elements(y: torch.Tensor, elem: FloatFormat, rounding: str = "nearest",
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Round float32 `y` (already scaled) to `elem`'s values, saturating at +-max; float32 out.

    Nearest e4m3/e5m2 use torch's casts (bit-exact); fp4 and stochastic rounding use
    `precisionlab.lowbit.round_fast`.
    """
    y = y.clamp(-elem.max_finite, elem.max_finite)  # saturate (NaN stays NaN)
    if rounding == "nearest" and elem.torch_dtype is not None:
        return y.to(elem.torch_dtype).to(torch.float32)
    from precisionlab.lowbit import round_fast

    return round_fast(y, elem.name, rounding=rounding, generator=generator)


def tensor_scale(amax: torch.Tensor, elem: FloatFormat, margin: int = 0) -> torch.Tensor:
    """fmt_max / amax / 2**margin, or 1 where amax is 0 or not finite."""
    ok = (amax > 0) & torch.isfinite(amax)
    return torch.where(ok, elem.max_finite / amax.clamp_min(1e-30) / 2.0**margin,
                       torch.ones_like(amax))


def pow2_floor(scale: torch.Tensor) -> torch.Tensor:
    """The largest power of two <= `scale` (positive, finite)."""
    mantissa, exponent = torch.frexp(scale)  # scale = mantissa * 2**exponent, mantissa in [.5, 1)
    return torch.ldexp(torch.ones_like(scale), exponent - 1)


def mx_scale(amax: torch.Tensor, elem: FloatFormat) -> torch.Tensor:
    """The MX multiplier 2**-(shared exponent), shared exponent = floor(log2 amax) - emax
    clamped to e8m0's [-127, 127] (amax 0 gives the smallest exponent)."""
    _, exponent = torch.frexp(amax)  # amax in [2**(e-1), 2**e)
    shared = torch.where(amax > 0, exponent - 1 - elem.emax, torch.full_like(exponent, -E8M0_EXP))
    shared = shared.clamp(-E8M0_EXP, E8M0_EXP)
    return torch.ldexp(torch.ones_like(amax), -shared)


def _stats(x: torch.Tensor, y: torch.Tensor, q: torch.Tensor, amax: torch.Tensor,
           scale: torch.Tensor, elem: FloatFormat) -> torch.Tensor:
    """[amax, scale (median if several), nonzeros of x, nonzeros of q, saturated count] as one
    float64 tensor (no sync; `float8_stats` turns the counts into shares). An entry of q is 0
    only where x is 0 or underflowed, so underflows = nonzeros(x) - nonzeros(q)."""
    s = scale if scale.numel() == 1 else scale.flatten().median()
    return torch.stack([amax.max().double(), s.reshape(()).double(),
                        torch.count_nonzero(x).double(), torch.count_nonzero(q).double(),
                        torch.count_nonzero(y.abs() > elem.saturates_above).double()])


def quantize_tensorwise(x: torch.Tensor, scale: torch.Tensor, elem: FloatFormat,
                        rounding: str = "nearest", generator: torch.Generator | None = None,
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(q(x) dequantized, x * scale) for one per-tensor scale."""
    y = x * scale
    return round_elements(y, elem, rounding, generator).div_(scale), y


def quantize_rowwise(x: torch.Tensor, dim: int, elem: FloatFormat, rounding: str = "nearest",
                     generator: torch.Generator | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scale each slice along `dim` by its own power-of-two scale (floor of fmt_max / amax).

    Returns (dequantized q, x * scale, amax per slice, scale per slice)."""
    amax = x.abs().amax(dim=dim, keepdim=True)
    scale = pow2_floor(tensor_scale(amax, elem))
    y = x * scale
    return round_elements(y, elem, rounding, generator).mul_(1.0 / scale), y, amax, scale


def quantize_blocks(x: torch.Tensor, dim: int, block: int, elem: FloatFormat,
                    rounding: str = "nearest", generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MX quantization of 2-D `x` in blocks of `block` values along `dim` (a last short block
    is padded with zeros, which do not change its amax). Returns (dequantized q, x * scale,
    amax per block, scale per block): amax and scale have shape (rows, blocks, 1) for dim -1
    (or 1), (blocks, 1, cols) for dim 0."""
    rows, cols = x.shape
    along_rows = dim in (-1, 1)
    pad = (-(cols if along_rows else rows)) % block
    t = torch.nn.functional.pad(x, (0, pad) if along_rows else (0, 0, 0, pad)) if pad else x
    b = t.reshape(rows, -1, block) if along_rows else t.reshape(-1, block, cols)
    amax = b.abs().amax(dim=-1 if along_rows else 1, keepdim=True)
    scale = mx_scale(amax, elem)
    y = b * scale
    q = round_elements(y, elem, rounding, generator).mul_(1.0 / scale)  # exact: powers of 2
    q, y = q.reshape(t.shape), y.reshape(t.shape)
    if pad:
        q, y = (q[:, :cols], y[:, :cols]) if along_rows else (q[:rows], y[:rows])
    return q, y, amax, scale


# --------------------------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------------------------

class _History:
    """A Transformer-Engine amax history: a ring of `length` amaxes on the tensor's device."""

    def __init__(self, length: int) -> None:
        self.length, self.filled, self.pos = length, 0, 0
        self.values: torch.Tensor | None = None

    def amax(self, algo: str) -> torch.Tensor | None:
        """The amax the scale uses: max of the window or the latest; None while empty."""
        if self.filled == 0:
            return None
        if algo == "most_recent":
            return self.values[(self.pos - 1) % self.length]
        return self.values[:self.filled].max()

    def push(self, amax: torch.Tensor) -> None:
        """Record this step's amax (after it was used)."""
        if self.values is None or self.values.device != amax.device:
            old = self.values
            self.values = torch.zeros(self.length, device=amax.device)
            if old is not None:  # the model moved: keep what was recorded
                self.values.copy_(old)
        self.values[self.pos] = amax.detach().reshape(())
        self.pos = (self.pos + 1) % self.length
        self.filled = min(self.filled + 1, self.length)


class Float8Linear(nn.Linear):
    """An nn.Linear whose matmuls run on scaled low-precision operands (see the module doc).

    Made by `from_linear`, sharing the Linear's parameters; computes in fp32 with autocast off
    and returns the autocast dtype when autocast is on (as a bf16 Linear would)."""

    recipe: Float8Recipe
    track_stats: bool

    @classmethod
    def from_linear(cls, linear: nn.Linear, recipe: Float8Recipe, track_stats: bool = True,
                    seed: int = 0) -> Float8Linear:
        """A Float8Linear sharing `linear`'s weight and bias (no copy)."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = linear.in_features, linear.out_features
        new.weight, new.bias = linear.weight, linear.bias
        new.training = linear.training
        new.recipe, new.track_stats, new.seed = recipe, track_stats, seed
        new.reset_state()
        return new

    def reset_state(self) -> None:
        """Forget recorded stats, delayed histories and the step count."""
        self.step = 0
        self.records: list[tuple[int, str, torch.Tensor]] = []
        self.histories = {role: _History(self.recipe.history_len) for role in ROLES}
        self._generator: torch.Generator | None = None

    def generator(self, device: torch.device) -> torch.Generator:
        """This module's generator for stochastic rounding, seeded once on `device`."""
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scaling={self.recipe.scaling}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device_type = x.device.type
        autocast = torch.is_autocast_enabled(device_type)
        out_dtype = torch.get_autocast_dtype(device_type) if autocast else x.dtype
        record = self.training and torch.is_grad_enabled()
        if record:
            self.step += 1
        with torch.autocast(device_type, enabled=False), _no_dispatch_modes():
            x2 = x.reshape(-1, self.in_features).float()
            y = _ScaledMatmul.apply(x2, self.weight.float(), self, record)
            if self.bias is not None:
                y = y + self.bias.float()
        return y.reshape(*x.shape[:-1], self.out_features).to(out_dtype)

    # -- quantization of one operand -------------------------------------------------------

    def quantize(self, x: torch.Tensor, role: str, dim: int, record: bool,
                 stats: bool = True, step: int | None = None) -> torch.Tensor:
        """`x` (2-D, fp32) quantized for `role`, with scales along `dim` for rowwise/MX;
        when `record`: updates delayed histories and (if `stats`) records stats for `step`
        (default: this module's step count)."""
        recipe = self.recipe
        forward_elem, grad_elem = _ELEMENTS[recipe.scaling]
        elem = grad_elem if role == "grad_output" else forward_elem
        rounding = recipe.grad_rounding if role == "grad_output" else "nearest"
        generator = self.generator(x.device) if rounding == "stochastic" else None
        if recipe.scaling in ("current", "delayed"):
            amax = torch.linalg.vector_norm(x.detach(), float("inf"))  # max |x|, no temporary
            used = amax
            margin = 0
            if recipe.scaling == "delayed":
                history = self.histories[role]
                past = history.amax(recipe.amax_compute_algo)
                used = amax if past is None else past
                margin = recipe.margin
                if record:
                    history.push(amax)
            scale = tensor_scale(used, elem, margin)
            q, y = quantize_tensorwise(x, scale, elem, rounding, generator)
        elif recipe.scaling == "rowwise":
            q, y, amax, scale = quantize_rowwise(x, dim, elem, rounding, generator)
        else:
            q, y, amax, scale = quantize_blocks(x, dim, recipe.block_size, elem, rounding,
                                                generator)
        if record and stats and self.track_stats:
            record_step = self.step if step is None else step
            self.records.append((record_step, role, _stats(x, y, q, amax, scale, elem)))
        return q


class _ScaledMatmul(torch.autograd.Function):
    """y = q(x) @ q(W).T in fp32; backward grad_x = q(g) @ q(W), grad_W = q(g).T @ q(x)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, module: Float8Linear,
                record: bool) -> torch.Tensor:
        per_tensor = module.recipe.scaling in ("current", "delayed")
        xq = module.quantize(x, "input", -1, record)
        wq = module.quantize(weight, "weight", -1, record)
        ctx.module, ctx.record, ctx.step, ctx.per_tensor = module, record, module.step, per_tensor
        if per_tensor:  # one scale: the same quantized operands serve the backward matmuls
            ctx.save_for_backward(xq, wq)
        else:  # scales along the other dimension: re-quantize from the originals
            ctx.save_for_backward(x, weight)
        return xq @ wq.t()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        module, record, step = ctx.module, ctx.record, ctx.step  # stats carry the forward's step
        saved_x, saved_w = ctx.saved_tensors
        with _no_dispatch_modes():
            grad = grad.float()
            gq = module.quantize(grad, "grad_output", -1, record, step=step)  # along N
            if ctx.per_tensor:
                grad_x = gq @ saved_w  # (M, N) @ (N, K)
                grad_w = gq.t() @ saved_x  # (N, M) @ (M, K)
            else:
                wq = module.quantize(saved_w, "weight", 0, record, stats=False)  # along N
                grad_x = gq @ wq
                gq_t = module.quantize(grad, "grad_output", 0, record, stats=False)  # along M
                xq_t = module.quantize(saved_x, "input", 0, record, stats=False)  # along M
                grad_w = gq_t.t() @ xq_t
        return grad_x, grad_w, None, None


# --------------------------------------------------------------------------------------------
# Conversion and statistics
# --------------------------------------------------------------------------------------------

def convert_to_float8_training(model: nn.Module, recipe: str | Float8Recipe = "current",
                               module_filter_fn: Callable[[nn.Module, str], bool] | None = None,
                               track_stats: bool = True) -> nn.Module:
    """Swap every nn.Linear of `model` (in place) for a Float8Linear sharing its parameters;
    `module_filter_fn(module, fqn)` returning False keeps that Linear. Returns `model`.

    Everything is checked before any swap: the recipe, the filter, block sizes dividing each
    converted Linear's in_features and out_features, and that at least one Linear converts."""
    if isinstance(recipe, str):
        recipe = Float8Recipe(scaling=recipe)
    _check(isinstance(recipe, Float8Recipe),
           f"recipe: must be a name in {', '.join(RECIPES)} or a Float8Recipe; got {recipe!r}")
    _check(module_filter_fn is None or callable(module_filter_fn),
           f"module_filter_fn: must be callable (module, fqn) -> bool; got {module_filter_fn!r}")
    _check(isinstance(model, nn.Module), f"model: must be an nn.Module; got {type(model)}")
    chosen = [(fqn, m) for fqn, m in model.named_modules()
              if type(m) is nn.Linear and (module_filter_fn is None or module_filter_fn(m, fqn))]
    _check(bool(chosen), "no nn.Linear to convert: the model has none, or module_filter_fn "
                         "rejected them all")
    if recipe.blocked:
        for fqn, m in chosen:
            for name in ("in_features", "out_features"):
                size = getattr(m, name)
                _check(size % recipe.block_size == 0,
                       f"block_size: {recipe.block_size} does not divide {name}={size} of "
                       f"Linear {fqn!r}; choose a divisor or keep it out with module_filter_fn")
    _check(all(fqn for fqn, _ in chosen),
           "model: is itself an nn.Linear; wrap it in a container (nn.Sequential) to convert")
    for index, (fqn, m) in enumerate(chosen):
        new = Float8Linear.from_linear(m, recipe, track_stats, seed=index)
        parent_name, _, child = fqn.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, new)
    return model


def keep_first_last(model: nn.Module) -> Callable[[nn.Module, str], bool]:
    """A module_filter_fn keeping the first and last nn.Linear of `model` in high precision."""
    names = [fqn for fqn, m in model.named_modules() if isinstance(m, nn.Linear)]
    keep = {names[0], names[-1]} if names else set()
    return lambda module, fqn: fqn not in keep


def float8_stats(model: nn.Module) -> pd.DataFrame:
    """The recorded statistics of every Float8Linear in `model`, one row per step, module and
    tensor: step, module, tensor, amax, scale, underflow, saturated."""
    rows = []
    for fqn, m in model.named_modules():
        if isinstance(m, Float8Linear) and m.records:
            values = torch.stack([r[2] for r in m.records]).cpu().tolist()  # one sync a module
            for (step, role, _), (amax, scale, nnz_x, nnz_q, sat) in zip(m.records, values,
                                                                          strict=True):
                nonzero = max(nnz_x, 1.0)
                rows.append({"step": step, "module": fqn, "tensor": role, "amax": amax,
                             "scale": scale, "underflow": (nnz_x - nnz_q) / nonzero,
                             "saturated": sat / nonzero})
    columns = ["step", "module", "tensor", "amax", "scale", "underflow", "saturated"]
    return pd.DataFrame(rows, columns=columns)
