"""Chapter 15's report: each figure draws labelled axes, tables and glued texts say what the
tables hold (small synthetic tables, Agg backend)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from conftest import glue_names
from matplotlib.collections import PolyCollection  # noqa: E402
from plotdata import band_of, mean_interval, xy

from precisionlab.study.experiments import low_precision as lp  # noqa: E402
from precisionlab.study.reports import low_precision as report  # noqa: E402

SHIFT = {"32-true": 0.0, "bf16-mixed": 0.0, "fp8-current": 0.01, "mxfp4": 0.3,
         "bf16-true": 0.02, "16-true": math.nan, "16-true, eps 1e-4": 0.0, "bf16-kahan": 0.0}
NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "15_low_precision_training.ipynb"


def tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    runs, curves, fp8, ratios = [], [], [], []
    for seed in range(3):
        noise = [0.0, 0.004, -0.003][seed]
        for r, d in SHIFT.items():
            spec = lp.RECIPE_SPECS[r]
            # each recipe's own spread about bf16-mixed: paired differences that vary by seed
            jitter = 0.0 if r == "bf16-mixed" else 0.002 * (seed - 1)
            v = 2.0 + noise + d + 0.001 * seed + jitter
            runs.append({"seed": seed, "recipe": r, "family": spec.family, "val_loss": v,
                         "diverged": not math.isfinite(v),
                         "stalled": 0.25 if r == "bf16-true" else 0.0})
            for step in (10, 20):
                curves.append({"seed": seed, "recipe": r, "step": step,
                               "val_loss": v + 1.0 / step})
            ratios.append({"seed": seed, "recipe": r, "s_per_step": 0.01,
                           "ratio": 1.0 if r == "bf16-mixed" else 1.5 + 0.01 * seed})
            if spec.float8:
                for step in (1, 2):
                    for t in report.TENSORS:
                        fp8.append({"seed": seed, "recipe": r, "step": step, "tensor": t,
                                    "underflow": 0.01, "underflow_max": 0.02,
                                    "saturated": 0.0, "saturated_max": 0.001, "amax": 1.0})
    return (pd.DataFrame(runs), pd.DataFrame(curves), pd.DataFrame(fp8),
            pd.DataFrame(ratios))


def test_loss_table_names_outcomes_against_bf16_mixed():
    runs, *_ = tables()
    t = report.loss_table(runs)
    assert t.loc["bf16-mixed", "minus bf16-mixed (same seed)"] == "(baseline)"
    assert t.loc["fp8-current", "outcome"] == "matches"
    assert t.loc["mxfp4", "outcome"] == "worse"
    assert t.loc["16-true", "outcome"] == "diverged"
    assert t.loc["16-true", "validation loss (nats/char)"] == "diverged in 3 of 3 seeds"
    assert t.loc["bf16-true", "weights left unmoved per step (%)"] == "25"


def test_curve_figure_has_two_labelled_panels():
    runs, curves, _, _ = tables()
    fig = report.plot_curves(curves, runs, "test machine")
    ax, bx = fig.axes[:2]
    assert ax.get_ylabel() == "validation loss (nats per character)"
    assert bx.get_ylabel() == "loss minus bf16-mixed, same seed (nats per character)"
    assert ax.get_xlabel() == bx.get_xlabel() == "optimizer step"
    assert fig.texts[-1].get_text() == "Measured on: test machine"
    plt.close(fig)


def test_a_diverged_recipe_has_no_marker_where_it_has_no_value():
    runs, curves, _, _ = tables()  # 16-true is NaN at every evaluation, in every seed
    far = runs.recipe == "mxfp4"
    runs.loc[far, "val_loss"] += 1.0  # finite, but diverged by the rule (far above its pair)
    fig = report.plot_curves(curves, runs, "test machine")
    ax, bx = fig.axes[:2]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "16-true (diverged at step 10)" in labels and "mxfp4 (diverged)" in labels
    lines = {line.get_label(): line for line in ax.get_lines()}
    x, y = lines["16-true (diverged at step 10)"].get_data()
    assert len(x) == len(y) == 0
    assert not [c for c in ax.collections if c.get_offsets().size]  # no cross at the top
    right = [t.get_text() for t in bx.get_legend().get_texts()]
    assert "16-true" not in right and "mxfp4" not in right and "fp8-current" in right
    plt.close(fig)


def test_fp8_figure_and_table():
    _, _, fp8, _ = tables()
    fig = report.plot_fp8_stats(fp8, "test machine")
    assert len(fig.axes) == 6 and "%" in fig.axes[0].get_ylabel()
    assert "%" in fig.axes[3].get_ylabel()
    assert all(a.get_xlabel() == "optimizer step" for a in fig.axes[3:])
    assert fig.texts[-1].get_text() == "Measured on: test machine"
    fig.canvas.draw()
    for a in fig.axes:  # symlog axes in plain decimals, not 10^-2 in mathtext
        labels = [t.get_text() for t in a.get_yticklabels() if t.get_text()]
        assert "1" in labels and labels == [f"{float(t):g}" for t in labels]
    plt.close(fig)
    t = report.fp8_table(fp8)
    assert t.loc[("mxfp4", "input"), "underflow, mean (%)"] == "1"


def test_range_change_figure_and_facts():
    trace = lp.range_change(steps=40, jump_at=4, drop_at=12)
    fig = report.plot_range_change(trace, "test machine")
    assert all("%" in a.get_ylabel() and "step" in a.get_xlabel() for a in fig.axes[:2])
    assert fig.texts[-1].get_text() == "Measured on: test machine"
    plt.close(fig)
    f = report.range_facts(trace)
    assert f["range_case_0"] == "current" and f["range_sat_0"] == "0 %"
    assert (f["range_lag_0"], f["range_lag_1"], f["range_lag_2"]) == ("0", "16", "1")
    with pytest.raises(ValueError, match="current"):
        report.range_facts(trace[trace.case != "current"])


def test_cost_table_and_facts():
    runs, _, _, ratios = tables()
    c = report.cost_table(ratios)
    assert c.loc["bf16-mixed", "step time / bf16-mixed"] == "1 [1, 1]"
    f = report.facts(runs) | report.cost_facts(ratios)
    assert f["fp8_matching"] == "fp8-current"
    assert f["fp8_not_matching"] == "mxfp4 (worse)"
    assert f["diverged"] == "16-true" and f["n_seeds"] == "3"
    assert f["outcome_bf16_kahan"] == "matches" and f["stalled_bf16_true"] == "25 %"
    assert f["cost_within"] == "within" and f["cost_worst"].startswith("1.51x")
    assert f["dloss_16_true"] == "not finite" and f["ratio_bf16_mixed"] == "1 [1, 1]"
    assert report.cost_facts(ratios[ratios.recipe == "bf16-mixed"])["cost_within"] == \
        "not measured against"


@pytest.mark.parametrize("recipe", lp.RECIPES)
def test_every_recipe_has_a_style(recipe):
    color, marker, line = report.style(recipe)
    assert color.startswith("#") and marker and line
    assert color in report.FAMILY_COLORS.values()  # its family's, not the fallback grey


def test_no_two_recipes_look_alike():
    styles = [report.style(r) for r in lp.RECIPES]
    assert len(set(styles)) == len(lp.RECIPES)
    assert report.style("16-true, eps 1e-4")[0] != report.style("16-true")[0]


def test_facts_name_every_recipe_by_a_safe_glue_key():
    runs, _, _, ratios = tables()
    f = report.facts(runs) | report.cost_facts(ratios)
    assert all(re.fullmatch(r"[A-Za-z0-9_]+", key) for key in f)
    assert f["outcome_16_true_eps_1e_4"] == "matches"
    assert {"dloss_16_true_eps_1e_4", "stalled_16_true_eps_1e_4",
            "ratio_16_true_eps_1e_4"} <= set(f)
    runs.loc[runs.recipe == "16-true, eps 1e-4", "val_loss"] = math.nan
    assert report.facts(runs)["diverged"] == "16-true; 16-true, eps 1e-4"  # one item each


def test_every_name_the_chapters_prose_cites_is_glued():
    cited, glued = glue_names(NOTEBOOK)
    runs = pd.DataFrame([{"seed": seed, "recipe": r, "family": lp.RECIPE_SPECS[r].family,
                          "val_loss": 2.0 + 0.001 * seed * (i + 1), "diverged": False,
                          "stalled": 0.1} for seed in range(3)
                         for i, r in enumerate(lp.RECIPES)])  # every recipe the chapter trains
    ratios = runs.assign(s_per_step=0.01, ratio=1.0 + 0.01 * runs.seed)
    trace = lp.range_change(steps=40, jump_at=4, drop_at=12)
    glued |= set(report.facts(runs) | report.cost_facts(ratios) | report.range_facts(trace)
                 | report.setting_texts(96, 16, 1, 32, 16, 1024, 16))
    assert cited and sorted(cited - glued) == []


def test_setting_texts_format_the_settings_and_constants():
    t = report.setting_texts(1200, 16, 2, 64, 8, 1048576, 16)
    assert t == {"steps": "1,200", "batch": "16",
                 "shape": "2 block(s) of width 64, 8-character context",
                 "loss_margin": f"{report.rules.LOSS_MARGIN:g} nats",
                 "far_above": f"{report.rules.FAR_ABOVE:.3g} nats", "history": "16",
                 "jump": f"{lp.JUMP:g}", "cost_limit": "3x", "rounding_n": "1,048,576"}


def test_recipe_lines_say_dtypes_swap_rule_and_held_eps():
    configs = pd.DataFrame([
        {"recipe": "16-true", "precision": "16-true", "param": "float16", "compute": "float16",
         "float8": "", "pure16": "", "eps": 1e-8, "held": 0.0},
        {"recipe": "mxfp4", "precision": "bf16-mixed", "param": "float32",
         "compute": "bfloat16", "float8": "mxfp4", "pure16": None, "eps": 1e-8,
         "held": 9.99999993922529e-09},
        {"recipe": "bf16-kahan", "precision": "bf16-mixed", "param": "float32",
         "compute": "bfloat16", "float8": math.nan, "pure16": "kahan", "eps": 1e-4,
         "held": 1e-4}])
    assert report.recipe_lines(configs) == [
        "          16-true: Trainer    16-true, parameters  float16, matmuls  float16, "
        "nn.Linear, update: the policy's, Adam eps 1e-08 -> 0",
        "            mxfp4: Trainer bf16-mixed, parameters  float32, matmuls bfloat16, "
        "Float8Linear mxfp4, update: the policy's, Adam eps 1e-08 -> 1e-08",
        "       bf16-kahan: Trainer bf16-mixed, parameters  float32, matmuls bfloat16, "
        "nn.Linear, update: kahan rounding to bf16, Adam eps 0.0001 -> 0.0001"]


def test_format_lines_and_kept_line():
    assert report.format_lines(["fp8_e4m3fn", "fp4_e2m1"]) == [
        "fp8_e4m3fn: 8 bits, largest 448, smallest subnormal 0.00195312",
        "  fp4_e2m1: 4 bits, largest 6, smallest subnormal 0.5"]
    assert len(report.format_lines()) == 3
    assert report.kept_line(["blocks.0.ff1", "blocks.0.ff2"], ["embed", "head"]) == (
        "FP8/MX recipes convert 2 Linears (blocks.0.ff1, blocks.0.ff2) and keep embed, head in "
        "high precision")


# -- the data drawn --------------------------------------------------------------------------------

BASE = {10: [3.0, 3.4, 3.1], 20: [2.5, 2.8, 2.6]}  # bf16-mixed's loss per step, seeds 0, 1, 2
DIFF = {"fp8-current": {10: [0.01, 0.03, 0.02], 20: [0.0, -0.01, 0.004]},
        "bf16-true": {10: [0.1, 0.2, 0.12], 20: [0.05, 0.08, 0.02]}}


def test_curve_figure_draws_means_left_and_paired_differences_right():
    rows = [{"seed": s, "recipe": "bf16-mixed", "step": k, "val_loss": v[s]}
            for k, v in BASE.items() for s in range(3)]
    rows += [{"seed": s, "recipe": r, "step": k, "val_loss": BASE[k][s] + d[k][s]}
             for r, d in DIFF.items() for k in BASE for s in range(3)]
    rows += [{"seed": s, "recipe": "16-true", "step": k, "val_loss": math.nan}
             for k in BASE for s in range(3)]
    curves = pd.DataFrame(rows)
    runs = curves[curves.step == 20].drop(columns="step")
    fig = report.plot_curves(curves, runs, "test machine")
    ax, bx = fig.axes[:2]
    left = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(xy(left["bf16-mixed"]),
                               [[k, np.mean(v)] for k, v in BASE.items()])
    for r, d in DIFF.items():
        np.testing.assert_allclose(xy(left[r]),
                                   [[k, np.mean(np.add(BASE[k], d[k]))] for k in BASE])
    assert xy(left["16-true (diverged at step 10)"]).size == 0
    right = {line.get_label(): line for line in bx.get_lines() if line.get_label() in DIFF}
    bands = [c for c in bx.collections if isinstance(c, PolyCollection)]
    assert list(right) == list(DIFF) and len(bands) == 2
    for (r, d), band in zip(DIFF.items(), bands, strict=True):
        want = np.array([mean_interval(d[k]) for k in BASE])  # paired by seed, per step
        np.testing.assert_allclose(xy(right[r]), np.column_stack([list(BASE), want[:, 0]]),
                                   atol=1e-12)
        x, low, high = band_of(band)
        np.testing.assert_allclose(x, list(BASE))
        np.testing.assert_allclose(low, want[:, 1], atol=1e-12)
        np.testing.assert_allclose(high, want[:, 2], atol=1e-12)
    (span,) = [p for p in bx.patches if p.get_label().startswith("margin")]
    np.testing.assert_allclose([span.get_y(), span.get_y() + span.get_height()],
                               [-0.05, 0.05])  # chapter 12's margin, 0.05 nats
    plt.close(fig)


def test_fp8_figure_draws_percent_underflow_and_saturation_per_step_mean_over_seeds():
    def under(r, t, k, s):
        kind = 1 + report.TENSORS.index(t)
        return 0.001 * (k + 1) * (1 + s) * (2 if r == "mxfp4" else 1) * kind

    def sat(r, t, k, s):
        return 0.0005 * k * s + (0.01 if r == "mxfp4" else 0.0)

    fp8 = pd.DataFrame([{"seed": s, "recipe": r, "step": k, "tensor": t,
                         "underflow": under(r, t, k, s), "saturated": sat(r, t, k, s)}
                        for r in ("fp8-current", "mxfp4") for s in range(2)
                        for k in (1, 2, 4) for t in report.TENSORS])
    fig = report.plot_fp8_stats(fp8, "test machine")
    for i, f in enumerate((under, sat)):
        for j, t in enumerate(report.TENSORS):
            lines = fig.axes[3 * i + j].get_lines()
            assert len(lines) == 2
            for line, r in zip(lines, ("fp8-current", "mxfp4"), strict=True):
                want = [[k, 100 * np.mean([f(r, t, k, s) for s in range(2)])] for k in (1, 2, 4)]
                np.testing.assert_allclose(xy(line), want)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["fp8-current",
                                                                            "mxfp4"]
    plt.close(fig)


def test_range_change_figure_draws_each_case_and_shades_the_larger_range():
    steps = np.arange(10)
    scale = np.where((steps >= 3) & (steps <= 6), report.JUMP, 1.0)
    frac = {"current": (steps * 0.0, 0.01 * steps),
            "delayed": (0.02 * (scale > 1), 0.001 * steps ** 2)}
    trace = pd.DataFrame([{"case": c, "step": k, "input_scale": scale[k], "saturated": sat[k],
                           "underflow": und[k], "scale": 1.0}
                          for c, (sat, und) in frac.items() for k in steps])
    fig = report.plot_range_change(trace, "test machine")
    for ax, col in zip(fig.axes[:2], (0, 1), strict=True):
        (span,) = ax.patches
        np.testing.assert_allclose([span.get_x(), span.get_x() + span.get_width()], [2.5, 6.5])
        lines = {line.get_label(): line for line in ax.get_lines()}
        for c, fractions in frac.items():
            np.testing.assert_allclose(xy(lines[c]), np.column_stack([steps,
                                                                      100 * fractions[col]]))
    plt.close(fig)
