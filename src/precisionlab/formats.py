"""Number formats described by their bit layout, and a reference rounding that matches torch.

Every constant here is derived from the layout (exponent bits, mantissa bits, bias, special-value
convention), never read from ``torch.finfo``, so that comparing the two is a real check.
``round_to`` simulates a cast to any format in float64 arithmetic and agrees bit-for-bit with
torch's own ``x.to(dtype)`` for fp16, bf16, fp8_e4m3fn and fp8_e5m2 (see the tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:  # pragma: no cover
    import pandas

__all__ = [
    "FORMATS",
    "FloatFormat",
    "IntFormat",
    "classify",
    "finfo_table",
    "get_format",
    "representable_values",
    "round_to",
    "spacing",
    "summary_table",
]

Rounding = Literal["nearest", "stochastic"]


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format given by its bit layout; all constants derive from it.

    ``nan_inf="ieee"`` reserves the all-ones exponent for inf/NaN; ``"fn"`` (e4m3fn) has no inf
    and only the all-ones exponent with all-ones mantissa is NaN; ``"none"`` (the OCP MX element
    formats) has neither: every bit pattern is a number, the all-ones exponent a normal binade.
    """

    name: str
    exponent_bits: int
    mantissa_bits: int
    bias: int
    nan_inf: Literal["ieee", "fn", "none"]
    overflow: Literal["inf", "saturate"]
    torch_dtype: torch.dtype | None

    @property
    def bits(self) -> int:
        """Total storage bits: sign + exponent + explicit mantissa."""
        return 1 + self.exponent_bits + self.mantissa_bits

    @property
    def emax(self) -> int:
        """Largest unbiased exponent of a finite value."""
        top = 2**self.exponent_bits - 1  # all-ones exponent field
        return (top - 1 if self.nan_inf == "ieee" else top) - self.bias

    @property
    def emin(self) -> int:
        """Unbiased exponent of the smallest normal value (also the exponent of subnormals)."""
        return 1 - self.bias

    @property
    def max_finite(self) -> float:
        """Largest finite value (fn formats give the top all-ones mantissa to NaN)."""
        m = self.mantissa_bits
        top_mantissa = 2**m - 2 if self.nan_inf == "fn" else 2**m - 1
        return math.ldexp(2**m + top_mantissa, self.emax - m)

    @property
    def saturates_above(self) -> float:
        """The magnitude from which nearest rounding lands beyond max_finite: max_finite plus
        half the top binade's step (a scaled value above it saturates or overflows)."""
        return self.max_finite + math.ldexp(1.0, self.emax - self.mantissa_bits - 1)

    @property
    def min_normal(self) -> float:
        """Smallest positive normal value, 2**emin (torch.finfo's ``tiny``)."""
        return math.ldexp(1.0, self.emin)

    @property
    def min_subnormal(self) -> float:
        """Smallest positive subnormal value, 2**(emin - m): the bottom of gradual underflow."""
        return math.ldexp(1.0, self.emin - self.mantissa_bits)

    @property
    def eps(self) -> float:
        """Machine epsilon 2**-m: the gap between 1.0 and the next value."""
        return math.ldexp(1.0, -self.mantissa_bits)

    @property
    def unit_roundoff(self) -> float:
        """Unit roundoff eps/2: the relative error bound of round-to-nearest on normals."""
        return self.eps / 2

    @property
    def decimal_digits(self) -> float:
        """Decimal digits of precision, (m+1)*log10(2)."""
        return (self.mantissa_bits + 1) * math.log10(2)

    @property
    def resolution(self) -> float:
        """Approximate decimal resolution 10**-floor(-log10(eps)) (numpy/torch.finfo definition)."""
        return 10.0 ** -math.floor(-math.log10(self.eps))


@dataclass(frozen=True)
class IntFormat:
    """A two's-complement (or unsigned) integer format on the unit grid, used for quantization."""

    name: str
    bits: int
    signed: bool = True

    @property
    def min_value(self) -> int:
        """Smallest representable integer."""
        return -(2 ** (self.bits - 1)) if self.signed else 0

    @property
    def max_value(self) -> int:
        """Largest representable integer."""
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    @property
    def eps(self) -> float:
        """Grid step (always 1.0): the absolute spacing of an integer format."""
        return 1.0


FORMATS: dict[str, FloatFormat | IntFormat] = {
    "fp64": FloatFormat("fp64", 11, 52, 1023, "ieee", "inf", torch.float64),
    "fp32": FloatFormat("fp32", 8, 23, 127, "ieee", "inf", torch.float32),
    "tf32": FloatFormat("tf32", 8, 10, 127, "ieee", "inf", None),
    "fp16": FloatFormat("fp16", 5, 10, 15, "ieee", "inf", torch.float16),
    "bf16": FloatFormat("bf16", 8, 7, 127, "ieee", "inf", torch.bfloat16),
    "fp8_e4m3fn": FloatFormat("fp8_e4m3fn", 4, 3, 7, "fn", "saturate", torch.float8_e4m3fn),
    "fp8_e5m2": FloatFormat("fp8_e5m2", 5, 2, 15, "ieee", "inf", torch.float8_e5m2),
    # OCP MX v1.0 element formats: no inf or NaN, saturating; torch has no dtype to compute in
    "fp6_e2m3": FloatFormat("fp6_e2m3", 2, 3, 1, "none", "saturate", None),
    "fp6_e3m2": FloatFormat("fp6_e3m2", 3, 2, 3, "none", "saturate", None),
    "fp4_e2m1": FloatFormat("fp4_e2m1", 2, 1, 1, "none", "saturate", None),
    "int8": IntFormat("int8", 8),
    "int4": IntFormat("int4", 4),
}
"""Known formats by name, in presentation order (widest float first, then integers)."""

FLOAT_FORMATS: tuple[str, ...] = tuple(n for n, f in FORMATS.items() if isinstance(f, FloatFormat))
"""Names of the floating-point formats, in the same order."""


def get_format(fmt: str | FloatFormat | IntFormat) -> FloatFormat | IntFormat:
    """Resolve a format name (or pass a format object through); unknown names raise ValueError."""
    if isinstance(fmt, FloatFormat | IntFormat):
        return fmt
    if isinstance(fmt, str):
        try:
            return FORMATS[fmt]
        except KeyError:
            known = ", ".join(FORMATS)
            raise ValueError(f"fmt: unknown format {fmt!r}; known formats: {known}") from None
    raise TypeError(
        f"fmt: expected a format name or FloatFormat/IntFormat, got {type(fmt).__name__}"
    )


def _check_rounding(rounding: str) -> None:
    if rounding not in ("nearest", "stochastic"):
        raise ValueError(f"rounding: must be 'nearest' or 'stochastic', got {rounding!r}")


def _exp2i(k: torch.Tensor) -> torch.Tensor:
    """Exact float64 2**k for an integer tensor k in [-1074, 1023], built from the bit pattern."""
    k = k.to(torch.int64).clamp(-1074, 1023)
    low = k < -1022
    biased = torch.where(low, k + 64, k) + 1023
    val = (biased << 52).view(torch.float64)
    return torch.where(low, val * 2.0**-64, val)


def _quantum(a: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """Grid step of ``fmt`` at magnitudes ``a`` (finite, >= 0, float64): 2**(max(E, emin) - m)."""
    _, e = torch.frexp(a)  # a = mant * 2**e, mant in [0.5, 1), so the IEEE exponent is e - 1
    exponent = torch.where(a == 0, fmt.emin, e.to(torch.int64) - 1).clamp_min(fmt.emin)
    return _exp2i(exponent - fmt.mantissa_bits)


def _round_magnitude(
    a: torch.Tensor,
    fmt: FloatFormat | IntFormat,
    rounding: Rounding,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Round finite magnitudes ``a`` >= 0 (float64) onto the grid, exponent range unbounded."""
    q = torch.ones_like(a) if isinstance(fmt, IntFormat) else _quantum(a, fmt)
    scaled = a / q  # exact: division by a power of two, no underflow for these formats
    if rounding == "nearest":
        return torch.round(scaled) * q  # torch.round is round-half-to-even
    u = torch.rand(a.shape, generator=generator, dtype=torch.float64, device=a.device)
    low = torch.floor(scaled)
    frac = scaled - low  # exact; 0 for representable values, which therefore never move
    return (low + (u < frac).to(torch.float64)) * q


def _round64(
    x64: torch.Tensor,
    fmt: FloatFormat | IntFormat,
    rounding: Rounding = "nearest",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Round float64 values to ``fmt``; return (result, rounding without range limits), float64."""
    finite = torch.isfinite(x64)
    a = torch.where(finite, x64.abs(), torch.zeros_like(x64))
    mag = _round_magnitude(a, fmt, rounding, generator)
    if isinstance(fmt, IntFormat):
        signed = torch.copysign(mag, x64) + 0.0  # + 0.0 turns -0.0 into 0.0: ints have one zero
        out = signed.clamp(fmt.min_value, fmt.max_value)
        out = torch.where(finite, out, x64.clamp(fmt.min_value, fmt.max_value))
        return out, signed
    if fmt.overflow == "inf":
        mag_out = torch.where(mag > fmt.max_finite, torch.full_like(mag, math.inf), mag)
    else:
        mag_out = mag.clamp_max(fmt.max_finite)
    out = torch.copysign(mag_out, x64)
    if fmt.overflow == "inf":
        out = torch.where(finite, out, x64)  # +-inf and NaN pass through
    else:
        sat = torch.copysign(torch.full_like(x64, fmt.max_finite), x64)
        out = torch.where(finite, out, torch.where(torch.isnan(x64), x64, sat))
    return out, torch.copysign(mag, x64)


def round_to(
    x: torch.Tensor,
    fmt: str | FloatFormat | IntFormat,
    rounding: Rounding = "nearest",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Round a float32 tensor to the values of ``fmt`` and return float32 (a simulated cast).

    ``nearest`` is IEEE round-half-to-even with subnormals and signed zeros; it matches
    ``x.to(dtype).float()`` bit-for-bit (NaN payloads aside). Overflow follows the format:
    ``"inf"`` formats round past max_finite to +-inf (a tie at max + half ulp goes to inf);
    fp8_e4m3fn saturates, as measured on torch 2.13 CPU for small, >= 1M-element, scalar and
    non-contiguous tensors alike: every finite value with magnitude >= 464 (e.g. 464, 470, 480,
    1e6, 1e30) and also +-inf become +-448, while NaN stays NaN. int formats round half-to-even
    and saturate to [min_value, max_value] (+-inf saturates too; NaN stays NaN).
    ``stochastic`` picks one of the two neighbouring grid values with probability proportional to
    proximity (uniforms from ``generator``), so it is unbiased; grid values never move.
    """
    _check_rounding(rounding)
    f = get_format(fmt)
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"x: expected a float32 tensor, got {got}")
    if isinstance(f, FloatFormat) and f.mantissa_bits >= 23 and f.emin <= -126 <= 127 <= f.emax:
        return x.clone()  # fp32 and wider hold every float32 exactly
    out, _ = _round64(x.to(torch.float64), f, rounding, generator)
    return out.to(torch.float32)


def spacing(x: torch.Tensor, fmt: str | FloatFormat | IntFormat) -> torch.Tensor:
    """Float64 gap between adjacent values of ``fmt`` at |x| (ulp of its binade; inf past max).

    Below min_normal it is the subnormal spacing min_subnormal; NaN inputs give NaN.
    """
    f = get_format(fmt)
    x64 = x.to(torch.float64)
    a = x64.abs()
    finite_a = torch.where(torch.isfinite(a), a, torch.zeros_like(a))
    if isinstance(f, IntFormat):
        beyond = (x64 > f.max_value) | (x64 < f.min_value)
        gap = torch.ones_like(a)
    else:
        beyond = a > f.max_finite
        gap = _quantum(finite_a, f)
    gap = torch.where(beyond, torch.full_like(a, math.inf), gap)
    return torch.where(torch.isnan(a), a, gap)


def representable_values(fmt: str | FloatFormat | IntFormat) -> torch.Tensor:
    """Every finite value of ``fmt``, sorted ascending, float64 (one zero); built from the layout.

    Only for formats of at most 16 bits (fp16, bf16, fp8s, ints); wider ones raise ValueError.
    """
    f = get_format(fmt)
    if f.bits > 16:
        raise ValueError(f"fmt: {f.name} has {f.bits} bits; only formats of <= 16 bits are listed")
    if isinstance(f, IntFormat):
        return torch.arange(f.min_value, f.max_value + 1, dtype=torch.float64)
    m = f.mantissa_bits
    field_e = torch.arange(2**f.exponent_bits, dtype=torch.int64).repeat_interleave(2**m)
    field_m = torch.arange(2**m, dtype=torch.int64).repeat(2**f.exponent_bits)
    top = 2**f.exponent_bits - 1
    if f.nan_inf == "ieee":
        keep = field_e != top
    elif f.nan_inf == "fn":
        keep = ~((field_e == top) & (field_m == 2**m - 1))
    else:  # no inf/NaN encodings: every pattern is a value
        keep = torch.ones_like(field_e, dtype=torch.bool)
    field_e, field_m = field_e[keep], field_m[keep]
    normal = field_e > 0
    significand = torch.where(normal, field_m + 2**m, field_m).to(torch.float64)
    exponent = torch.where(normal, field_e - f.bias, torch.full_like(field_e, f.emin)) - m
    positive = significand * _exp2i(exponent)
    return torch.unique(torch.cat([-positive, positive]))  # sorted, single 0.0


def classify(
    x: torch.Tensor, fmt: str | FloatFormat | IntFormat, scale: float = 1.0
) -> dict[str, float]:
    """Where nonzero finite values x*scale land after nearest rounding to ``fmt``, as fractions.

    Keys: "flushed" (became zero), "subnormal", "normal", "overflow" (would round above
    max_finite: inf, or saturated for e4m3fn/ints). Fractions of the count of nonzero finite
    inputs (all NaN if there are none); x*scale is formed in float64, then rounded once.
    """
    f = get_format(fmt)
    x64 = x.detach().to(torch.float64).flatten()
    x64 = x64[torch.isfinite(x64) & (x64 != 0)] * scale
    n = x64.numel()
    if n == 0:
        return dict.fromkeys(("flushed", "subnormal", "normal", "overflow"), math.nan)
    out, unbounded = _round64(x64, f)
    if isinstance(f, FloatFormat):
        in_range = unbounded.abs() <= f.max_finite
    else:
        in_range = (unbounded >= f.min_value) & (unbounded <= f.max_value)
    overflow = ~in_range  # also catches x*scale overflowing float64 to inf
    flushed = ~overflow & (out == 0)
    if isinstance(f, FloatFormat):
        subnormal = ~overflow & ~flushed & (out.abs() < f.min_normal)
    else:
        subnormal = torch.zeros_like(flushed)
    normal = ~(overflow | flushed | subnormal)
    return {
        "flushed": int(flushed.sum()) / n,
        "subnormal": int(subnormal.sum()) / n,
        "normal": int(normal.sum()) / n,
        "overflow": int(overflow.sum()) / n,
    }


def summary_table() -> pandas.DataFrame:
    """One row per format (index=name) with its layout and derived constants, for the chapter.

    Integer formats: layout columns and relative-precision columns are NaN; max_finite is
    max_value, min_normal is 1 (smallest positive value) and eps is the grid step 1.
    """
    import pandas as pd

    rows = {}
    for name, f in FORMATS.items():
        if isinstance(f, FloatFormat):
            rows[name] = {
                "bits": f.bits,
                "exponent_bits": f.exponent_bits,
                "mantissa_bits": f.mantissa_bits,
                "bias": f.bias,
                "max_finite": f.max_finite,
                "min_normal": f.min_normal,
                "min_subnormal": f.min_subnormal,
                "eps": f.eps,
                "unit_roundoff": f.unit_roundoff,
                "decimal_digits": f.decimal_digits,
            }
        else:
            rows[name] = {
                "bits": f.bits,
                "exponent_bits": math.nan,
                "mantissa_bits": math.nan,
                "bias": math.nan,
                "max_finite": float(f.max_value),
                "min_normal": 1.0,
                "min_subnormal": math.nan,
                "eps": f.eps,
                "unit_roundoff": math.nan,
                "decimal_digits": math.nan,
            }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "name"
    return table


_BIT_VIEW_INT = {64: torch.int64, 32: torch.int32, 16: torch.int16, 8: torch.uint8}


def finfo_table() -> pandas.DataFrame:
    """Derived constants next to torch.finfo's for each float format with a torch dtype.

    Columns ``<q>_derived``, ``<q>_finfo``, ``<q>_equal`` for q in bits, eps, max, min,
    smallest_normal, resolution; ``min_subnormal_*`` compares with bit pattern 0x..01 viewed as
    the dtype; ``all_equal`` is the conjunction. Exact equality, since both are powers of two.
    """
    import pandas as pd

    rows = {}
    for name, f in FORMATS.items():
        if not isinstance(f, FloatFormat) or f.torch_dtype is None:
            continue
        fi = torch.finfo(f.torch_dtype)
        pairs = {
            "bits": (f.bits, fi.bits),
            "eps": (f.eps, fi.eps),
            "max": (f.max_finite, fi.max),
            "min": (-f.max_finite, fi.min),
            "smallest_normal": (f.min_normal, fi.smallest_normal),
            "resolution": (f.resolution, fi.resolution),
        }
        one = torch.tensor([1], dtype=_BIT_VIEW_INT[f.bits]).view(f.torch_dtype)
        pairs["min_subnormal"] = (f.min_subnormal, one.to(torch.float64).item())
        row: dict[str, object] = {}
        for q, (derived, ref) in pairs.items():
            row[f"{q}_derived"] = derived
            row[f"{q}_finfo" if q != "min_subnormal" else f"{q}_bitpattern"] = ref
            row[f"{q}_equal"] = bool(derived == ref)
        row["all_equal"] = all(row[f"{q}_equal"] for q in pairs)
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "name"
    return table


def adam_underflow(fmt: str, beta1: float = 0.9, beta2: float = 0.999,
                   eps: float = 1e-8) -> dict[str, float | bool]:
    """Where pure-`fmt` Adam's state underflows, derived from the format's smallest subnormal s.

    Round-to-nearest-even sends a value to 0 when its magnitude is at most s/2. In the first
    step v = (1 - beta2) g^2 and m = (1 - beta1) g, so v is 0 for |g| <= sqrt(s / 2 / (1 - beta2))
    and m for |g| <= s / 2 / (1 - beta1); with v = 0 and eps rounded to 0 (eps <= s/2) the update
    m / (sqrt(v) + eps) is m/0 (inf) or 0/0 (NaN). A v of 0 stays 0 while the gradient stays
    that small, since beta2 * 0 + (1 - beta2) g^2 rounds to 0 again."""
    s = FORMATS[fmt].min_subnormal
    return {"format": fmt, "min_subnormal": s,
            "v_zero_below": math.sqrt(s / 2 / (1 - beta2)),
            "m_zero_below": s / 2 / (1 - beta1),
            "eps_is_zero": eps <= s / 2}
