"""MP-22's rule on small hand-made tables: every verdict it can return, and its edge cases."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from precisionlab.study.rules import refinement as rules

KAPPAS = [10.0**k for k in range(1, 11)]


def table(refined, seeds: int = 3, kappas=KAPPAS) -> pd.DataFrame:
    """Errors of the shape measured: fp32 ~ kappa u32, fp64 ~ kappa u64 (times a little seed
    jitter), refinement's given per kappa by `refined(kappa, fp32, fp64)`."""
    rows = []
    for seed in range(seeds):
        j = 1 + 0.2 * seed
        for kappa in kappas:
            e32, e64 = min(kappa * 2**-24 * j, 10.0), kappa * 2**-53 * j
            for method, err in (("fp32 LU", e32), ("fp64 LU", e64),
                                ("refinement", refined(kappa, e32, e64))):
                rows.append({"seed": seed, "kappa": kappa, "method": method,
                             "forward_error": err})
    return pd.DataFrame(rows)


def stalls_from(limit):
    """Refinement at fp64's level below `limit`, at fp32's (or worse) from it on."""
    return lambda kappa, e32, e64: 2 * e64 if kappa < limit else 3 * e32


def test_supported_when_refinement_matches_fp64_at_every_kappa():
    f = rules.mp22(table(lambda kappa, e32, e64: 0.5 * e64))
    assert f.verdict == "supported"
    assert "every kappa" in f.reason and "10 values" in f.reason
    assert f.evidence == "fig-mp22"


def test_nuanced_names_where_refinement_stops():
    f = rules.mp22(table(stalls_from(1e8)))
    assert f.verdict == "nuanced"
    assert "up to kappa = 1e7" in f.reason and "from kappa = 1e8" in f.reason
    assert "1/u(fp32) = 1.7e7" in f.reason


def test_refuted_when_refinement_never_beats_plain_fp32():
    f = rules.mp22(table(lambda kappa, e32, e64: 0.5 * e32))  # one bit better: no help
    assert f.verdict == "refuted"
    assert "never below 1/10" in f.reason


def test_nuanced_when_it_helps_but_never_reaches_fp64():
    f = rules.mp22(table(lambda kappa, e32, e64: 1e-3 * e32))
    assert f.verdict == "nuanced"
    assert "at no kappa" in f.reason


def test_the_worst_seed_decides():
    base = table(lambda kappa, e32, e64: e64)
    bad = (base.method == "refinement") & (base.seed == 2) & (base.kappa == 1e3)
    base.loc[bad, "forward_error"] *= 1e4  # one seed's refinement stalls at kappa = 1e3
    f = rules.mp22(base)
    assert f.verdict == "nuanced" and "from kappa = 1e3" in f.reason


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_non_finite_error_counts_as_a_failure(value):
    base = table(lambda kappa, e32, e64: e64)
    base.loc[(base.method == "refinement") & (base.kappa == 1e10), "forward_error"] = value
    f = rules.mp22(base)
    assert f.verdict == "nuanced" and "from kappa = 1e10" in f.reason


def test_factor_margins_are_robust_to_fp64_level_constants():
    # a refined error a few times the fp64 solve's is still "the fp64 level"
    assert rules.mp22(table(lambda kappa, e32, e64: 5 * e64)).verdict == "supported"
    assert rules.mp22(table(lambda kappa, e32, e64: 20 * e64)).verdict == "nuanced"


def test_bad_tables_are_named():
    with pytest.raises(ValueError, match="forward_error"):
        rules.mp22(table(stalls_from(1e8)).drop(columns="forward_error"))
    t = table(stalls_from(1e8))
    with pytest.raises(ValueError, match="methods"):
        rules.mp22(t[t.method != "fp64 LU"])
