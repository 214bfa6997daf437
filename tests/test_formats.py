"""Behavioural tests for precisionlab.formats: bit-exact agreement with torch casts and finfo."""

import math

import pytest
import torch

from precisionlab.formats import (
    FORMATS,
    FloatFormat,
    IntFormat,
    classify,
    finfo_table,
    get_format,
    representable_values,
    round_to,
    spacing,
    summary_table,
)

TORCH_FLOAT_FORMATS = ["fp16", "bf16", "fp8_e4m3fn", "fp8_e5m2"]
FINFO_FORMATS = ["fp64", "fp32", "fp16", "bf16", "fp8_e4m3fn", "fp8_e5m2"]
INF = math.inf
NAN = math.nan


# ---------------------------------------------------------------- helpers


def f32_from_bits(bits: torch.Tensor) -> torch.Tensor:
    """float32 tensor whose bit patterns are the given unsigned 32-bit ints (held in int64)."""
    bits = bits.to(torch.int64)
    signed = torch.where(bits >= 2**31, bits - 2**32, bits)
    return signed.to(torch.int32).view(torch.float32)


def bits_of(x: torch.Tensor) -> torch.Tensor:
    return x.view(torch.int32).to(torch.int64) & 0xFFFFFFFF


def assert_same_floats(got: torch.Tensor, want: torch.Tensor, x: torch.Tensor) -> None:
    """Bit-for-bit equality of float32 tensors; NaNs only have to be in the same places."""
    assert got.dtype == want.dtype == torch.float32
    assert got.shape == want.shape
    got_nan, want_nan = torch.isnan(got), torch.isnan(want)
    bad = (got_nan != want_nan) | (~got_nan & ~want_nan & (bits_of(got) != bits_of(want)))
    if bad.any():
        idx = bad.nonzero().flatten()[:5]
        examples = [
            (f"{x[i].item():.9g}", f"{got[i].item():.9g}", f"{want[i].item():.9g}") for i in idx
        ]
        raise AssertionError(f"{int(bad.sum())} of {x.numel()} differ; (x, got, want): {examples}")


def torch_cast(x: torch.Tensor, name: str) -> torch.Tensor:
    return x.to(FORMATS[name].torch_dtype).float()


@pytest.fixture(scope="module")
def dense_sweep() -> torch.Tensor:
    """Every upper-16-bit pattern (all exponents, signs, NaN/inf) times a set of low halves."""
    lows = [0x0000, 0x0001, 0x0FFF, 0x1000, 0x1001, 0x7FFF, 0x8000, 0x8001, 0xFFFF]
    g = torch.Generator().manual_seed(20240611)
    lows += torch.randint(0, 2**16, (5,), generator=g).tolist()
    hi = torch.arange(2**16, dtype=torch.int64)
    lo = torch.tensor(lows, dtype=torch.int64)
    return f32_from_bits((hi[:, None] << 16 | lo[None, :]).flatten())


def tf32_reference(x: torch.Tensor) -> torch.Tensor:
    """Independent tf32 rounding: round-half-to-even of the low 13 bits of the float32 pattern."""
    b = bits_of(x)
    low = b & 0x1FFF
    kept = b >> 13
    up = (low > 0x1000) | ((low == 0x1000) & ((kept & 1) == 1))
    out = f32_from_bits((kept + up.to(torch.int64)) << 13)  # a carry out of the top exponent = inf
    return torch.where(torch.isfinite(x), out, x)


def neighbours(lo_hi_of: torch.Tensor, x: float) -> tuple[float, float]:
    """The two adjacent values of a sorted grid enclosing x."""
    i = int(torch.searchsorted(lo_hi_of, torch.tensor([x], dtype=torch.float64)))
    return lo_hi_of[i - 1].item(), lo_hi_of[i].item()


# ---------------------------------------------------------------- 1. bit-exact vs torch casts


@pytest.mark.parametrize("name", TORCH_FLOAT_FORMATS)
def test_dense_sweep_matches_torch_cast(name, dense_sweep):
    assert_same_floats(round_to(dense_sweep, name), torch_cast(dense_sweep, name), dense_sweep)


@pytest.mark.parametrize("name", TORCH_FLOAT_FORMATS)
def test_values_midpoints_and_their_neighbours_match_torch_cast(name):
    fmt = FORMATS[name]
    vals = representable_values(name)
    pos = vals[vals >= 0]
    past_max = pos[-1:] + fmt.eps * 2.0**fmt.emax  # max + one ulp: its midpoint is the tie
    grid = torch.cat([pos, past_max])
    mids = (grid[1:] + grid[:-1]) / 2
    mids = torch.cat([mids, -mids])
    mids32 = mids.float()
    assert torch.equal(mids32.double(), mids)  # every midpoint is an exact float32 tie
    x = torch.cat(
        [
            vals.float(),
            mids32,
            torch.nextafter(mids32, torch.tensor(INF)),
            torch.nextafter(mids32, torch.tensor(-INF)),
        ]
    )
    assert_same_floats(round_to(x, name), torch_cast(x, name), x)


@pytest.mark.parametrize("name", TORCH_FLOAT_FORMATS)
def test_edge_cases_match_torch_cast(name):
    fmt = FORMATS[name]
    sub, tiny, big = fmt.min_subnormal, fmt.min_normal, fmt.max_finite
    half_ulp_at_max = fmt.eps * 2.0**fmt.emax / 2

    def f32(v: float) -> torch.Tensor:
        return torch.tensor([v], dtype=torch.float32)

    def up(v: float) -> float:
        return torch.nextafter(f32(v), f32(INF)).item()

    def down(v: float) -> float:
        return torch.nextafter(f32(v), f32(-INF)).item()

    cases = [
        0.0,
        sub,
        sub / 2,
        up(sub / 2),
        down(sub / 2),
        1.5 * sub,
        tiny,
        up(tiny),
        down(tiny),
        big,
        down(big),
        up(big),
        big + half_ulp_at_max,
        down(big + half_ulp_at_max),
        up(big + half_ulp_at_max),
        449.0,
        464.0,
        480.0,
        1e30,
        INF,
    ]
    x = torch.tensor(cases + [-c for c in cases] + [NAN], dtype=torch.float32)
    got = round_to(x, name)
    assert_same_floats(got, torch_cast(x, name), x)
    assert torch.signbit(round_to(torch.tensor([-sub / 4]), name)).item()  # -tiny -> -0.0


def test_e4m3fn_saturates_like_torch_including_inf():
    x = torch.tensor([449.0, 464.0, 470.0, 480.0, 1e6, 1e30, INF, -480.0, -INF, NAN])
    expected = [448.0] * 7 + [-448.0, -448.0]
    got = round_to(x, "fp8_e4m3fn")
    assert got[:-1].tolist() == expected
    assert torch.isnan(got[-1])
    big = x.repeat(150_000)  # >= 1M elements: torch's vectorised path must agree too
    assert_same_floats(round_to(big, "fp8_e4m3fn"), torch_cast(big, "fp8_e4m3fn"), big)


def test_e5m2_and_fp16_overflow_to_inf():
    assert round_to(torch.tensor([61440.0, 61439.0]), "fp8_e5m2").tolist() == [INF, 57344.0]
    assert round_to(torch.tensor([65520.0, -65519.0]), "fp16").tolist() == [INF, -65504.0]


@pytest.mark.parametrize("name", ["fp32", "fp64"])
def test_wide_formats_are_identity_on_float32(name, dense_sweep):
    assert_same_floats(round_to(dense_sweep, name), dense_sweep, dense_sweep)


def test_output_keeps_shape_and_dtype():
    x = torch.randn(3, 4, 5)
    y = round_to(x, "bf16")
    assert y.shape == x.shape and y.dtype == torch.float32


# ---------------------------------------------------------------- 2. tf32


def test_tf32_matches_bit_trick_reference(dense_sweep):
    assert_same_floats(round_to(dense_sweep, "tf32"), tf32_reference(dense_sweep), dense_sweep)


def test_tf32_overflow_and_ties():
    fmt = FORMATS["tf32"]
    tie_at_max = 2.0**127 * (2 - 2.0**-11)  # max + half ulp: ties to even = the next binade
    x = torch.tensor([fmt.max_finite, tie_at_max, 3.4028235e38, 1.0 + 2.0**-11, 1 + 3 * 2.0**-11])
    want = [fmt.max_finite, INF, INF, 1.0, 1.0 + 2 * 2.0**-10]
    assert round_to(x, "tf32").tolist() == want
    assert tf32_reference(x).tolist() == want


# ---------------------------------------------------------------- 3. derived constants


@pytest.mark.parametrize("name", FINFO_FORMATS)
def test_derived_constants_equal_finfo(name):
    fmt = FORMATS[name]
    fi = torch.finfo(fmt.torch_dtype)
    assert fmt.bits == fi.bits
    assert fmt.eps == fi.eps
    assert fmt.max_finite == fi.max
    assert fmt.min_normal == fi.smallest_normal == fi.tiny
    assert fmt.resolution == fi.resolution
    bit_int = {64: torch.int64, 32: torch.int32, 16: torch.int16, 8: torch.uint8}[fmt.bits]
    smallest = torch.tensor([1], dtype=bit_int).view(fmt.torch_dtype).double().item()
    assert fmt.min_subnormal == smallest
    assert fmt.unit_roundoff == fmt.eps / 2


def test_finfo_table_all_equal():
    table = finfo_table()
    assert list(table.index) == FINFO_FORMATS
    assert table["all_equal"].all()
    assert table.loc["fp8_e4m3fn", "max_derived"] == 448.0


def test_known_constants():
    assert FORMATS["tf32"].bits == 19
    assert FORMATS["tf32"].max_finite == 2.0**127 * (2 - 2.0**-10)
    assert FORMATS["fp8_e5m2"].max_finite == 57344.0
    assert FORMATS["fp8_e4m3fn"].min_subnormal == 2.0**-9
    assert FORMATS["fp16"].decimal_digits == pytest.approx(11 * math.log10(2))


def test_summary_table_rows_and_ints():
    table = summary_table()
    assert list(table.index) == list(FORMATS)
    for col in [
        "exponent_bits",
        "mantissa_bits",
        "bias",
        "max_finite",
        "min_normal",
        "min_subnormal",
        "eps",
        "unit_roundoff",
        "decimal_digits",
    ]:
        assert col in table.columns
    assert table.loc["int8", "max_finite"] == 127
    assert table.loc["fp16", "max_finite"] == 65504.0
    assert math.isnan(table.loc["int4", "min_subnormal"])


@pytest.mark.parametrize("name", TORCH_FLOAT_FORMATS)
def test_representable_values_match_every_torch_bit_pattern(name):
    fmt = FORMATS[name]
    view_as = torch.int16 if fmt.bits == 16 else torch.uint8
    lo, hi = (-(2**15), 2**15) if fmt.bits == 16 else (0, 256)
    every = torch.arange(lo, hi, dtype=torch.int64).to(view_as).view(fmt.torch_dtype).double()
    expected = torch.unique(every[torch.isfinite(every)])
    assert torch.equal(representable_values(name), expected)


def test_representable_values_rejects_wide_formats():
    for name in ["fp32", "fp64", "tf32"]:
        with pytest.raises(ValueError):
            representable_values(name)
    assert representable_values("int4").tolist() == list(range(-8, 8))


# ---------------------------------------------------------------- 4. stochastic rounding


@pytest.mark.parametrize(
    "name, value",
    [
        ("fp16", 1.0 + 2.0**-10 / 3),
        ("fp16", 300.7),
        ("fp16", 2.0**-24 * 3.3),  # subnormal
        ("bf16", 1.0 + 0.7 * 2.0**-7),
        ("bf16", 2.0**-133 * 2.25),  # subnormal
        ("fp8_e5m2", 1.1),
        ("fp8_e5m2", 2.0**-16 * 1.4),  # subnormal
    ],
)
def test_stochastic_rounding_is_unbiased(name, value):
    x = torch.tensor(value, dtype=torch.float32)
    xv = x.item()
    lo, hi = neighbours(representable_values(name), xv)
    assert lo < xv < hi
    n = 200_000
    g = torch.Generator().manual_seed(7)
    draws = round_to(x.expand(n).contiguous(), name, "stochastic", g).double()
    assert set(torch.unique(draws).tolist()) == {lo, hi}
    p = (xv - lo) / (hi - lo)
    se = (hi - lo) * math.sqrt(p * (1 - p) / n)
    assert abs(draws.mean().item() - xv) < 5 * se


@pytest.mark.parametrize("name", ["fp16", "bf16", "fp8_e4m3fn", "fp8_e5m2", "int8", "int4"])
def test_stochastic_rounding_leaves_representable_values_fixed(name):
    vals = representable_values(name).float()
    g = torch.Generator().manual_seed(0)
    got = round_to(vals, name, "stochastic", g)
    assert_same_floats(got, vals, vals)


def test_stochastic_rounding_is_reproducible_and_handles_specials():
    x = torch.randn(10_000)
    a = round_to(x, "fp8_e5m2", "stochastic", torch.Generator().manual_seed(3))
    b = round_to(x, "fp8_e5m2", "stochastic", torch.Generator().manual_seed(3))
    c = round_to(x, "fp8_e5m2", "stochastic", torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    g = torch.Generator().manual_seed(1)
    specials = torch.tensor([NAN, INF, -INF, 0.0, -0.0, 60000.0, -1e-30] * 1000)
    s = round_to(specials, "fp8_e5m2", "stochastic", g).view(1000, 7)
    assert torch.isnan(s[:, 0]).all()
    assert (s[:, 1] == INF).all() and (s[:, 2] == -INF).all()
    assert (s[:, 3] == 0).all() and not torch.signbit(s[:, 3]).any()
    assert torch.signbit(s[:, 4]).all()
    assert set(s[:, 5].tolist()) == {57344.0, INF}  # above max: max or overflow
    assert set(s[:, 6].tolist()) == {-0.0} and torch.signbit(s[:, 6]).all()
    sat = round_to(torch.tensor([460.0, INF] * 500), "fp8_e4m3fn", "stochastic", g)
    assert set(sat.tolist()) == {448.0}


# ---------------------------------------------------------------- 5. ints and validation


def test_int_formats_round_half_to_even_and_saturate():
    x = torch.tensor(
        [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.6, 127.5, 300.0, -128.4, -129.0, INF, -INF, -0.2]
    )
    assert round_to(x, "int8").tolist() == [
        0,
        2,
        2,
        0,
        -2,
        -2,
        127,
        127,
        127,
        -128,
        -128,
        127,
        -128,
        0,
    ]
    x4 = torch.tensor([7.4, 7.5, 8.0, -8.5, -9.0, 3.5, -2.5, 0.49])
    assert round_to(x4, "int4").tolist() == [7, 7, 7, -8, -8, 4, -2, 0]
    assert torch.isnan(round_to(torch.tensor([NAN]), "int8")).all()


@pytest.mark.parametrize("name, lo, hi", [("int8", -128, 127), ("int4", -8, 7)])
def test_int_grid_sweep_agrees_with_python_round(name, lo, hi):
    values = [k / 8 for k in range(-1500, 1501)]
    got = round_to(torch.tensor(values), name).tolist()
    assert got == [min(max(round(v), lo), hi) for v in values]  # Python round: half-to-even


def test_get_format():
    assert list(FORMATS) == [
        "fp64",
        "fp32",
        "tf32",
        "fp16",
        "bf16",
        "fp8_e4m3fn",
        "fp8_e5m2",
        "fp6_e2m3",
        "fp6_e3m2",
        "fp4_e2m1",
        "int8",
        "int4",
    ]
    assert get_format("bf16") is FORMATS["bf16"]
    custom = FloatFormat("e3m2", 3, 2, 3, "ieee", "inf", None)
    assert get_format(custom) is custom
    assert isinstance(get_format("int4"), IntFormat)
    with pytest.raises(ValueError) as err:
        get_format("fp17")
    msg = str(err.value)
    assert "fmt" in msg and "'fp17'" in msg
    assert all(name in msg for name in FORMATS)
    with pytest.raises(ValueError, match="fmt"):
        round_to(torch.zeros(2), "fp17")


def test_round_to_validates_rounding_and_dtype():
    with pytest.raises(ValueError, match="rounding"):
        round_to(torch.zeros(2), "fp16", rounding="up")
    with pytest.raises(ValueError, match="rounding"):  # checked before anything else
        round_to(torch.zeros(2, dtype=torch.float64), "fp16", rounding="truncate")
    for dtype in [torch.float64, torch.float16, torch.int32]:
        with pytest.raises(TypeError, match="x"):
            round_to(torch.zeros(2, dtype=dtype), "fp16")


def test_custom_layout_rounds_like_its_grid():
    e3m2 = FloatFormat("e3m2", 3, 2, 3, "ieee", "inf", None)
    assert e3m2.max_finite == 14.0 and e3m2.min_subnormal == 0.0625
    x = torch.tensor([13.0, 14.9, 15.0, 0.03125, 0.09375, 1.125, 1.375])
    assert round_to(x, e3m2).tolist() == [12.0, 14.0, INF, 0.0, 0.125, 1.0, 1.5]


# ---------------------------------------------------------------- 6. classify


def test_classify_fp16_exact_fractions():
    fmt = FORMATS["fp16"]
    flushed = [1e-9, -(2.0**-25)]  # 2**-25 is half the smallest subnormal: tie to even = 0
    subnormal = [2.0**-25 * 1.0001, 1e-6, -3e-5]
    normal = [1.0, -2.0, 65504.0, 65519.0, fmt.min_normal * (1 - 2.0**-12)]  # last rounds up
    overflow = [65520.0, -1e5, 1e30]
    ignored = [0.0, -0.0, NAN, INF, -INF]
    x = torch.tensor(flushed + subnormal + normal + overflow + ignored)
    assert classify(x, "fp16") == {
        "flushed": 2 / 13,
        "subnormal": 3 / 13,
        "normal": 5 / 13,
        "overflow": 3 / 13,
    }


def test_classify_scale_moves_values_out_of_flushed():
    x = torch.tensor([1e-9, 3e-9, 1e-8, 1e-6])
    assert classify(x, "fp16")["flushed"] == 0.75
    scaled = classify(x, "fp16", scale=2.0**16)
    assert scaled["flushed"] == 0.0 and scaled["normal"] == 1.0
    assert classify(x, "fp16", scale=1e12)["overflow"] == 0.25
    assert set(scaled) == {"flushed", "subnormal", "normal", "overflow"}


def test_classify_saturating_and_int_formats():
    x = torch.tensor([1000.0, 448.0, 1e-4, 0.01])
    assert classify(x, "fp8_e4m3fn") == {
        "flushed": 0.25,
        "subnormal": 0.25,
        "normal": 0.25,
        "overflow": 0.25,
    }
    xi = torch.tensor([0.3, 5.0, 127.4, 128.0, -128.0, -200.0])
    assert classify(xi, "int8") == {
        "flushed": 1 / 6,
        "subnormal": 0.0,
        "normal": 3 / 6,
        "overflow": 2 / 6,
    }


# ---------------------------------------------------------------- 7. spacing


@pytest.mark.parametrize("name", TORCH_FLOAT_FORMATS + ["int8", "int4"])
def test_spacing_is_the_gap_to_the_next_value_away_from_zero(name):
    vals = representable_values(name)
    pos, neg = vals[vals >= 0], vals[vals <= 0]
    gaps_pos, gaps_neg = pos.diff(), neg.diff()
    assert torch.equal(spacing(pos[:-1], name), gaps_pos)
    assert torch.equal(spacing(neg[1:], name), gaps_neg)
    mids = (pos[1:] + pos[:-1]) / 2  # inside each gap the spacing is that gap
    assert torch.equal(spacing(mids.float(), name), gaps_pos)
    top = pos[-1].item()
    beyond = torch.tensor([top * 1.001 + 1, -(top * 1.001 + 1), INF], dtype=torch.float64)
    assert torch.isinf(spacing(beyond, name)).all()
    assert spacing(torch.tensor([pos[-1].item()]), name).dtype == torch.float64


def test_spacing_of_wide_formats():
    x = torch.tensor([1.0, 2.0**-1074, 0.0], dtype=torch.float64)
    assert spacing(x, "fp64").tolist() == [2.0**-52, 2.0**-1074, 2.0**-1074]
    assert spacing(torch.tensor([1.0, 0.0]), "fp32").tolist() == [2.0**-23, 2.0**-149]
    assert spacing(torch.tensor([3.0]), "tf32").item() == 2.0**-9
