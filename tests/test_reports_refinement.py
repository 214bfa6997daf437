"""Chapter 10's report: figures from toy measurements have labelled axes and the hardware;
tables and glued texts come out of the tables they are given."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest

from precisionlab.study.experiments import refinement as ir
from precisionlab.study.reports import refinement as report

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def measured():
    """Toy runs: 2 seeds, a converging and a stalling condition number, and a timing table."""
    runs, history = ir.solve_all([0, 1], [10.0, 1e9], n=24)
    times = ir.timings(16, 100.0, seed=0, repeats=5, warmup=0)
    return runs, history, times


def test_figures_have_labelled_axes_and_the_hardware(measured):
    runs, history, _ = measured
    for fig in (report.plot_errors(runs, "test CPU"), report.plot_history(history, 0, "test CPU")):
        for ax in fig.axes:
            assert ax.get_xlabel() and ax.get_ylabel()
            assert "dimensionless" in ax.get_ylabel()
        assert any("test CPU" in t.get_text() for t in fig.texts)
        plt.close(fig)


def test_a_non_finite_error_is_marked_not_hidden(measured):
    runs = measured[0].copy()
    runs.loc[(runs.method == "refinement") & (runs.kappa == 1e9), "forward_error"] = np.inf
    s = report.log_summary(runs)
    row = s[(s.method == "refinement") & (s.kappa == 1e9)].iloc[0]
    assert row.nan_runs == 2 and np.isnan(row.gmean)
    fig = report.plot_errors(runs, "test CPU")
    assert any(line.get_marker() == "x" for line in fig.axes[0].lines)
    plt.close(fig)


def test_log_summary_is_the_geometric_mean():
    import pandas as pd

    t = pd.DataFrame({"method": ["a", "a"], "kappa": [1.0, 1.0], "seed": [0, 1],
                      "forward_error": [1e-4, 1e-2]})
    row = report.log_summary(t).iloc[0]
    assert row.gmean == pytest.approx(1e-3) and row.low < 1e-3 < row.high


def test_iteration_table_has_one_row_per_kappa(measured):
    runs = measured[0]
    t = report.iteration_table(runs)
    assert list(t.index) == ["10", "1e9"]
    assert t.loc["10", "ended"] == "2 converged"
    assert t.loc["1e9", "iterations to converge"] == "–"


def test_cost_table_and_facts(measured):
    runs, _, times = measured
    steps = report.converged_steps(runs)
    assert steps == int(runs[(runs.method == "refinement") & (runs.kappa == 10.0)].steps.max())
    counts = {16: ir.flop_counts(16, steps), 24: ir.flop_counts(24, steps)}
    t = report.cost_table(times, counts)
    assert list(t.index) == [16] and t.columns[0] == "fp64 solve (ms)"
    facts = report.facts(runs, times, 24, counts)
    assert facts["ok_max"] == "10" and facts["stop_text"].startswith("From κ = 1e9 on")
    assert facts["lu_mflop"] == "0.0092" and facts["bench_n"] == "16"
    no_fail = report.facts(runs[runs.kappa == 10.0], None, 24, counts)
    assert no_fail["stop_text"].startswith("No refinement failed") and "t32" not in no_fail


def test_constants_and_kappa_text_are_exact():
    assert report.constants().splitlines()[0] == (
        "u(fp32) = 2^-24 = 5.9604645e-08; 1/u(fp32) = 16777216 (= 1.7e7)")
    assert [report.kappa_text(k) for k in (10.0, 1e7, 2.0**24, 1e10)] == [
        "10", "1e7", "1.7e7", "1e10"]
