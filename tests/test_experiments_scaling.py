"""Chapter 03's experiments at toy sizes: the tables they return and what reads them."""

from __future__ import annotations

import math

from precisionlab.study.experiments import scaling


def test_configs_and_labels():
    names = [scaling.label(p, s) for p, s in scaling.configs([8, 16])]
    assert names == ["32-true", "bf16-mixed", scaling.NONE, "16-mixed, 2^8", "16-mixed, 2^16",
                     scaling.DYNAMIC, "16-true"]


def test_sweep_is_tidy_one_row_per_run(scaling_measured):
    runs, traces, _ = scaling_measured
    assert len(runs) == 2 * len(scaling.configs([8]))
    assert set(runs.seed) == {0, 1} and set(runs.task) == {"transformer"}
    none = runs[runs.config == scaling.NONE].iloc[0]
    assert none.log2_scale == 0 and none.scaler == "none"
    assert math.isnan(runs[runs.config == "32-true"].log2_scale.iloc[0])
    assert (runs.steps == 3).all() and runs.n_eval.iloc[0] > 0
    assert set(traces.seed) == {0, 1} and len(traces) == 2 * 3
    fp32 = runs[runs.config == "32-true"]
    assert (fp32.nonfinite_steps == 0).all() and fp32.first_nonfinite.isna().all()


def test_sweep_counts_the_steps_a_16_true_adam_run_goes_non_finite(scaling_measured):
    runs, *_ = scaling_measured
    cast = runs[runs.config == "16-true"]
    assert (cast.precision == "16-true").all() and len(cast) == 2
    # Adam's eps is 0 in fp16, so the first update divides by zero wherever the second moment
    # underflowed: the loss of step 2 is already NaN, and the NaN weights stay NaN
    assert (cast.first_nonfinite == 2).all()
    assert (cast.first_nonfinite + cast.nonfinite_steps == cast.steps + 1).all()


def test_seeds_draw_their_own_split():
    a = scaling.load("transformer", 0, tf_context=8)
    b = scaling.load("transformer", 1, tf_context=8)
    assert not (a.x_train[:5] == b.x_train[:5]).all()


def test_underflow_rows_per_checkpoint_scale_and_seed(scaling_measured):
    *_, under = scaling_measured
    assert len(under) == 2 * 2 * 2  # seeds x checkpoints x scales
    assert set(under.step) == {0, 2} and set(under.log2_scale) == {0.0, 8.0}

