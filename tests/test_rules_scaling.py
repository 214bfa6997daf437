"""LS-1's rule on small hand-made tables: each verdict it can return, and what decides it."""

from __future__ import annotations

import pandas as pd
import pytest

from precisionlab.study.rules import scaling


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


# MP-24: one line (the precision policy alone) against 32-true, paired by seed.

def loss_runs(tasks: list[str], diffs: dict[str, list[float]]) -> pd.DataFrame:
    """Final train loss per task and seed: 32-true 0.5 + seed noise, each config that plus its
    per-seed `diffs` (NaN: the run went non-finite at step 2)."""
    rows = []
    for task in tasks:
        for seed in range(3):
            base = 0.5 + 0.03 * seed
            rows.append({"task": task, "seed": seed, "config": "32-true", "train_loss": base,
                         "first_nonfinite": float("nan")})
            for config, d in diffs.items():
                rows.append({"task": task, "seed": seed, "config": config,
                             "train_loss": base + d[seed],
                             "first_nonfinite": 2.0 if d[seed] != d[seed] else float("nan")})
    return pd.DataFrame(rows)


NAN = [float("nan")] * 3
WORSE = [0.3, 0.32, 0.31]  # far beyond the 0.05-nat margin
NOISY = [0.2, -0.2, 0.01]  # interval much wider than the margin


def test_mp24_nuanced_when_bf16_trains_but_fp16_underflows_and_the_cast_breaks():
    runs = loss_runs(["a", "b"], {"bf16-mixed": SAME, scaling.NONE: SAME,
                                  scaling.DYNAMIC: SAME, "16-true": NAN})
    f = scaling.mp24(runs, under_table({"a": UNDERFLOW, "b": UNDERFLOW}))
    assert f.verdict == "nuanced"
    assert f.reason.startswith("one line suffices for bf16, one line is not enough for fp16")
    assert "equivalent, but 8.7 % of its nonzero activation-gradient entries flush" in f.reason
    assert "non-finite in 3 of 3 seeds from step 2" in f.reason
    assert "16-mixed with the dynamic scaler: a" in f.reason and f.evidence == "tbl-mp24"


def test_mp24_supported_when_one_line_trains_like_fp32_without_underflow():
    runs = loss_runs(["a", "b"], {"bf16-mixed": SAME, scaling.NONE: SAME, "16-true": NAN})
    f = scaling.mp24(runs, under_table({"a": TINY, "b": TINY}))
    assert f.verdict == "supported"  # the 16-true cast breaking does not matter: autocast did it


def test_mp24_the_cast_alone_can_carry_fp16():
    runs = loss_runs(["a"], {"bf16-mixed": SAME, scaling.NONE: SAME, "16-true": SAME})
    assert scaling.mp24(runs, under_table({"a": UNDERFLOW})).verdict == "supported"


def test_mp24_refuted_when_no_one_line_change_trains_like_fp32():
    runs = loss_runs(["a"], {"bf16-mixed": WORSE, scaling.NONE: WORSE, "16-true": NAN})
    f = scaling.mp24(runs, under_table({"a": TINY}))
    assert f.verdict == "refuted"
    assert "higher" in f.reason


def test_mp24_nuanced_when_noise_leaves_a_format_undecided():
    runs = loss_runs(["a"], {"bf16-mixed": NOISY, scaling.NONE: SAME})
    f = scaling.mp24(runs, under_table({"a": TINY}))
    assert f.verdict == "nuanced"
    assert "one line is undecided (within noise) for bf16, one line suffices for fp16" in f.reason


def test_mp24_one_seed_is_not_testable_and_missing_configs_are_named():
    runs = loss_runs(["a"], {"bf16-mixed": SAME, scaling.NONE: SAME})
    one = runs[runs.seed == 0]
    assert scaling.mp24(one, under_table({"a": UNDERFLOW[:1]})).verdict == "not testable here"
    with pytest.raises(ValueError, match="bf16-mixed"):
        scaling.mp24(runs[runs.config != "bf16-mixed"], under_table({"a": TINY}))
