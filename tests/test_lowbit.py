"""precisionlab.lowbit: fast rounding bit-exact against formats.round_to, torch casts, ml_dtypes."""

import math

import ml_dtypes
import numpy as np
import pytest
import torch

from precisionlab import formats
from precisionlab.formats import get_format, representable_values
from precisionlab.lowbit import (
    E8M0_ROUNDINGS,
    FAST_FORMATS,
    _round_bits,
    mx_scale_exponent,
    round_e8m0,
    round_fast,
    rounding_benchmark,
)

TORCH_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16,
                "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
ML_DTYPES = {"fp6_e2m3": ml_dtypes.float6_e2m3fn, "fp6_e3m2": ml_dtypes.float6_e3m2fn,
             "fp4_e2m1": ml_dtypes.float4_e2m1fn}
INF, NAN = math.inf, math.nan


def f32(bits: torch.Tensor) -> torch.Tensor:
    """float32 values with the given 32-bit patterns (int64 in, wrapped to int32)."""
    bits = bits.to(torch.int64) & 0xFFFFFFFF
    return torch.where(bits >= 2**31, bits - 2**32, bits).to(torch.int32).view(torch.float32)


def assert_same(got: torch.Tensor, want: torch.Tensor, x: torch.Tensor) -> None:
    """Bit-for-bit equal float32 tensors; NaNs only need to be in the same places."""
    assert got.dtype == want.dtype == torch.float32 and got.shape == want.shape
    gn, wn = torch.isnan(got), torch.isnan(want)
    bad = (gn != wn) | (~gn & ~wn & (got.view(torch.int32) != want.view(torch.int32)))
    if bad.any():
        i = bad.nonzero().flatten()[:5]
        examples = list(zip(x[i].tolist(), got[i].tolist(), want[i].tolist(), strict=True))
        raise AssertionError(f"{int(bad.sum())} differ; (x, got, want): {examples}")


def ml_cast(x: torch.Tensor, dtype) -> torch.Tensor:
    with np.errstate(invalid="ignore", over="ignore"):
        return torch.from_numpy(np.asarray(x.numpy(), dtype=dtype).astype(np.float32))


@pytest.fixture(scope="module")
def grid() -> torch.Tensor:
    """Every bf16-neighbourhood pattern (2**16 high halves) with low-bit offsets that hit ties,
    half-ulps +-1 of every narrower format, plus random patterns: both signs, subnormals,
    zeros, inf and NaN included."""
    hi = torch.arange(2**16, dtype=torch.int64) << 16
    offsets = [0, 1, 2, -1, -2, 0x7FFF, 0x8000, 0x8001, 0xFFF, 0x1000, 0x1001, 0x7FFFF, 0x80000,
               0x80001, 0xFFFFF, 0x100000, 0x100001, 0x3FFFFF, 0x400000, 0x400001, 0x1FFFFF,
               0x200000, 0x200001]
    rand = torch.randint(0, 2**32, (2**17,), generator=torch.Generator().manual_seed(0))
    return f32(torch.cat([hi + d for d in offsets] + [rand]))


# ---------------------------------------------------------------- nearest: bit-exact


@pytest.mark.parametrize("name", FAST_FORMATS)
def test_nearest_matches_reference_round_to(name, grid):
    want = formats.round_to(grid, get_format(name))
    assert_same(round_fast(grid, name), want, grid)
    # the integer kernel that stochastic rounding uses rounds to nearest exactly too
    assert_same(_round_bits(grid, get_format(name), "nearest", None), want, grid)


@pytest.mark.parametrize("name", list(TORCH_DTYPES))
def test_nearest_matches_torch_cast(name, grid):
    assert_same(round_fast(grid, name), grid.to(TORCH_DTYPES[name]).float(), grid)


@pytest.mark.parametrize("name", list(ML_DTYPES))
def test_element_formats_match_ml_dtypes_except_nan(name, grid):
    """ml_dtypes has no NaN in these formats and turns NaN into +-0; we keep NaN (as round_to)."""
    got, want = round_fast(grid, name), ml_cast(grid, ML_DTYPES[name])
    nan = torch.isnan(grid)
    assert_same(got[~nan], want[~nan], grid[~nan])
    assert torch.isnan(got[nan]).all() and (want[nan] == 0).all()


@pytest.mark.parametrize(
    "name, inputs, outputs",
    [
        ("fp4_e2m1", [0.25, 0.75, 2.5, 3.5, 5.0, 5.5, 7.0, 1e30, INF, -INF, -0.0, -0.2, 2.0**-149],
         [0.0, 1.0, 2.0, 4.0, 4.0, 6.0, 6.0, 6.0, 6.0, -6.0, -0.0, -0.0, 0.0]),
        ("fp6_e2m3", [0.0625, 0.1875, 7.75, 8.0, INF, 1.0625, 1.1875],
         [0.0, 0.25, 7.5, 7.5, 7.5, 1.0, 1.25]),
        ("fp6_e3m2", [2.0**-5, 3 * 2.0**-5, 30.0, 32.0, -INF, 0.21875 + 2.0**-20],
         [0.0, 0.125, 28.0, 28.0, -28.0, 0.25]),
        ("fp8_e4m3fn", [464.0, 470.0, 480.0, 1e6, INF, -INF, 2.0**-10, 3 * 2.0**-10],
         [448.0, 448.0, 448.0, 448.0, 448.0, -448.0, 0.0, 2.0**-8]),
        ("fp8_e5m2", [57344.0, 61440.0, 60000.0, INF], [57344.0, INF, 57344.0, INF]),
        ("fp16", [65519.0, 65520.0, 2.0**-25, 3 * 2.0**-26, -INF], [65504.0, INF, 0.0, 2.0**-24,
                                                                      -INF]),
        ("bf16", [2.0**-134, 3 * 2.0**-134, 1 + 2.0**-8, 1 + 3 * 2.0**-8],
         [0.0, 2.0**-132, 1.0, 1 + 2.0**-6]),
    ],
)
def test_ties_subnormals_and_overflow_by_hand(name, inputs, outputs):
    got = round_fast(torch.tensor(inputs, dtype=torch.float32), name)
    assert got.tolist() == outputs
    assert torch.signbit(got).tolist() == [math.copysign(1, v) < 0 for v in outputs]


def test_a_custom_layout_rounds_like_the_reference():
    """A FloatFormat outside FAST_FORMATS (here e3m4, ieee-style) takes the bit-pattern path."""
    f = formats.FloatFormat("e3m4", 3, 4, 3, "ieee", "inf", None)
    x = torch.linspace(-20, 20, 40_001)
    assert_same(round_fast(x, f), formats.round_to(x, f), x)


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_gradient_is_straight_through(rounding):
    for name in FAST_FORMATS:
        x = torch.tensor([0.3, -2.7, 1000.0, 5.0], requires_grad=True)
        y = round_fast(x, name, rounding, torch.Generator().manual_seed(0))
        (y * torch.arange(1.0, 5.0)).sum().backward()
        assert x.grad.tolist() == [1.0, 2.0, 3.0, 4.0]
        assert_same(y.detach(), round_fast(x.detach(), name, rounding,
                                           torch.Generator().manual_seed(0)), x.detach())


def test_nan_stays_nan_and_shape_is_kept():
    x = torch.tensor([[NAN, 1.3], [-NAN, 2.6]]).t()  # non-contiguous
    for name in FAST_FORMATS:
        for rounding in ("nearest", "stochastic"):
            got = round_fast(x, name, rounding, torch.Generator().manual_seed(0))
            assert got.shape == (2, 2) and got.dtype == torch.float32
            assert torch.isnan(got[0]).all() and not torch.isnan(got[1]).any()


# ---------------------------------------------------------------- the MX element formats


@pytest.mark.parametrize("name", list(ML_DTYPES))
def test_element_format_constants_match_ml_dtypes_finfo(name):
    f, fi = formats.FORMATS[name], ml_dtypes.finfo(ML_DTYPES[name])
    assert f.bits == fi.bits
    assert (f.max_finite, f.min_normal, f.min_subnormal, f.eps) == (
        float(fi.max), float(fi.tiny), float(fi.smallest_subnormal), float(fi.eps))
    assert {"fp6_e2m3": 7.5, "fp6_e3m2": 28.0, "fp4_e2m1": 6.0}[name] == f.max_finite


@pytest.mark.parametrize("name", list(ML_DTYPES))
def test_representable_values_are_every_ml_dtypes_pattern(name):
    f = formats.FORMATS[name]
    every = np.arange(2**f.bits, dtype=np.uint8).view(ML_DTYPES[name]).astype(np.float64)
    vals = representable_values(name)
    assert torch.equal(vals, torch.unique(torch.from_numpy(every)))
    assert len(vals) == 2**f.bits - 1  # +-0 collapse into one zero
    assert_same(round_fast(vals.float(), name), vals.float(), vals.float())


def test_formats_classify_works_on_element_formats():
    x = torch.tensor([0.1, 0.3, 0.9, 2.0, 100.0])  # fp4: flushed, subnormal (0.5), 1, 2, over
    c = formats.classify(x, formats.FORMATS["fp4_e2m1"])
    assert c == {"flushed": 0.2, "subnormal": 0.2, "normal": 0.4, "overflow": 0.2}


# ---------------------------------------------------------------- stochastic rounding


def neighbours(name: str, v: float) -> tuple[float, float]:
    vals = representable_values(name).tolist()
    lo = max(u for u in vals if u <= v)
    hi = min(u for u in vals if u >= v)
    return lo, hi


@pytest.mark.parametrize(
    "name, value",
    [
        ("fp16", 1.0 + 2.0**-10 / 3), ("fp16", 2.0**-24 * 3.3), ("fp16", 2.0**-30),
        ("bf16", 1.0 + 0.7 * 2.0**-7), ("bf16", 2.0**-133 * 2.25),
        ("fp8_e4m3fn", 0.3), ("fp8_e4m3fn", 2.0**-9 * 1.7), ("fp8_e5m2", 1.1),
        ("fp8_e5m2", 2.0**-16 * 1.4), ("fp6_e2m3", 3.3), ("fp6_e2m3", 0.06),
        ("fp6_e3m2", 13.0), ("fp6_e3m2", 0.01), ("fp4_e2m1", 0.1), ("fp4_e2m1", 5.5),
        ("fp4_e2m1", -2.7),
    ],
)
def test_stochastic_is_unbiased_between_the_two_neighbours(name, value):
    x = torch.tensor(value, dtype=torch.float32)
    v = x.item()
    lo, hi = neighbours(name, v)
    assert lo < v < hi
    n = 100_000
    draws = round_fast(x.expand(n).contiguous(), name, "stochastic",
                       torch.Generator().manual_seed(11)).double()
    assert set(torch.unique(draws).tolist()) <= {lo, hi}
    p = (v - lo) / (hi - lo)
    se = math.sqrt(p * (1 - p) / n)
    assert abs((draws == hi).double().mean().item() - p) < 5 * se  # P(up) is the fraction
    assert abs(draws.mean().item() - v) < 5 * se * (hi - lo)  # so the mean is x


@pytest.mark.parametrize(
    "name, big, small, n_big",
    [
        ("fp4_e2m1", 0.1, 0.375 * 2.0**-9, 50_000),  # many below q: dense path, 2nd draws 63 bits
        ("fp16", 1.3, 0.75 * 2.0**-24, 97_000),  # few below q (3 %): each draws 63 fresh bits
        ("fp16", 2.0**-26, 0.75 * 2.0**-35, 50_000),  # shift 24..37: both sub-paths together
    ],
)
def test_stochastic_below_the_smallest_subnormal_is_unbiased(name, big, small, n_big):
    """Below q = min_subnormal the result is 0 or q with P(q) = |x| / q, whatever the mixture."""
    q = get_format(name).min_subnormal
    n = 100_000
    x = torch.tensor([big] * n_big + [small] * (n - n_big), dtype=torch.float32)
    got = round_fast(x, name, "stochastic", torch.Generator().manual_seed(21)).double()
    for part, v in ((got[:n_big], big), (got[n_big:], small)):
        lo, hi = neighbours(name, v)
        p = (v - lo) / (hi - lo)
        assert set(torch.unique(part).tolist()) <= {lo, hi}
        se = math.sqrt(p * (1 - p) / part.numel())
        assert abs((part == hi).double().mean().item() - p) < 5 * se + 1e-12
    assert hi == q or small >= q


@pytest.mark.parametrize("name", FAST_FORMATS)
def test_stochastic_never_moves_representable_values(name):
    vals = representable_values(name).float()
    got = round_fast(vals, name, "stochastic", torch.Generator().manual_seed(0))
    assert_same(got, vals, vals)


@pytest.mark.parametrize("name", FAST_FORMATS)
def test_stochastic_lands_on_a_neighbour_of_nearest(name, grid):
    """Every result is round-down or round-up of x (i.e. one of the two neighbours)."""
    f = get_format(name)
    x = grid[torch.isfinite(grid)][::7]
    got = round_fast(x, name, "stochastic", torch.Generator().manual_seed(1)).double()
    vals = representable_values(name)
    if f.overflow == "inf":
        vals = torch.cat([torch.tensor([-INF]), vals, torch.tensor([INF])])
    xc = x.double().clamp(vals[0].item(), vals[-1].item())
    idx = torch.searchsorted(vals, xc).clamp(1, len(vals) - 1)
    lo, hi = vals[idx - 1], vals[idx]
    exact = vals[torch.searchsorted(vals, xc).clamp_max(len(vals) - 1)] == xc
    ok = torch.where(exact, got == xc, (got == lo) | (got == hi))
    saturated = (got.abs() == f.max_finite) & (x.double().abs() >= f.max_finite)
    ok |= (f.overflow == "saturate") & saturated
    assert ok.all(), x[~ok][:5].tolist()


def test_stochastic_specials_overflow_and_reproducibility():
    specials = torch.tensor([NAN, INF, -INF, 0.0, -0.0, 60000.0, -1e-30] * 500)
    s = round_fast(specials, "fp8_e5m2", "stochastic", torch.Generator().manual_seed(1))
    s = s.view(500, 7)
    assert torch.isnan(s[:, 0]).all() and (s[:, 1] == INF).all() and (s[:, 2] == -INF).all()
    assert (s[:, 3] == 0).all() and not torch.signbit(s[:, 3]).any()
    assert torch.signbit(s[:, 4]).all() and torch.signbit(s[:, 6]).all()
    assert set(s[:, 5].tolist()) == {57344.0, INF}  # overflow as nearest would
    assert (s[:, 6] == 0).all()
    sat = round_fast(torch.tensor([6.5, 1e9, INF] * 300), "fp4_e2m1", "stochastic")
    assert set(sat.tolist()) == {6.0}
    x = torch.randn(5000)
    a = round_fast(x, "fp4_e2m1", "stochastic", torch.Generator().manual_seed(3))
    b = round_fast(x, "fp4_e2m1", "stochastic", torch.Generator().manual_seed(3))
    c = round_fast(x, "fp4_e2m1", "stochastic", torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


# ---------------------------------------------------------------- e8m0


@pytest.fixture(scope="module")
def e8m0_grid() -> torch.Tensor:
    rand = torch.randint(0, 2**32, (2**18,), generator=torch.Generator().manual_seed(2))
    fields = torch.tensor([0, 1, 2, 126, 127, 128, 253, 254, 255], dtype=torch.int64)
    mants = torch.tensor([0, 1, 2**21, 2**22 - 1, 2**22, 2**22 + 1, 3 * 2**21, 2**23 - 1])
    edge = ((fields[:, None] << 23) | mants[None, :]).flatten()
    dense = (torch.arange(0, 2**23, 977) | (127 << 23))
    both = torch.cat([rand, edge, dense])
    return f32(torch.cat([both, both | 2**31]))


def test_e8m0_torch_convention_matches_torch_cast(e8m0_grid):
    x = e8m0_grid
    assert_same(round_e8m0(x, "torch"), x.to(torch.float8_e8m0fnu).float(), x)


def test_e8m0_nearest_matches_ml_dtypes(e8m0_grid):
    x = e8m0_grid
    assert_same(round_e8m0(x, "nearest"), ml_cast(x, ml_dtypes.float8_e8m0fnu), x)


def test_e8m0_conventions_by_hand():
    x = torch.tensor([1.5, 1.49, 3.0, 0.0, -0.0, -3.0, INF, NAN, 2.0**-127, 2.0**-140,
                      1.5 * 2.0**127, 1.4 * 2.0**127])
    near = round_e8m0(x, "nearest").tolist()
    tor = round_e8m0(x, "torch").tolist()
    assert near[:3] == tor[:3] == [2.0, 1.0, 4.0]  # ties (1.5 * 2**k) go up in both
    assert all(math.isnan(v) for v in near[3:8])  # zero, negative, inf, NaN -> NaN
    assert tor[3:6] == [2.0**-127, 2.0**-127, 4.0]  # torch ignores the sign
    assert near[8:10] == tor[8:10] == [2.0**-127, 2.0**-127]  # no zero: the bottom saturates
    assert math.isnan(near[10]) and math.isnan(tor[10]) and near[11] == 2.0**127


def test_e8m0_floor_ceil_and_powers_of_two_fixed():
    k = torch.arange(-127, 128, dtype=torch.float64)
    p2 = torch.pow(2.0, k).float()
    for rounding in E8M0_ROUNDINGS:
        assert_same(round_e8m0(p2, rounding, torch.Generator().manual_seed(0)), p2, p2)
    x = torch.rand(10_000, generator=torch.Generator().manual_seed(5)) * 1000 + 1e-3
    lg = torch.log2(x.double())
    assert torch.equal(round_e8m0(x, "floor").double(), torch.pow(2.0, torch.floor(lg)))
    assert torch.equal(round_e8m0(x, "ceil").double(), torch.pow(2.0, torch.ceil(lg)))


@pytest.mark.parametrize("value", [1.3, 3 * 2.0**-100, 1.9 * 2.0**120])
def test_e8m0_stochastic_is_unbiased(value):
    n = 100_000
    x = torch.full((n,), value, dtype=torch.float32)
    v = x[0].item()
    lo = 2.0 ** math.floor(math.log2(v))
    draws = round_e8m0(x, "stochastic", torch.Generator().manual_seed(9)).double()
    assert set(torch.unique(draws).tolist()) == {lo, 2 * lo}
    p = (v - lo) / lo
    assert abs((draws == 2 * lo).double().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_mx_scale_exponent_is_floor_log2_minus_emax():
    u = torch.rand(5000, generator=torch.Generator().manual_seed(6)).double()
    amax = (u * 2.0**40 + 2.0**-30).float()
    for name, emax in [("fp8_e4m3fn", 8), ("fp8_e5m2", 15), ("fp6_e2m3", 2), ("fp6_e3m2", 4),
                       ("fp4_e2m1", 2)]:
        got = mx_scale_exponent(amax, name)
        want = torch.tensor([math.floor(math.log2(a)) - emax for a in amax.tolist()])
        assert got.dtype == torch.int32 and torch.equal(got.long(), want)
    edge = torch.tensor([0.0, INF, NAN, 2.0**-149, 2.0**127, 6.0, 1e-45])
    assert mx_scale_exponent(edge, "fp4_e2m1").tolist() == [-127, 127, 128, -127, 125, 0, -127]
    assert mx_scale_exponent(torch.tensor([2.0**-120]), "fp8_e4m3fn").tolist() == [-127]
    half = torch.tensor([3.0, 0.0], dtype=torch.bfloat16)
    assert mx_scale_exponent(half, "fp4_e2m1").tolist() == [-1, -127]


# ---------------------------------------------------------------- errors and benchmark


def test_errors_name_the_parameter():
    x = torch.ones(3)
    with pytest.raises(ValueError, match=r"fmt: unknown format 'fp3'.*fp4_e2m1"):
        round_fast(x, "fp3")
    with pytest.raises(TypeError, match="x: expected a float32 tensor"):
        round_fast(x.double(), "fp16")
    with pytest.raises(TypeError, match="x: expected a float32 tensor"):
        round_e8m0([1.0])
    with pytest.raises(ValueError, match="rounding: must be one of"):
        round_fast(x, "fp16", "up")
    with pytest.raises(ValueError, match="rounding: must be one of.*torch"):
        round_e8m0(x, "even")
    with pytest.raises(ValueError, match="fmt: unknown format"):
        mx_scale_exponent(x, "int8")
    with pytest.raises(TypeError, match="amax: expected a floating-point tensor"):
        mx_scale_exponent(torch.ones(2, dtype=torch.int32), "fp4_e2m1")
    with pytest.raises(ValueError, match="threads"):
        rounding_benchmark(n=16, threads=0)


def test_rounding_benchmark_table():
    t = rounding_benchmark(n=2**12, threads=1, repeats=5)
    assert list(t.columns) == ["median_s", "iqr_over_median", "ratio_to_torch_cast"]
    assert list(t.index.get_level_values("format").unique()) == list(FAST_FORMATS)
    for name in FAST_FORMATS:
        rows = list(t.loc[name].index)
        assert rows == ([] if name in ML_DTYPES else ["torch_cast"]) + [
            "round_fast", "stochastic", "round_to"]
    assert (t["median_s"] > 0).all()
    assert (t.loc[(list(TORCH_DTYPES), "torch_cast"), "ratio_to_torch_cast"] == 1).all()
    assert t.loc[(list(ML_DTYPES), "round_fast"), "ratio_to_torch_cast"].isna().all()
    assert t.loc[("fp16", "round_fast"), "ratio_to_torch_cast"] > 0
