"""Chapter 02's report: figures from small synthetic histories count diverged runs."""

from __future__ import annotations

import math

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd

from precisionlab.study.reports import mixed as report

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


def _updates() -> pd.DataFrame:
    rows = []
    cases = [("32-true, lr", "32-true", 1e-7), ("bf16-mixed, lr", "bf16-mixed", 1e-2),
             ("16-mixed, lr", "16-mixed", 1e-3), ("32-true, lr/2", "32-true", None)]
    for seed in range(3):
        for step, p, err in cases:
            rows.append({"seed": seed, "step": step, "precision": p,
                         "out_rel_err_vs_fp64": err, "grad_rel_err_vs_fp64": err})
    return pd.DataFrame(rows)


def test_error_figure_and_facts():
    fig = report.plot_errors(_updates(), "test CPU")
    assert fig.axes[0].get_yscale() == "log" and fig.axes[0].get_ylabel()
    assert all(ax.get_xlabel() for ax in fig.axes)
    assert any("test CPU" in t.get_text() for t in fig.texts)
    plt.close(fig)
    assert report.error_facts(_updates())["mp20_out_bf16"] == "0.01"


def test_update_loss_figure_draws_both_counts_per_amp_precision():
    pure = _history("precision", ["16-mixed", "bf16-mixed", "16-true"]).assign(
        skipped=False, lost_fp16_scheme=0.2)
    pure = pd.concat([pure, pure.assign(optimizer="adam")], ignore_index=True)
    fig = report.plot_update_losses(pure, "test CPU")
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "16-mixed: applied in fp16, cast back" in labels and len(labels) == 4
    assert fig.axes[0].get_ylabel() and fig.axes[0].get_xlabel()
    plt.close(fig)


def test_pure_table_and_facts_pair_by_seed():
    rows = [{"task": "digits", "seed": s, "precision": p, "diverged": p == "16-true",
             "test_metric": {"16-true": 0.1, "bf16-true": 0.9}.get(p, 0.95) + 0.001 * s}
            for s in range(3) for p in ["32-true", "16-mixed", "bf16-mixed", "16-true",
                                        "bf16-true"]]
    final = pd.DataFrame(rows)
    times = pd.DataFrame({"precision": ["32-true", "16-true", "bf16-true"],
                          "ratio_to_32-true": [1.0, 1.5, 1.25]})
    t = report.pure_table(final, times).set_index("precision")
    assert t.loc["16-true", "diverged"] == 3 and t.loc["bf16-true", "time/step vs 32-true"] == 1.25
    assert t.loc["bf16-true", "acc - 32-true (pp)"].startswith("-5")
    facts = report.pure_facts(final)
    assert facts["mp26_higher"] == "nowhere" and "16-true on digits" in facts["mp26_lower"]
    assert facts["mp26_fp16_diverged"] == "3 of 3"
    assert report.speed_facts(times)["mp26_time_16-true"] == "1.50"


def test_autocast_pivot_shows_each_ops_output_dtype_by_autocast_and_input():
    probe = pd.DataFrame({"op": ["mm", "mm", "softmax", "softmax"],
                          "autocast": ["bf16", "bf16", "bf16", "bf16"],
                          "input": ["fp32", "fp16", "fp32", "fp16"],
                          "output": ["bf16", "bf16", "fp32", "fp32"]})
    table = report.autocast_pivot(probe)
    assert list(table.index) == ["mm", "softmax"]
    assert list(table.columns) == [("bf16", "fp32"), ("bf16", "fp16")]
    assert table.loc["softmax", ("bf16", "fp16")] == "fp32"
