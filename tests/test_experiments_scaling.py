"""Chapter 03's experiments at toy sizes: the tables they return and what reads them."""

from __future__ import annotations

import math

from precisionlab.experiments import scaling


def test_configs_and_labels():
    names = [scaling.label(p, s) for p, s in scaling.configs([8, 16])]
    assert names == ["32-true", "bf16-mixed", scaling.NONE, "16-mixed, 2^8", "16-mixed, 2^16",
                     scaling.DYNAMIC]


def test_sweep_is_tidy_one_row_per_run(scaling_measured):
    runs, traces, _ = scaling_measured
    assert len(runs) == 2 * len(scaling.configs([8]))
    assert set(runs.seed) == {0, 1} and set(runs.task) == {"transformer"}
    none = runs[runs.config == scaling.NONE].iloc[0]
    assert none.log2_scale == 0 and none.scaler == "none"
    assert math.isnan(runs[runs.config == "32-true"].log2_scale.iloc[0])
    assert (runs.steps == 3).all() and runs.n_eval.iloc[0] > 0
    assert set(traces.seed) == {0, 1} and len(traces) == 2 * 3


def test_seeds_draw_their_own_split():
    a = scaling.load("transformer", 0, tf_context=8)
    b = scaling.load("transformer", 1, tf_context=8)
    assert not (a.x_train[:5] == b.x_train[:5]).all()


def test_underflow_rows_per_checkpoint_scale_and_seed(scaling_measured):
    *_, under = scaling_measured
    assert len(under) == 2 * 2 * 2  # seeds x checkpoints x scales
    assert set(under.step) == {0, 2} and set(under.log2_scale) == {0.0, 8.0}

