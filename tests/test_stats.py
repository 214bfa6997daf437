"""precisionlab.study.stats: intervals against scipy, pairing, and every comparison outcome."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from precisionlab.study import stats


def table(control: list[float], treatment: list[float]) -> pd.DataFrame:
    rows = [{"seed": s, "precision": "32-true", "acc": a} for s, a in enumerate(control)]
    rows += [{"seed": s, "precision": "16-mixed", "acc": a} for s, a in enumerate(treatment)]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # order must not matter


def test_interval_matches_scipy_t_interval():
    x = np.array([0.1, 0.4, 0.35, 0.2, 0.3])
    iv = stats.interval(x)
    low, high = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
    assert (iv.mean, iv.n) == (pytest.approx(x.mean()), 5)
    assert (iv.low, iv.high) == (pytest.approx(low), pytest.approx(high))


def test_one_value_has_no_interval_and_is_never_decided():
    iv = stats.interval([0.3])
    assert math.isnan(iv.low) and math.isnan(iv.high)
    assert not iv.beyond_noise and not iv.within(1.0)


def test_a_diverged_run_makes_the_interval_nan_not_dropped():
    iv = stats.interval([0.9, float("nan"), 0.91])
    assert math.isnan(iv.mean) and not iv.beyond_noise


def test_pairs_by_seed_not_by_row_order():
    diffs = stats.paired_differences(table([0.9, 0.8, 0.7], [0.91, 0.81, 0.71]), "acc",
                                     "precision", "16-mixed", "32-true")
    assert np.allclose(diffs.sort_index().to_numpy(), 0.01)


def test_missing_pair_and_unknown_label_are_named():
    t = table([0.9, 0.8, 0.7], [0.91, 0.81])
    with pytest.raises(ValueError, match="pairs \\[2\\]"):
        stats.paired(t, "acc", "precision", "16-mixed", "32-true")
    with pytest.raises(ValueError, match="no rows with 'bf16-mixed'"):
        stats.paired(t, "acc", "precision", "bf16-mixed", "32-true")
    with pytest.raises(ValueError, match="no column 'loss'"):
        stats.paired(t, "loss", "precision", "16-mixed", "32-true")


@pytest.mark.parametrize(("treatment", "outcome"), [
    ([0.901, 0.801, 0.699], "equivalent"),
    ([0.95, 0.86, 0.74], "higher"),
    ([0.85, 0.74, 0.66], "lower"),
    ([0.99, 0.70, 0.75], "inconclusive"),
])
def test_compare_reaches_every_outcome(treatment, outcome):
    result = stats.compare(table([0.9, 0.8, 0.7], treatment), "acc", "precision", "16-mixed",
                           "32-true", margin=0.01)
    assert result.outcome == outcome


def test_small_real_difference_inside_the_margin_is_equivalent_and_beyond_noise():
    result = stats.compare(table([0.9, 0.8, 0.7], [0.902, 0.8021, 0.7019]), "acc", "precision",
                           "16-mixed", "32-true", margin=0.01)
    assert result.outcome == "equivalent" and result.interval.beyond_noise


def test_summarize_counts_diverged_runs():
    t = table([0.9, 0.8, 0.7], [float("nan"), 0.5, 0.6])
    s = stats.summarize(t, "acc", "precision").set_index("precision")
    assert s.loc["16-mixed", "nan_runs"] == 1 and math.isnan(s.loc["16-mixed", "mean"])
    assert s.loc["32-true", "n"] == 3 and s.loc["32-true", "low"] < 0.8 < s.loc["32-true", "high"]


def test_text_shows_mean_interval_and_n():
    assert stats.interval([0.01, 0.02, 0.03]).text(100, " pp") == "+2 [-0.48, +4.5] pp (n=3)"


@pytest.mark.parametrize(("n", "d"), [(10, 0.9959), (20, 0.6604), (50, 0.4042)])
def test_detectable_effect_matches_gpower_one_sample_t(n, d):
    """G*Power 3.1 (t tests, one sample / matched pairs, two tails, alpha 0.05, power 0.80)
    gives these effect sizes d = effect / sd."""
    assert stats.detectable_effect(2.0, n) == pytest.approx(2.0 * d, abs=2e-3)


def test_detectable_effect_has_the_power_it_states_in_simulation():
    """scipy's own paired t-test, run on simulated pairs with the detectable effect as their
    true mean, rejects at 5 % about 80 % of the time."""
    n, sd = 5, 0.3
    effect = stats.detectable_effect(sd, n)
    rng = np.random.default_rng(0)
    diffs = rng.normal(effect, sd, size=(20_000, n))
    rejected = sps.ttest_1samp(diffs, 0.0, axis=1).pvalue < 0.05
    assert rejected.mean() == pytest.approx(0.80, abs=0.012)


def test_detectable_effect_edges_and_bad_input():
    assert math.isnan(stats.detectable_effect(1.0, 1))
    assert stats.detectable_effect(0.0, 5) == 0.0
    assert stats.detectable_effect(1.0, 3) > stats.detectable_effect(1.0, 30)
    with pytest.raises(ValueError, match="power"):
        stats.detectable_effect(1.0, 5, power=1.0)


def test_equivalence_the_design_could_not_detect_is_underpowered():
    # inside a 0.02 margin, but three noisy seeds could not tell 0.02 from 0
    noisy = stats.compare(table([0.9, 0.8, 0.7], [0.9075, 0.7925, 0.7]), "acc", "precision",
                          "16-mixed", "32-true", margin=0.02)
    assert noisy.interval.within(0.02) and noisy.detectable > 0.02
    assert noisy.outcome == "underpowered"


def test_zero_width_interval_needs_a_resolution_to_be_equivalent():
    same = table([0.9, 0.8, 0.7], [0.9, 0.8, 0.7])
    assert stats.compare(same, "acc", "precision", "16-mixed", "32-true",
                         margin=0.01).outcome == "underpowered"
    # one example of 2,000 is 0.05 pp: three identical seeds rule out a 1 pp effect
    fine = stats.compare(same, "acc", "precision", "16-mixed", "32-true", margin=0.01,
                         resolution=1 / 2000)
    assert fine.detectable == pytest.approx(stats.detectable_effect(1 / 2000, 3))
    assert fine.outcome == "equivalent"
    # one example of 100 is 1 pp: the same identical seeds cannot
    coarse = stats.compare(same, "acc", "precision", "16-mixed", "32-true", margin=0.01,
                           resolution=1 / 100)
    assert coarse.outcome == "underpowered"


def test_comparison_text_states_what_the_design_could_detect():
    c = stats.compare(table([0.9, 0.8, 0.7], [0.901, 0.801, 0.699]), "acc", "precision",
                      "16-mixed", "32-true", margin=0.01)
    assert c.text(100, " pp") == ("+0.033 [-0.25, +0.32] pp (n=3; detectable 0.38 pp at "
                                  "80 % power, margin 1 pp)")


def test_wilson_matches_known_values_and_bounds():
    low, high = stats.wilson(57, 64)
    assert (round(low, 3), round(high, 3)) == (0.791, 0.946)
    assert stats.wilson(0, 10)[0] == 0 and math.isclose(stats.wilson(10, 10)[1], 1)
    # 73 sentences, all kept, is the smallest sample that can reach the pass mark
    assert stats.wilson(72, 72)[0] < 0.95 <= stats.wilson(73, 73)[0]
    for bad in ((5, 4), (-1, 4), (0, 0)):
        with pytest.raises(ValueError, match="kept, n"):
            stats.wilson(*bad)


def test_weighted_interval_counts_every_token_once():
    """Windows of 10 and 1000 tokens: the mean is over tokens, not windows."""
    iv = stats.weighted_interval([2.0, 1.0], [10, 1000])
    assert iv.mean == pytest.approx((2.0 * 10 + 1000) / 1010)


def test_weighted_interval_matches_scipy_bootstrap_and_the_t_interval():
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 0.5, size=60)
    w = rng.integers(100, 300, size=60).astype(float)
    iv = stats.weighted_interval(x, w, resamples=4000, seed=3)
    ref = sps.bootstrap((x, w), lambda v, u, axis=-1: (v * u).sum(axis) / u.sum(axis),
                        paired=True, vectorized=True, n_resamples=4000, method="percentile",
                        rng=np.random.default_rng(3)).confidence_interval
    assert (iv.low, iv.high) == (pytest.approx(ref.low), pytest.approx(ref.high))
    equal = stats.weighted_interval(x, np.ones_like(x), resamples=4000)
    t = stats.interval(x)
    assert equal.mean == pytest.approx(t.mean)
    assert equal.high - equal.low == pytest.approx(t.high - t.low, rel=0.1)


def test_weighted_interval_bad_input_and_nan():
    assert math.isnan(stats.weighted_interval([1.0, float("nan")], [1, 1]).low)
    with pytest.raises(ValueError, match="weights"):
        stats.weighted_interval([1.0, 2.0], [1, 0])
    with pytest.raises(ValueError, match="same nonzero length"):
        stats.weighted_interval([1.0, 2.0], [1])
