"""Chapter 02's report: figures from small synthetic histories count diverged runs."""

from __future__ import annotations

import math

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd

from precisionlab.reports import mixed as report

matplotlib.use("Agg")


def _history(by: str, groups: list[str]) -> pd.DataFrame:
    rows = [{by: g, "seed": s, "step": t, "loss": math.nan if (g == groups[-1] and s == 0)
             else 1.0 / (t + 1), "smooth": 1.0 / (t + 1), "stalled": 0.1, "test_metric": 0.5,
             "test_loss": 1.0, "task": "digits", "optimizer": "sgd"}
            for g in groups for s in range(3) for t in range(4)]
    return pd.DataFrame(rows)


def test_figures_have_labelled_axes_the_hardware_and_count_divergence():
    runs = _history("precision", ["32-true", "16-true"])
    fig = report.plot_precision_runs(pd.concat([runs, runs.assign(task="mnist1d")]), "test CPU")
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "16-true (1/3 runs diverged)" in labels
    for f in (fig, report.plot_lr_curves(_history("run", ["a", "b"]), 0.05, "test CPU")):
        assert any(ax.get_xlabel() and ax.get_ylabel() for ax in f.axes)
        assert any("test CPU" in t.get_text() for t in f.texts)
        plt.close(f)


def test_overhead_facts_say_whether_the_target_was_met():
    t = pd.DataFrame({"candidate": ["plain loop", "Trainer"] * 2,
                      "precision": ["32-true"] * 2 + ["bf16-mixed"] * 2,
                      "ratio_to_plain loop": [1.0, 1.033, 1.0, 1.01]})
    facts = report.overhead_facts(t, target=1.03)
    assert facts["overhead_32_met"] == "missed" and facts["overhead_bf16_met"] == "met"
    assert facts["overhead_32"] == "1.033" and facts["overhead_target"] == "1.03"


def test_bench_facts():
    assert report.bench_facts(8, 4, 5, 2)["bench_steps_text"] == "2"
