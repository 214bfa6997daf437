"""Chapter 10's report: figures from toy measurements have labelled axes and the hardware;
tables and glued texts come out of the tables they are given."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

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


# --- what the figures draw, from small synthetic tables ----------------------------------------

BASE = {"fp32 LU": 1e-6, "fp64 LU": 1e-15, "refinement": 2e-15}


def _runs() -> pd.DataFrame:
    """3 seeds at two condition numbers; the refinement's error is not finite in one run."""
    rows = [{"method": m, "kappa": k, "seed": s, "forward_error": e * k * 10.0**s,
             "backward_error": e * 4.0**s}
            for m, e in BASE.items() for k in (1e9, 10.0) for s in (0, 1, 2)]
    t = pd.DataFrame(rows)
    t.loc[(t.method == "refinement") & (t.kappa == 1e9) & (t.seed == 0), "forward_error"] = np.inf
    return t


def _geometric(values) -> tuple[float, float, float]:
    """Geometric mean and 95 % interval (Student-t on log10), computed here; NaN if any value
    is not finite."""
    x = np.log10(np.asarray(values, dtype=float))
    if not np.isfinite(x).all():
        return np.nan, np.nan, np.nan
    half = sps.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return 10 ** x.mean(), 10 ** (x.mean() - half), 10 ** (x.mean() + half)


def test_plot_errors_draws_geometric_means_intervals_and_guides():
    runs = _runs()
    fig = report.plot_errors(runs, "test CPU")
    ax_f, ax_b = fig.axes[:2]
    for ax, value in ((ax_f, "forward_error"), (ax_b, "backward_error")):
        bars = {c.get_label(): c for c in ax.containers}
        assert len(bars) == 3
        for method, style in report.STYLE.items():
            line, _, (vertical, *_) = bars[style["label"]].lines
            x, y = (np.asarray(v, dtype=float) for v in line.get_data())
            seg = [np.asarray(a, dtype=float) for a in vertical.get_segments()]
            np.testing.assert_allclose(x, [10.0, 1e9])  # sorted by kappa
            for i, k in enumerate((10.0, 1e9)):
                d = runs[(runs.method == method) & (runs.kappa == k)]
                g, low, high = _geometric(d[value])
                np.testing.assert_allclose(y[i], g, rtol=1e-9)  # NaN where a run is not finite
                if np.isfinite(g):
                    np.testing.assert_allclose(seg[i], [[k, low], [k, high]], rtol=1e-9)
                else:  # no bar: the run is marked instead (below)
                    assert seg[i].size == 0
    k = np.array([10.0, 1e9])
    guides = {h.get_label(): h for h in ax_f.get_lines()}
    np.testing.assert_allclose(guides["κ · u(fp32)"].get_ydata(), k * 2.0**-24)
    np.testing.assert_allclose(guides["κ · u(fp64)"].get_ydata(), k * 2.0**-53)
    np.testing.assert_allclose(guides["κ · u(fp64)"].get_xdata(), k)
    levels = {h.get_label(): h.get_ydata()[0] for h in ax_b.get_lines()}
    assert levels["u(fp32)"] == 2.0**-24 and levels["u(fp64)"] == 2.0**-53
    # the non-finite refinement run: an x at kappa 1e9, on the forward panel only
    (mark,) = [h for h in ax_f.get_lines() if h.get_marker() == "x"]
    assert list(mark.get_xdata()) == [1e9] and list(mark.get_ydata()) == [1.0]
    assert mark.get_color() == report.STYLE["refinement"]["color"]
    assert not [h for h in ax_b.get_lines() if h.get_marker() == "x"]
    np.testing.assert_allclose(ax_f.get_xlim(), [5.0, 2e9])
    plt.close(fig)


def test_plot_history_draws_each_kappas_error_per_step_for_the_seed():
    rows = [{"seed": s, "kappa": k, "iteration": i, "forward_error": k * 1e-8 * 0.1**i + s}
            for s in (0, 1) for k in (10.0, 1e8) for i in range(4)]
    history = pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # steps out of order
    history.loc[(history.seed == 0) & (history.kappa == 1e8) & (history.iteration == 2),
                "forward_error"] = np.inf
    fig = report.plot_history(history, 0, "test CPU")
    lines = {h.get_label(): h for h in fig.axes[0].get_lines()}
    assert set(lines) == {"κ = 10", "κ = 1e8"}
    for label, k in (("κ = 10", 10.0), ("κ = 1e8", 1e8)):
        want = [k * 1e-8 * 0.1**i for i in range(4)]
        if k == 1e8:
            want[2] = np.nan  # a non-finite error is a gap, not a point at infinity
        np.testing.assert_allclose(np.asarray(lines[label].get_xdata(), dtype=float), range(4))
        np.testing.assert_allclose(np.asarray(lines[label].get_ydata(), dtype=float), want)
    assert lines["κ = 1e8"].get_linestyle() == "--"  # kappa u(fp32) >= 1
    assert lines["κ = 10"].get_linestyle() == "-"
    plt.close(fig)
