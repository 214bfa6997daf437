"""Chapter 12's report: table, facts and figures from toy measurements."""

from __future__ import annotations

import math

import matplotlib
import pandas as pd

from precisionlab.study.reports import language_models as report

matplotlib.use("Agg")


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


def test_figures_label_their_axes_and_mark_divergence():
    runs, curves, ratios = toy()
    fig = report.plot_curves(curves, runs, "test machine")
    ax = fig.axes[0]
    assert "validation loss" in ax.get_ylabel() and ax.get_xlabel() == "optimizer step"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "16-true (diverged in 3 seeds)" in labels and "32-true" in labels
    fig2 = report.plot_ratios(ratios, "test machine")
    ax2 = fig2.axes[0]
    assert "ratio" in ax2.get_ylabel()
    assert [t.get_text() for t in ax2.get_xticklabels()] == ["bf16-mixed", "16-true"]
