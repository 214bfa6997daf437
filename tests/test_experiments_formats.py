"""Chapter 1's experiments return tidy tables with the facts the rules rely on (small, fast)."""

from __future__ import annotations

import math

import pytest

from precisionlab.study.experiments import formats as X


def test_layout_check_compares_derived_constants_with_independent_references() -> None:
    t = X.layout_check(["fp16", "bf16", "tf32"])
    assert t["equal"].all()
    assert set(t["format"]) == {"fp16", "bf16"}  # tf32 has no dtype: nothing to compare with
    fp16 = t[t["format"] == "fp16"]
    assert {"torch.finfo", "numpy.finfo", "bit pattern 0..01"} <= set(fp16["reference"])
    sub = fp16[(fp16["quantity"] == "smallest_subnormal")]
    assert (sub["reference_value"] == 2.0**-24).all()
    bf16 = t[t["format"] == "bf16"]
    assert "ml_dtypes.finfo" in set(bf16["reference"])  # an implementation independent of torch
    with pytest.raises(ValueError, match="names"):
        X.layout_check(["int8"])


def test_matmul_probe_shows_fp16_overflow_and_bf16_coarseness() -> None:
    t = X.matmul_probe([0, 8], trials=2, inner=64)
    assert len(t) == 2 * 2 * 2 and set(t.columns) >= {"format", "log2_scale", "finite", "rel_error"}
    at = t.set_index(["format", "log2_scale", "trial"]).sort_index()
    assert not at.loc[("fp16", 8), "finite"].any() and at.loc[("bf16", 8), "finite"].all()
    assert (at.loc[("bf16", 0), "rel_error"] > 2 * at.loc[("fp16", 0), "rel_error"]).all()


def test_softmax_probe_naive_overflows_and_max_subtracted_does_not() -> None:
    t = X.softmax_probe(lengths=[8], peaks=[5.0, 12.0], trials=3)
    assert len(t) == 2 * 3 * len(X.SOFTMAX_METHODS)
    naive = t[t["method"] == "naive exp, fp16"].set_index("peak_score")
    assert naive.loc[5.0, "finite"].all() and not naive.loc[12.0, "finite"].any()
    assert naive.loc[12.0, "max_abs_error"].isna().all()
    stable = t[t["method"] == "max-subtracted, fp16"]
    assert stable["finite"].all() and stable["max_abs_error"].max() < 0.01


def test_relative_error_is_measured_against_float64_so_fp32_is_not_zero() -> None:
    t = X.relative_error_table(["fp32", "fp16"], n=20_000, low=-2, high=2)
    fp32 = t[t["format"] == "fp32"]["max_relative_error"]
    assert (fp32 > 0).all() and (fp32 <= 2.0**-24).all()
    assert (t[t["format"] == "fp16"]["max_relative_error"] <= 2.0**-11 * (1 + 2.0**-12)).all()


def test_spacing_table_stops_at_the_format_range() -> None:
    t = X.spacing_table(["fp16"], low=-30, high=20, points=200)
    assert t["magnitude"].min() >= 2.0**-24 and t["magnitude"].max() <= 65504
    in_one_two = t[(t["magnitude"] >= 1) & (t["magnitude"] < 2)]
    assert len(in_one_two) and (in_one_two["spacing"] == 2.0**-10).all()


def test_gradient_runs_use_each_seeds_task_split_and_feed_the_tables() -> None:
    runs, samples = X.gradient_runs([0, 1], hidden=[8], steps=3, batch_size=16, record_every=1)
    assert list(runs["seed"]) == [0, 1] and (runs["gradients"] > 0).all()
    assert set(samples) == {0, 1}
    under = X.underflow(samples, ["fp16", "bf16"], [0, 8])
    assert len(under) == 2 * 2 * 2 and set(under["seed"]) == {0, 1}
    hist = X.gradient_histogram(samples)
    assert math.isclose(hist["percent"].sum(), 100.0, rel_tol=1e-9)


GOOD = {"formats": ["fp16"], "matmul_log2_scales": [0], "matmul_trials": 1,
        "softmax_lengths": [8], "softmax_trials": 1, "gradient_formats": ["fp16"],
        "log2_scales": [0], "seeds": [0], "hidden": [8], "train_steps": 10, "batch_size": 8,
        "lr": 1e-3, "record_every": 5, "threads": 1}


def test_check_parameters_names_the_bad_parameter() -> None:
    assert set(GOOD) == set(X.PARAMETERS)
    X.check_parameters(**GOOD)
    for name, bad, match in [("formats", ["fp12"], "formats"), ("softmax_lengths", [1], "softmax"),
                             ("batch_size", 5000, "batch_size"),
                             ("gradient_formats", ["bf16"], "gradient_formats")]:
        with pytest.raises(ValueError, match=match):
            X.check_parameters(**{**GOOD, name: bad})


def test_round_to_check_compares_every_16_bit_dtype() -> None:
    t = X.round_to_check(5000, seed=1)
    assert list(t["format"]) == ["fp16", "bf16", "fp8_e4m3fn", "fp8_e5m2"] and t["identical"].all()
