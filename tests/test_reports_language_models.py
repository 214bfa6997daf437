"""Chapter 12's report: table, facts and figures from toy measurements."""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from conftest import glue_names
from matplotlib.collections import PathCollection, PolyCollection  # noqa: E402
from matplotlib.container import ErrorbarContainer  # noqa: E402
from plotdata import band_of, mean_interval

from precisionlab.study.experiments import language_models as lm  # noqa: E402
from precisionlab.study.reports import language_models as report  # noqa: E402

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "12_language_model_training.ipynb"


def toy() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    runs, curves, ratios = [], [], []
    for s in range(3):
        for p, shift in [("32-true", 0.0), ("bf16-mixed", 0.01), ("16-true", math.nan)]:
            v = 2.0 + 0.01 * s + shift
            runs.append({"seed": s, "precision": p, "val_loss": v, "val_perplexity": math.exp(v),
                         "skipped_steps": 0, "diverged": math.isnan(v)})
            ratios.append({"seed": s, "precision": p, "ratio": 1.0 if p == "32-true" else 3.0 + s})
            for step in (10, 20):
                curves.append({"seed": s, "precision": p, "step": step,
                               "val_loss": v + 1 / step})
    return pd.DataFrame(runs), pd.DataFrame(curves), pd.DataFrame(ratios)


def test_table_and_facts_pair_by_seed_and_show_diverged_runs():
    runs, _, ratios = toy()
    table = report.quality_table(runs, ratios)
    assert list(table.index) == ["32-true", "bf16-mixed", "16-true"]
    assert table.loc["16-true", "validation loss (nats/char)"] == "diverged in 3 of 3 seeds"
    assert table.loc["bf16-mixed", "loss minus 32-true (same seed)"].endswith("nats (n=3)")
    facts = report.facts(runs, ratios)
    assert facts["diverged"] == "16-true (3 of 3 seeds)" and facts["n_seeds"] == "3"
    assert facts["ratio_bf16_mixed"].startswith("3.91 [") and facts["dloss_16_true"] == "diverged"


def finite_points(line) -> list[tuple[float, float]]:
    x, y = (np.asarray(a, dtype=float) for a in line.get_data())
    return [(a, b) for a, b in zip(x, y, strict=True) if np.isfinite(a) and np.isfinite(b)]


def test_curves_label_their_axes_and_name_the_hardware():
    runs, curves, _ = toy()
    fig = report.plot_curves(curves, runs, "test machine")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "validation loss (nats per character)"
    assert ax.get_xlabel() == "optimizer step"
    assert fig.texts[-1].get_text() == "Measured on: test machine"
    plt.close(fig)


def test_a_diverged_precision_has_no_marker_where_it_has_no_value():
    runs, curves, _ = toy()  # 16-true is NaN at every evaluation, in every seed
    fig = report.plot_curves(curves, runs, "test machine")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["32-true", "bf16-mixed", "16-true (diverged at step 10)"]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert finite_points(lines["16-true (diverged at step 10)"]) == []
    assert len(finite_points(lines["32-true"])) == 2
    assert not [c for c in ax.collections if c.get_offsets().size and
                not isinstance(c, PolyCollection)]  # no cross or dot drawn on its own
    plt.close(fig)


def test_a_precision_that_turns_nonfinite_stops_at_its_last_finite_step():
    runs, curves, _ = toy()
    bf = curves.precision == "bf16-mixed"
    curves.loc[bf & (curves.step == 20), "val_loss"] = math.nan  # every seed, from step 20
    curves.loc[bf & (curves.seed == 2), "val_loss"] = math.nan  # seed 2 from step 10
    fig = report.plot_curves(curves, runs, "test machine")
    ax = fig.axes[0]
    label = "bf16-mixed (diverged at step 10 (seed 2), 20 (seeds 0, 1))"
    assert label in [t.get_text() for t in ax.get_legend().get_texts()]
    line = next(x for x in ax.get_lines() if x.get_label() == label)
    assert [x for x, _ in finite_points(line)] == [10.0]
    plt.close(fig)


def test_ratio_figure_labels_its_log_axis_in_plain_decimals():
    _, _, ratios = toy()
    fig = report.plot_ratios(ratios, "test machine")
    ax = fig.axes[0]
    assert "ratio" in ax.get_ylabel() and ax.get_xlabel() == "precision"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["bf16-mixed", "16-true"]
    assert fig.texts[-1].get_text() == "Measured on: test machine"
    fig.canvas.draw()
    lo, hi = ax.get_ylim()
    shown = [t.get_text() for t in ax.get_yticklabels() if lo <= t.get_position()[1] <= hi]
    assert len(shown) >= 4 and shown == [f"{float(t):g}" for t in shown]  # plain decimals
    assert "1" in shown and not any(t.get_text() for t in ax.yaxis.get_minorticklabels())
    plt.close(fig)


def every_recipe() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Toy runs, curves and ratios of every recipe chapter 12 trains: naive 16-true diverges in
    every seed, the working pure-fp16 recipe in one."""
    runs, curves, ratios = [], [], []
    for s in range(3):
        for i, p in enumerate(lm.RECIPES):
            bad = p == "16-true" or (p == "16-true, eps 1e-4" and s == 2)
            v = math.nan if bad else 2.0 + 0.01 * s + 0.002 * i * (s + 1)
            runs.append({"seed": s, "precision": p, "val_loss": v, "val_perplexity": math.exp(v),
                         "skipped_steps": 0, "diverged": bad})
            ratios.append({"seed": s, "precision": p, "ratio": 1.0 + 0.1 * i + 0.01 * s})
            for step in (10, 20):
                curves.append({"seed": s, "precision": p, "step": step,
                               "val_loss": v + 1 / step})
    return pd.DataFrame(runs), pd.DataFrame(curves), pd.DataFrame(ratios)


def test_every_recipe_draws_in_its_own_colour_marker_and_line():
    runs, curves, _ = every_recipe()
    assert report.STYLES["16-true, eps 1e-4"] != report.STYLES["16-true"]
    fig = report.plot_curves(curves, runs, "test machine")
    lines = [line for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")]
    drawn = {line.get_label().split(" (")[0]: (matplotlib.colors.to_hex(line.get_color()),
                                              line.get_marker(), line.get_linestyle())
             for line in lines}
    assert set(drawn) == set(lm.RECIPES)
    assert len(set(drawn.values())) == len(drawn)  # no two recipes look alike
    assert drawn["16-true, eps 1e-4"][0] == report.COLORS["16-true, eps 1e-4"].lower()
    for p in lm.RECIPES:  # none falls back to the default colour or style
        assert p in report.COLORS and p in report.STYLES
    plt.close(fig)


def test_facts_name_every_recipe_by_a_safe_glue_key():
    assert report.glue_key("16-true, eps 1e-4") == "16_true_eps_1e_4"
    assert report.glue_key("bf16-mixed") == "bf16_mixed"
    runs, _, ratios = every_recipe()
    facts = report.facts(runs, ratios)
    assert all(re.fullmatch(r"[A-Za-z0-9_]+", key) for key in facts)
    assert {"ppl_16_true_eps_1e_4", "ratio_16_true_eps_1e_4",
            "dloss_16_true_eps_1e_4"} <= set(facts)
    # a label holding a comma stays one item of the list
    assert facts["diverged"] == "16-true (3 of 3 seeds); 16-true, eps 1e-4 (1 of 3 seeds)"


def test_every_name_the_chapters_prose_cites_is_glued():
    cited, glued = glue_names(NOTEBOOK)
    runs, _, ratios = every_recipe()
    glued |= set(report.facts(runs, ratios))
    assert cited and sorted(cited - glued) == []


# -- the data drawn --------------------------------------------------------------------------------

LOSS = {  # (precision, step) -> val_loss of seeds 0, 1, 2
    ("32-true", 10): [3.0, 3.2, 3.7], ("32-true", 20): [2.5, 2.6, 2.4],
    ("bf16-mixed", 10): [3.1, 3.3, 3.2], ("bf16-mixed", 20): [2.55, 2.7, math.nan],
}


def test_curves_draw_the_mean_over_finite_seeds_and_its_interval_band():
    curves = pd.DataFrame([{"seed": s, "precision": p, "step": step, "val_loss": v[s]}
                           for (p, step), v in LOSS.items() for s in range(3)])
    runs = curves[curves.step == 20].drop(columns="step")
    fig = report.plot_curves(curves, runs, "test machine")
    ax = fig.axes[0]
    lines = {line.get_label().split(" (")[0]: line for line in ax.get_lines()}
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    for p, band in zip(("32-true", "bf16-mixed"), bands, strict=True):
        finite = [[x for x in LOSS[p, step] if math.isfinite(x)] for step in (10, 20)]
        want = np.array([mean_interval(v) for v in finite])  # bf16-mixed: 2 seeds at step 20
        np.testing.assert_allclose(lines[p].get_xdata(), [10, 20])
        np.testing.assert_allclose(lines[p].get_ydata(), want[:, 0])
        x, low, high = band_of(band)
        np.testing.assert_allclose(x, [10, 20])
        np.testing.assert_allclose(low, want[:, 1])
        np.testing.assert_allclose(high, want[:, 2])
        assert matplotlib.colors.same_color(band.get_facecolor()[0][:3],
                                            lines[p].get_color())
    plt.close(fig)


def test_ratio_figure_draws_each_seed_and_the_geometric_mean_with_its_interval():
    r = {"bf16-mixed": [1.1, 0.9, 1.3], "16-true": [4.0, 5.0, 3.0]}
    ratios = pd.DataFrame([{"seed": s, "precision": p, "ratio": 1.0 if p == "32-true"
                            else r[p][s]} for p in ("32-true", "bf16-mixed", "16-true")
                           for s in range(3)])
    fig = report.plot_ratios(ratios, "test machine")
    ax = fig.axes[0]
    dots = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(dots) == 2  # 32-true, the reference, draws no dots
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    for i, (p, d, bar) in enumerate(zip(("bf16-mixed", "16-true"), dots, bars, strict=True)):
        np.testing.assert_allclose(d.get_offsets(),
                                   np.column_stack([[i - 0.1, i, i + 0.1], r[p]]))
        mean, low, high = (math.exp(v) for v in mean_interval(np.log(r[p])))
        np.testing.assert_allclose(mean, np.prod(r[p]) ** (1 / 3))  # the geometric mean
        np.testing.assert_allclose(np.asarray(bar.lines[0].get_xydata(), dtype=float),
                                   [[i, mean]])
        (segment,) = bar.lines[2][0].get_segments()
        np.testing.assert_allclose(segment, [[i, low], [i, high]])
    (one,) = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    np.testing.assert_allclose(np.asarray(one.get_ydata(), dtype=float), 1.0)  # 32-true's
    plt.close(fig)
