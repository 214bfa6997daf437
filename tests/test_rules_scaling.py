"""LS-1's rule on small hand-made tables: each verdict it can return, and what decides it."""

from __future__ import annotations

import pandas as pd
import pytest

from precisionlab.rules import scaling


def under_table(shares: dict[str, list[tuple[float, float]]], overflow_at: float = 24.0
                ) -> pd.DataFrame:
    """Underflow rows: per task, per seed, (share flushed without scaling, share at 2^16) at
    step 10 (step 0 flushes nothing); 2^`overflow_at` overflows."""
    rows = []
    for task, per_seed in shares.items():
        for seed, (none, scaled) in enumerate(per_seed):
            for step, k, share in [(0, 0.0, 0.0), (0, 16.0, 0.0), (10, 0.0, none),
                                   (10, 16.0, scaled), (10, overflow_at, 0.0)]:
                rows.append({"task": task, "seed": seed, "step": step, "log2_scale": k,
                             "act_flushed": share, "act_nonzero_fp32": 10_000,
                             "weight_flushed": share / 100, "overflow": k >= overflow_at})
    return pd.DataFrame(rows)


def runs_table(tasks: list[str], diffs: list[float]) -> pd.DataFrame:
    """Final test accuracy: dynamic 0.8 + small seed noise, no scaling that plus `diffs`."""
    rows = []
    for task in tasks:
        for seed, d in enumerate(diffs):
            base = 0.8 + 0.01 * seed
            rows += [{"task": task, "seed": seed, "config": scaling.DYNAMIC, "test_accuracy": base},
                     {"task": task, "seed": seed, "config": scaling.NONE,
                      "test_accuracy": base + d}]
    return pd.DataFrame(rows)


UNDERFLOW = [(0.08, 0.002), (0.06, 0.001), (0.12, 0.003)]  # 30-60x cut by the scale
ROUNDING = [(0.02, 0.019), (0.021, 0.02), (0.019, 0.019)]  # flushes, but no scale helps
TINY = [(0.0001, 0.0), (0.0002, 0.0), (0.0001, 0.0)]  # almost nothing flushes
SAME = [0.001, -0.001, 0.0]


def test_supported_when_every_task_underflows_and_states_the_cost():
    f = scaling.ls1(under_table({"a": UNDERFLOW, "b": UNDERFLOW}), runs_table(["a", "b"], SAME))
    assert f.verdict == "supported"
    assert "equivalent within +-1 pp" in f.reason  # the unwelcome part: accuracy did not move
    assert "2^16 cuts that" in f.reason and "step 10" in f.reason


def test_supported_reason_says_when_accuracy_falls():
    f = scaling.ls1(under_table({"a": UNDERFLOW}), runs_table(["a"], [-0.05, -0.06, -0.05]))
    assert f.verdict == "supported"
    assert "lower, beyond noise" in f.reason


def test_refuted_when_almost_nothing_flushes():
    f = scaling.ls1(under_table({"a": TINY, "b": TINY}), runs_table(["a", "b"], SAME))
    assert f.verdict == "refuted"


def test_refuted_when_what_flushes_is_rounding_that_no_scale_recovers():
    f = scaling.ls1(under_table({"a": ROUNDING}), runs_table(["a"], SAME))
    assert f.verdict == "refuted"


def test_nuanced_when_it_depends_on_the_task():
    f = scaling.ls1(under_table({"a": UNDERFLOW, "b": TINY}), runs_table(["a", "b"], SAME))
    assert f.verdict == "nuanced"
    assert "a:" in f.reason and "underflows" in f.reason and "(n=3, none)" in f.reason


def test_nuanced_when_seeds_disagree():
    noisy = [(0.3, 0.001), (0.0001, 0.0001), (0.0002, 0.0002)]
    f = scaling.ls1(under_table({"a": noisy}), runs_table(["a"], SAME))
    assert f.verdict == "nuanced"
    assert "inconclusive" in f.reason


def test_every_scale_overflowing_cannot_show_the_cut():
    f = scaling.ls1(under_table({"a": UNDERFLOW}, overflow_at=16.0), runs_table(["a"], SAME))
    assert f.verdict == "nuanced"
    assert "every scale tried overflowed" in f.reason


def test_one_seed_is_not_testable():
    f = scaling.ls1(under_table({"a": UNDERFLOW[:1]}), runs_table(["a"], SAME[:1]))
    assert f.verdict == "not testable here"


def test_empty_table_is_an_error():
    with pytest.raises(ValueError, match="under"):
        scaling.ls1(under_table({}).reindex(columns=["task"]), runs_table([], []))
