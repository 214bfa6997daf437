"""The chapter-1 rules reach every verdict they can return, on small hand-built tables."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from precisionlab.study.rules import formats as R


def layouts(equal: bool = True) -> pd.DataFrame:
    """Two formats, each checked against torch.finfo; `equal=False` breaks one constant."""
    rows = [{"format": f, "quantity": "max", "reference": "torch.finfo", "derived": v,
             "reference_value": v, "equal": True} for f, v in [("fp16", 65504.0), ("bf16", 3.4e38)]]
    if not equal:
        rows[0].update(reference_value=65520.0, equal=False)
    return pd.DataFrame(rows)


def probe(fp16: dict[int, float], bf16: dict[int, float], trials: int = 3) -> pd.DataFrame:
    """A matmul probe table: relative error per log2 scale (NaN = non-finite output)."""
    rows = []
    for name, errors in [("fp16", fp16), ("bf16", bf16)]:
        for k, e in errors.items():
            rows += [{"format": name, "log2_scale": k, "trial": t, "finite": not math.isnan(e),
                      "rel_error": e} for t in range(trials)]
    return pd.DataFrame(rows)


def test_fmt1_refuted_when_fp16_fails_where_bf16_works_and_bf16_is_coarser() -> None:
    f = R.fmt1(layouts(), probe({-14: 0.5, 0: 3e-4, 6: math.nan}, {-14: 3e-3, 0: 3e-3, 6: 3e-3}))
    assert f.verdict == "refuted"
    assert "2^-14, 2^6 where bf16 did not" in f.reason and "10x fp16's" in f.reason


def test_fmt1_supported_when_the_two_formats_behave_alike_and_fp16_never_fails() -> None:
    f = R.fmt1(layouts(), probe({0: 3e-4, 4: 3e-4}, {0: 4e-4, 4: 4e-4}))
    assert f.verdict == "supported"
    assert "at input scales none" in f.reason


def test_fmt1_nuanced_when_only_precision_differs() -> None:
    assert R.fmt1(layouts(), probe({0: 3e-4, 4: 3e-4}, {0: 3e-3, 4: 3e-3})).verdict == "nuanced"


def test_fmt1_nuanced_when_only_range_differs() -> None:
    f = R.fmt1(layouts(), probe({0: 3e-4, 8: math.nan}, {0: 3e-4, 8: 3e-4}))
    assert f.verdict == "nuanced"


def test_fmt1_not_testable_when_a_layout_disagrees_or_nothing_computes() -> None:
    f = R.fmt1(layouts(equal=False), probe({0: 3e-4}, {0: 3e-3}))
    assert f.verdict == "not testable here" and "65520" in f.reason
    f = R.fmt1(layouts(), probe({8: math.nan}, {8: 0.5}))
    assert f.verdict == "not testable here"


def softmax(naive: dict[tuple[int, float], float], stable: float = 1e-3,
            trials: int = 4) -> pd.DataFrame:
    """A softmax probe table: the naive error per (n, peak) (NaN = inf/NaN output); the
    max-subtracted form has error `stable` everywhere."""
    rows = []
    for (n, peak), e in naive.items():
        for method, err in [(R.NAIVE, e), (R.STABLE, stable)]:
            rows += [{"n": n, "peak_score": peak, "trial": t, "method": method,
                      "finite": not math.isnan(err), "max_abs_error": err} for t in range(trials)]
    return pd.DataFrame(rows)


GRID = {(8, 9.0): 1e-4, (8, 10.5): 0.4, (8, 12.0): math.nan,
        (512, 9.0): 0.1, (512, 10.5): 0.1, (512, 12.0): math.nan}


def test_fmt2_refuted_when_naive_breaks_silently_then_loudly_and_stable_does_not() -> None:
    f = R.fmt2(softmax(GRID))
    assert f.verdict == "refuted"
    assert "n=8: silently wrong from peak 10.5 (median error 0.4), inf/NaN from 12" in f.reason
    assert "n=512: silently wrong from peak 9" in f.reason and "never broke" in f.reason


def test_fmt2_counts_silent_wrongness_without_any_inf() -> None:
    f = R.fmt2(softmax({(64, 9.0): 1e-4, (64, 10.0): 0.2}))
    assert f.verdict == "refuted" and "never inf/NaN" in f.reason


def test_fmt2_supported_when_naive_stays_right_everywhere() -> None:
    f = R.fmt2(softmax({(8, 5.0): 1e-4, (64, 8.0): 2e-4}))
    assert f.verdict == "supported" and "up to 8" in f.reason


def test_fmt2_nuanced_when_the_max_subtracted_form_breaks_too() -> None:
    f = R.fmt2(softmax({(64, 12.0): math.nan}, stable=0.05))
    assert f.verdict == "nuanced" and "broke there too" in f.reason


def test_fmt2_a_minority_of_wrong_rows_does_not_break_the_softmax() -> None:
    t = softmax({(64, 10.0): 1e-4})
    one = (t["method"] == R.NAIVE) & (t["trial"] == 0)
    t.loc[one, ["finite", "max_abs_error"]] = [False, math.nan]
    assert R.fmt2(t).verdict == "supported"


@pytest.mark.parametrize("name", ["FAIL_ERROR", "FAIL_SHARE", "PRECISION_RATIO", "WRONG_ERROR",
                                  "BREAK_SHARE"])
def test_margins_are_named_positive_constants(name: str) -> None:
    assert getattr(R, name) > 0
