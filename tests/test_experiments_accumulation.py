"""Chapter 04's experiments at toy sizes: the tables they return and what reads them."""

from __future__ import annotations

import matplotlib
import pytest

from precisionlab.study.experiments import accumulation as ga
from precisionlab.study.reports import accumulation as report

matplotlib.use("Agg")


def test_distances_accumulation_is_rounding_close_and_smaller_batch_is_not():
    t = ga.distances([0], ["32-true"], [1, 2], batch_size=8, hidden=[8], steps=2)
    assert set(t.comparison) == {"1-ulp nudge", "next precision up", "accumulation",
                                 "smaller batch"}
    acc = t[t.comparison == "accumulation"].rel_diff.max()
    small = t[t.comparison == "smaller batch"].rel_diff.min()
    assert acc < 1e-5 < small
    assert "k = 2" in report.distance_table(t, ["32-true"]).columns
    assert report.plot_distances(t, ["32-true"], [1, 2], 2).axes


@pytest.fixture(scope="module")
def step():
    data, model = ga.step_setup(0, tf_batch=4, tf_context=8, tf_d_model=8, tf_layers=1)
    return data, model


def test_costs_count_the_same_flops_and_fewer_activations(step):
    data, model = step
    c = ga.costs(data, model, ["32-true"], [1, 2], tf_batch=4).set_index("k")
    assert c.matmul_flops[1] == c.matmul_flops[2]
    assert c.activation_bytes[2] < c.activation_bytes[1]
    time = ga.timings(data, model, ["32-true"], [1, 2], tf_batch=4, repeats=5)
    assert len(time) == 2 * 5 and "time_ratio" in time
    assert len(report.cost_table(c.reset_index(), time)) == 2
    assert report.plot_costs(c.reset_index(), time, [1, 2]).axes


def test_gradient_errors_and_facts(step):
    errors, parts = ga.gradient_errors([0, 1], ["16-mixed", "16-true"], [1, 4], grad_batch=16,
                                       hidden=[8])
    assert len(errors) == 2 * 2 * 2 and set(parts.accumulator) == {"fp32", "fp16", "bf16"}
    assert (errors.rel_error >= 0).all()
    assert len(report.error_table(errors, parts, ["16-mixed", "16-true"])) == 2 + 3 + 1
    assert report.plot_errors(errors, parts, [1, 4], 16).axes
    data, model = step
    dist = ga.distances([0], ["32-true"], [1, 2], batch_size=8, hidden=[8], steps=1)
    costs = ga.costs(data, model, ["32-true"], [1, 2], tf_batch=4)
    time = ga.timings(data, model, ["32-true"], [1, 2], tf_batch=4, repeats=5)
    facts = report.facts(dist, costs, time, errors, parts, n_params=10)
    assert facts["ga3_16true_1"] != "not run" and facts["ga2_params"] == "10"
