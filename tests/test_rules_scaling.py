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
    # with the flushed entries' share of the gradient's mass, the other unwelcome part
    mass = under_table({"a": UNDERFLOW}).assign(act_flushed_mass=lambda d: d.act_flushed / 1000)
    f = scaling.ls1(mass, runs_table(["a"], SAME))
    assert "(step 10; they carry 0.0087 % of the gradient's L1 mass; weight" in f.reason


def test_supported_reason_says_when_accuracy_falls():
    f = scaling.ls1(under_table({"a": UNDERFLOW}), runs_table(["a"], [-0.05, -0.06, -0.05]))
    assert f.verdict == "supported"
    assert "lower, beyond noise" in f.reason


def test_an_underpowered_cost_is_not_called_beyond_noise():
    f = scaling.ls1(under_table({"a": UNDERFLOW}), runs_table(["a"], [0.0, 0.0, 0.0]))
    assert "within +-1 pp but underpowered" in f.reason and "beyond noise" not in f.reason


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
SAME2 = [-0.001, 0.0, 0.001]  # as SAME, paired differently: a spread to judge power by
SLIGHTLY_WORSE = [0.04, 0.041, 0.039]  # inside the margin against 32-true ...
SLIGHTLY_BETTER = [-0.03, -0.031, -0.029]  # ... but 0.07 nats above this one


def keras_table(mixed_optimizer: str = "LossScaleOptimizer", mixed_outcome: str = "trained"
                ) -> pd.DataFrame:
    """Chapter 09's Keras runs, cut down: per article a float32 run (Adam / SGD) and a
    mixed_float16 run whose optimizer after compile is `mixed_optimizer`, plus a failed case."""
    rows = [("000", "float32", "Adam", "trained"), ("000", "mixed_float16", mixed_optimizer,
                                                    mixed_outcome),
            ("001", "float32", "", "AttributeError"), ("001", "float32", "SGD", "trained"),
            ("001", "mixed_float16", mixed_optimizer, mixed_outcome)]
    return pd.DataFrame(rows, columns=["article", "policy", "optimizer", "outcome"])


def test_mp24_supported_in_the_seed_framework_which_adds_the_scaler():
    # The one-line runs train like fp32; Keras's compile wraps the optimizer; the gradients that
    # flush without a scaler cost nothing measurable: the unwelcome part is still in the reason.
    runs = loss_runs(["a", "b"], {"bf16-mixed": SAME, scaling.NONE: SAME,
                                  scaling.DYNAMIC: SAME2, "16-true": NAN})
    f = scaling.mp24(runs, under_table({"a": UNDERFLOW, "b": UNDERFLOW}), keras_table())
    assert f.verdict == "supported" and f.evidence == "tbl-mp24"
    assert "(fp16 with the loss scaler the framework's compile adds)" in f.reason
    assert "a LossScaleOptimizer in 2 of 2 trained runs" in f.reason
    assert "under float32 got Adam, SGD" in f.reason
    assert ("without a scaler fp16 loses gradients on a, b (LS-1), at no cost measurable in "
            "final train loss here") in f.reason
    assert "8.7 % of its nonzero activation-gradient entries flush (LS-1: underflows)" in f.reason
    assert "non-finite in 3 of 3 seeds from step 2" in f.reason  # 16-true: reported, not judged


def test_mp24_supported_without_a_framework_table_when_nothing_flushes():
    runs = loss_runs(["a", "b"], {"bf16-mixed": SAME, scaling.NONE: SAME, "16-true": NAN})
    f = scaling.mp24(runs, under_table({"a": TINY, "b": TINY}))
    assert f.verdict == "supported"
    assert "is not in the data this rule received" in f.reason
    assert "loses gradients" not in f.reason


def test_mp24_underflow_alone_does_not_fail_fp16_without_a_scaler():
    runs = loss_runs(["a"], {"bf16-mixed": SAME, scaling.NONE: SAME, scaling.DYNAMIC: SAME2})
    runs["test_accuracy"] = 0.8
    f = scaling.mp24(runs, under_table({"a": UNDERFLOW}))
    assert f.verdict == "supported"
    assert "at no cost measurable in final train loss here" in f.reason
    assert "train loss without it minus with it +0 [" in f.reason
    assert "test accuracy +0 [+0, +0] pp (n=3; detectable 0 pp" in f.reason  # reported only


def test_mp24_an_underpowered_cost_leaves_fp16_without_a_scaler_undecided():
    # No spread between the runs with and without the scaler: no power to call them equal.
    runs = loss_runs(["a"], {"bf16-mixed": SAME, scaling.NONE: SAME, scaling.DYNAMIC: SAME})
    f = scaling.mp24(runs, under_table({"a": UNDERFLOW}))
    assert f.verdict == "nuanced"
    assert "underpowered" in f.reason and "one line is undecided for fp16 (not decided on a" \
        in f.reason


def test_mp24_nuanced_when_underflow_costs_something_measurable():
    # Without a scaler the loss is inside the margin of fp32, but the scaler's runs end 0.07
    # nats lower, beyond noise: the lost gradients cost, so fp16 needs more than the line.
    runs = loss_runs(["a"], {"bf16-mixed": SAME, scaling.NONE: SLIGHTLY_WORSE,
                             scaling.DYNAMIC: SLIGHTLY_BETTER})
    f = scaling.mp24(runs, under_table({"a": UNDERFLOW}))
    assert f.verdict == "nuanced"
    assert f.reason.startswith("one line suffices for bf16, one line is not enough for fp16; "
                               "without a scaler fp16 loses gradients on a (LS-1), and training "
                               "ends worse")
    assert "train loss without it minus with it +0.07" in f.reason


def test_mp24_nuanced_when_fp16_suffices_only_with_the_framework_scaler():
    runs = loss_runs(["a"], {"bf16-mixed": SAME, scaling.NONE: WORSE, scaling.DYNAMIC: SAME})
    f = scaling.mp24(runs, under_table({"a": UNDERFLOW}), keras_table())
    assert f.verdict == "nuanced"
    assert "one line suffices only where the framework adds the loss scaler" in f.reason
    assert "without the scaler (a custom loop, or autocast alone in PyTorch): a +0.31" in f.reason


def test_mp24_nuanced_when_noise_leaves_bf16_undecided():
    runs = loss_runs(["a"], {"bf16-mixed": NOISY, scaling.NONE: SAME, scaling.DYNAMIC: SAME})
    f = scaling.mp24(runs, under_table({"a": TINY}), keras_table())
    assert f.verdict == "nuanced"
    assert f.reason.startswith("one line is undecided for bf16 (not decided on a: an interval "
                               "wider than the margin, or too few seeds to detect an effect of "
                               "its size), one line suffices (the framework's compile adds the "
                               "loss scaler) for fp16")


def test_mp24_nuanced_when_the_cost_of_underflow_was_not_measured():
    runs = loss_runs(["a"], {"bf16-mixed": SAME, scaling.NONE: SAME})
    f = scaling.mp24(runs, under_table({"a": UNDERFLOW}))
    assert f.verdict == "nuanced"
    assert "cost not measured" in f.reason and "its cost undecided" in f.reason


def test_mp24_refuted_when_neither_line_trains_like_fp32():
    runs = loss_runs(["a"], {"bf16-mixed": WORSE, scaling.NONE: WORSE, "16-true": NAN})
    f = scaling.mp24(runs, under_table({"a": TINY}))
    assert f.verdict == "refuted"
    assert "higher" in f.reason
    runs = loss_runs(["a"], {"bf16-mixed": WORSE, scaling.NONE: SAME, scaling.DYNAMIC: NAN})
    f = scaling.mp24(runs, under_table({"a": TINY}), keras_table())
    assert f.verdict == "refuted"  # the framework's line (with its scaler) goes non-finite


def test_mp24_framework_table_decides_which_fp16_line_is_judged():
    runs = loss_runs(["a"], {"bf16-mixed": SAME, scaling.NONE: WORSE, scaling.DYNAMIC: SAME})
    under = under_table({"a": TINY})
    assert scaling.framework_scaler(keras_table())[0] is True
    plain = keras_table(mixed_optimizer="Adam")  # the policy did not add a scaler
    assert scaling.framework_scaler(plain)[0] is False
    assert scaling.mp24(runs, under, plain).verdict == "nuanced"
    assert "one line is not enough for fp16" in scaling.mp24(runs, under, plain).reason
    failed = keras_table(mixed_outcome="AttributeError")
    assert scaling.framework_scaler(failed) == (
        None, "chapter 09's Keras runs hold no trained mixed_float16 run")
    with pytest.raises(ValueError, match="optimizer"):
        scaling.framework_scaler(keras_table().drop(columns="optimizer"))
    with pytest.raises(ValueError, match="16-mixed, dynamic"):
        scaling.mp24(runs[runs.config != scaling.DYNAMIC], under, keras_table())


def test_mp24_one_seed_is_not_testable_and_missing_configs_are_named():
    runs = loss_runs(["a"], {"bf16-mixed": SAME, scaling.NONE: SAME})
    one = runs[runs.seed == 0]
    assert scaling.mp24(one, under_table({"a": UNDERFLOW[:1]})).verdict == "not testable here"
    with pytest.raises(ValueError, match="bf16-mixed"):
        scaling.mp24(runs[runs.config != "bf16-mixed"], under_table({"a": TINY}))
