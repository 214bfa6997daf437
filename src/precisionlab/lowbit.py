"""Fast, bit-exact rounding to formats below 16 bits: fp16/bf16/fp8, MX element formats, e8m0.

`formats.round_to` is the readable reference (float64 arithmetic, slow). `round_fast` gives the
same bits far faster: torch's own cast where torch has the dtype (fp16, bf16, e5m2; e4m3fn after a
clamp, so it saturates on every device); for the OCP MX v1.0 element formats (fp6_e2m3, fp6_e3m2,
fp4_e2m1) round(x / q) * q with the grid step q built from x's exponent bits; and integer
operations on the float32 bit pattern for stochastic rounding (every format).
`round_e8m0` rounds to the e8m0 scale format (powers of two) under the conventions of torch's
`float8_e8m0fnu` cast and of `ml_dtypes`; `mx_scale_exponent` is the OCP MX shared exponent.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from precisionlab import formats
from precisionlab.formats import FloatFormat

if TYPE_CHECKING:  # pragma: no cover
    import pandas

__all__ = [
    "BENCH_CANDIDATES",
    "E8M0_ROUNDINGS",
    "ELEMENT_FORMATS",
    "FAST_FORMATS",
    "mx_scale_exponent",
    "round_e8m0",
    "round_fast",
    "rounding_benchmark",
]


ELEMENT_FORMATS: tuple[str, ...] = ("fp6_e2m3", "fp6_e3m2", "fp4_e2m1")
"""The OCP MX v1.0 element formats below 8 bits (no inf/NaN, saturating): entries of
`formats.FORMATS`, where every format's layout and constants live."""

FAST_FORMATS: tuple[str, ...] = (
    "fp16", "bf16", "fp8_e4m3fn", "fp8_e5m2", "fp6_e2m3", "fp6_e3m2", "fp4_e2m1",
)
"""Formats `round_fast` handles, widest first."""

ROUNDINGS = ("nearest", "stochastic")

# Nearest rounding uses torch's own cast where the format has a torch dtype (bit-exact with
# formats.round_to on CPU: tests/test_formats.py and tests/test_lowbit.py). e4m3fn is clamped to
# +-448 first: torch's CPU cast saturates, but c10's scalar conversion sends |x| >= 480 and inf to
# NaN, so without the clamp the result could depend on which kernel (device) runs; the clamp is
# exact and keeps NaN.

_MAG = 0x7FFFFFFF  # float32 bits without the sign
_INF_BITS = 0x7F800000


def _fast_format(fmt: str | FloatFormat) -> FloatFormat:
    """`formats.get_format` for the formats `round_fast` handles: a name in FAST_FORMATS or a
    FloatFormat passed through; anything else raises, naming what is allowed."""
    if isinstance(fmt, FloatFormat) or (isinstance(fmt, str) and fmt in FAST_FORMATS):
        return formats.get_format(fmt)  # type: ignore[return-value]
    raise ValueError(f"fmt: unknown format {fmt!r} for fast rounding; known formats: "
                     f"{', '.join(FAST_FORMATS)} (or a FloatFormat)")


def _check_x(x: object) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"x: expected a float32 tensor, got {got}")


def _bits_of(value: float) -> int:
    """float32 bit pattern of a float32-representable number."""
    return int(torch.tensor(value, dtype=torch.float32).view(torch.int32).item())


def _round_bits(x: torch.Tensor, f: FloatFormat, rounding: str,
                generator: torch.Generator | None) -> torch.Tensor:
    """Round float32 ``x`` to ``f`` with integer operations on its bit pattern."""
    m, emin = f.mantissa_bits, f.emin
    if m > 22 or emin < -126 - m:  # pragma: no cover - guarded by the callers' format lists
        raise ValueError(f"fmt: {f.name} is too wide for the bit-pattern path")
    bits = x.view(torch.int32)
    a = bits & _MAG
    # Bits to drop below the target's last kept bit: 23 - m in its normal range, one more per
    # binade below 2**emin (its subnormal range); float32 subnormals act like exponent field 1.
    shift = (a >> 23).clamp_min_(1).neg_().add_(emin + 127 + 23 - m).clamp_min_(23 - m)
    small = shift > 23  # |x| < 2**(emin - m) = the smallest subnormal q: result is 0 or q
    q_bits = _bits_of(math.ldexp(1.0, emin - m))

    def significand(v: torch.Tensor) -> torch.Tensor:  # with the hidden bit for normals
        return (v & 0x7FFFFF) | ((v >= 0x800000).to(torch.int32) << 23)

    if rounding == "nearest":
        sig = significand(a)
        small_up = (shift == 24) & (sig > 0x800000)  # only the binade just under q passes q/2
        s = shift.clamp_max_(23)
        keep = a >> s
        rem = a - (keep << s)
        half = 1 << (s - 1)
        up = (rem > half) | ((rem == half) & (((sig >> s) & 1) == 1))  # ties to even
        out = (keep + up.to(torch.int32)) << s
        out = torch.where(small, small_up.to(torch.int32) * q_bits, out)  # a tie at q/2 -> 0
    else:
        r = torch.empty_like(a).random_(generator=generator)  # 31 uniform bits, [0, 2**31)
        # |x| < q goes up with probability sig / 2**shift (shift >= 24). Many such values: use
        # r's top `shift` bits (exact while shift <= 31, i.e. |x| >= 2**-8 q); the rest, and
        # all of them when few, draw 63 fresh bits each (exact while shift <= 63)
        n_small = int(small.sum())
        dense = n_small * 16 > a.numel()
        if dense:
            up = (r >> (31 - shift).clamp_min_(0)) < significand(a)
            small_bits = up.to(torch.int32) * q_bits
            tiny = shift > 31
        else:
            tiny = small
        lhs = None
        if (n_small and not dense) or (dense and bool(tiny.any())):
            sh = shift.masked_select(tiny).to(torch.int64)
            sg = significand(a.masked_select(tiny)).to(torch.int64)
            lhs = torch.where(sh <= 63, sg << (63 - sh).clamp(0, 63), sg >> (sh - 63).clamp(0, 40))
        # add s uniform random bits below the last kept bit, then truncate: up w.p. rem / 2**s
        s = shift.clamp_max_(23)
        out = r.bitwise_and_(torch.bitwise_left_shift(1, s).sub_(1)).add_(a)
        out.bitwise_right_shift_(s).bitwise_left_shift_(s)
        if dense:
            torch.where(small, small_bits, out, out=out)
        if lhs is not None:
            r63 = torch.empty_like(lhs).random_(generator=generator)  # [0, 2**63)
            out.masked_scatter_(tiny, (r63 < lhs).to(torch.int32) * q_bits)
    # overflow (inf inputs included, their pattern is above every finite one): inf or saturate
    max_bits = _bits_of(f.max_finite)
    out.masked_fill_(out > max_bits, _INF_BITS if f.overflow == "inf" else max_bits)
    torch.where(a > _INF_BITS, a, out, out=out)  # NaN keeps its payload
    return out.bitwise_or_(bits & ~_MAG).view(torch.float32)


def _round_grid(x: torch.Tensor, f: FloatFormat) -> torch.Tensor:
    """Nearest rounding for saturating formats: round(x / q) * q with q the grid step at |x|.

    q = 2**(max(E, emin) - m) is built from x's exponent field; x / q and the product are exact
    (powers of two, |x / q| < 2**(m + 1)), torch.round is half-to-even and keeps signed zeros and
    NaN; +-inf become +-inf and the final clamp saturates them like every other overflow.
    """
    field = (x.view(torch.int32) >> 23) & 0xFF
    q = ((field.clamp_(min=f.emin + 127) - f.mantissa_bits) << 23).view(torch.float32)
    out = torch.div(x, q).round_().mul_(q)
    return out.clamp_(-f.max_finite, f.max_finite)


class _StraightThrough(torch.autograd.Function):
    """Rounding in the forward pass, the identity in the backward pass (straight-through)."""

    @staticmethod
    def forward(ctx, x, fn):  # noqa: ANN001, ANN205 - autograd signature
        return fn(x)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205 - autograd signature
        return grad, None


def round_fast(x: torch.Tensor, fmt: str | FloatFormat, rounding: str = "nearest",
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Round float32 ``x`` to ``fmt`` (a name in FAST_FORMATS); float32 out, same shape/device.

    ``nearest`` is bit-exact with `formats.round_to` (round-half-to-even, subnormals, signed
    zeros; fp16/bf16/e5m2 overflow to +-inf, e4m3fn and the MX element formats saturate to
    +-max_finite, +-inf included; NaN stays NaN). ``stochastic`` adds uniform random bits (from
    ``generator``, on x's device) below the last kept bit and truncates: unbiased, grid values
    never move, overflow as nearest. Below the smallest subnormal q it rounds up with probability
    |x|/q (exact unless |x| < 2**-39 q, where it is floored to a multiple of 2**-63).
    A custom ``FloatFormat`` of at most 22 mantissa bits is accepted too. If ``x`` requires grad
    the result is straight-through: the gradient passes unchanged, as through torch's casts.
    """
    f = _fast_format(fmt)
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding: must be one of {', '.join(ROUNDINGS)}; got {rounding!r}")
    _check_x(x)

    def compute(t: torch.Tensor) -> torch.Tensor:
        if rounding == "nearest":
            if f.torch_dtype is not None and f is formats.FORMATS.get(f.name):
                if f.name == "fp8_e4m3fn":
                    t = t.clamp(-f.max_finite, f.max_finite)  # NaN passes; inf, >= 464 saturate
                return t.to(f.torch_dtype).float()
            if f.overflow == "saturate" and f.emin - f.mantissa_bits >= -126:
                return _round_grid(t.contiguous(), f)
        return _round_bits(t.contiguous(), f, rounding, generator)

    if x.requires_grad and torch.is_grad_enabled():
        return _StraightThrough.apply(x, compute)
    return compute(x)


# ---------------------------------------------------------------- e8m0 scales

E8M0_ROUNDINGS = ("nearest", "torch", "floor", "ceil", "stochastic")
"""Named e8m0 conversions. Each maps x to 2**k, k in [-127, 127], or NaN (0xFF).

nearest: ml_dtypes' ``float8_e8m0fnu`` cast: up when the float32 mantissa is >= 0.5, i.e. the
  nearest power of two in linear distance with a tie (1.5 * 2**k) going up; float32 subnormals
  below 2**-127 give 2**-127, but those in (2**-127, 1.5 * 2**-127) go up to 2**-126 (a quirk
  both libraries share); from 1.5 * 2**127 up, inf, NaN, zero and negative inputs give NaN.
torch: torch's ``x.to(torch.float8_e8m0fnu)`` (2.13, measured): nearest applied to |x|, the sign
  is ignored, so +-0 and tiny values give 2**-127 and -3 gives 4; +-inf and NaN give NaN.
floor / ceil: round down / up to a power of two (OCP's floor(log2) and the round-up used to
  avoid saturation); stochastic: up with probability (x - 2**k) / 2**k, unbiased. These three
  treat zero, negative, inf and NaN inputs like nearest.
"""


def round_e8m0(x: torch.Tensor, rounding: str = "nearest",
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Round float32 ``x`` to e8m0 (powers of two 2**-127..2**127, NaN); float32 out.

    Conventions in `E8M0_ROUNDINGS`; "nearest" is bit-exact with ml_dtypes, "torch" with torch's
    cast. The two agree on every positive input; they differ on zero and negatives only.
    """
    if rounding not in E8M0_ROUNDINGS:
        raise ValueError(f"rounding: must be one of {', '.join(E8M0_ROUNDINGS)}; got {rounding!r}")
    _check_x(x)
    bits = x.contiguous().view(torch.int32)
    a = bits & _MAG
    field = a >> 23
    mant = a & 0x7FFFFF
    if rounding in ("nearest", "torch"):
        # both libraries: up when mantissa bit 22 is set (>= 0.5: a tie goes up), except the
        # pattern 0x400000 (2**-127 itself); so float32 subnormals in (2**-127, 1.5 * 2**-127)
        # go up to 2**-126 although 2**-127 is nearer (measured, reproduced bit for bit)
        k = field + torch.where((field == 0) & (mant == 0x400000), 0, (mant >> 22) & 1)
    else:
        # float32 subnormals: measure the mantissa from 2**-127 (pattern 0x400000) as if it were
        # the binade [2**-127, 2**-126); below 2**-127 counts as 2**-127 (e8m0 has no zero)
        mant = torch.where(field == 0, (mant - 0x400000).clamp_min(0) << 1, mant)
        if rounding == "floor":
            k = field
        elif rounding == "ceil":
            k = field + (mant > 0).to(torch.int32)
        else:
            r = torch.empty(a.shape, dtype=torch.int64, device=a.device)
            r.random_(generator=generator)
            k = field + ((r & 0x7FFFFF).to(torch.int32) < mant).to(torch.int32)
    # biased exponent k in [0, 255]: 0 is 2**-127, 255 is NaN; float32 2**-127 is subnormal
    k = torch.where(a >= _INF_BITS, 255, k).clamp(0, 255)
    if rounding != "torch":
        k = torch.where((bits <= 0), 255, k)  # zero, negatives (and -NaN) -> NaN
    out = torch.where(k == 0, 0x400000, k << 23)  # 2**-127 as a float32 subnormal pattern
    out = torch.where(k == 255, 0x7FC00000, out)
    return out.view(torch.float32)


def mx_scale_exponent(amax: torch.Tensor, fmt: str | FloatFormat) -> torch.Tensor:
    """OCP MX shared exponent floor(log2(amax)) - emax(fmt), clamped to [-127, 127]; int32.

    amax is a float tensor of block maxima (absolute values). amax 0 gives -127 (the smallest
    scale, the block is all zeros), +inf gives 127, NaN gives 128 (e8m0's NaN, biased 0xFF).
    ``fmt`` is an element format name (FAST_FORMATS, e.g. "fp8_e4m3fn", "fp4_e2m1").
    """
    f = _fast_format(fmt)
    if not isinstance(amax, torch.Tensor) or not amax.is_floating_point():
        raise TypeError("amax: expected a floating-point tensor")
    a = amax.abs().float() if amax.dtype in (torch.float16, torch.bfloat16) else amax.abs()
    finite = torch.isfinite(a) & (a > 0)
    _, e = torch.frexp(torch.where(finite, a, torch.ones_like(a)))
    k = (e.to(torch.int32) - 1 - f.emax).clamp(-127, 127)  # frexp: a = mant * 2**e, mant in [.5,1)
    k = torch.where(a == 0, -127, k)
    k = torch.where(torch.isinf(a), 127, k)
    return torch.where(torch.isnan(a), 128, k).to(torch.int32)


# ---------------------------------------------------------------- benchmark


BENCH_CANDIDATES = ("torch_cast", "round_fast", "stochastic", "round_to")
"""Rows of `rounding_benchmark` per format: torch's cast round trip ``x.to(dtype).float()``,
`round_fast` nearest, `round_fast` stochastic, and the reference `formats.round_to`."""


def rounding_benchmark(n: int = 2**22, threads: int = 1, repeats: int = 5,
                       device: str = "cpu", seed: int = 0) -> pandas.DataFrame:
    """Time torch's cast, `round_fast` and `formats.round_to` per FAST_FORMATS entry, one run.

    Index (format, candidate) with candidates in BENCH_CANDIDATES (no torch_cast row where torch
    has no dtype); columns ``median_s``, ``iqr_over_median`` and ``ratio_to_torch_cast`` (NaN
    without a cast), like `bench.ratios`. The first three candidates are timed interleaved
    (`bench.interleaved`, ``repeats`` each); round_to, the slow reference, once. Data: n
    standard-normal float32 values. Timings: never print them in a checked cell.
    """
    import pandas as pd

    from precisionlab import bench

    if n < 1 or threads < 1:
        raise ValueError(f"n and threads: must be >= 1; got n={n}, threads={threads}")
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed)).to(device)
    g = torch.Generator(device=x.device).manual_seed(seed)
    parts = []
    for name in FAST_FORMATS:
        cands = {}
        dt = formats.FORMATS[name].torch_dtype
        if dt is not None:
            cands["torch_cast"] = lambda dt=dt: x.to(dt).float()
        cands["round_fast"] = lambda name=name: round_fast(x, name)
        cands["stochastic"] = lambda name=name: round_fast(x, name, "stochastic", g)
        cands = {k: bench.at_threads(fn, threads) for k, fn in cands.items()}
        times = bench.interleaved(cands, repeats=repeats, warmup=1, device=device)
        slow = bench.time_once(bench.at_threads(lambda name=name: formats.round_to(
            x, _fast_format(name)), threads), device)
        times = pd.concat([times, pd.DataFrame([{"candidate": "round_to", "repeat": 0,
                                                 "seconds": slow}])], ignore_index=True)
        table = bench.ratios(times, "round_fast")[["median_s", "iqr_over_median"]]
        cast = table["median_s"].get("torch_cast", math.nan)
        table["ratio_to_torch_cast"] = table["median_s"] / cast
        table.loc["round_to", "iqr_over_median"] = math.nan  # a single timing
        parts.append(table.assign(format=name))
    out = pd.concat(parts).rename_axis("candidate").reset_index()
    return out.set_index(["format", "candidate"])
