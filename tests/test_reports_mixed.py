"""Chapter 02's report: figures from small synthetic histories count diverged runs."""

from __future__ import annotations

import math

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from numpy.testing import assert_allclose
from scipy import stats as sps

from precisionlab.study.reports import mixed as report

matplotlib.use("Agg")


def _mean_ci(values) -> tuple[float, float, float]:
    """Mean and 95 % Student-t interval of `values`, computed here for the expected data."""
    v = np.asarray(values, dtype=float)
    half = sps.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    return v.mean(), v.mean() - half, v.mean() + half


def _band_edges(fill) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fill_between polygon as (x, lowest y, highest y) per distinct x."""
    v = fill.get_paths()[0].vertices
    xs = np.unique(v[:, 0])
    return (xs, np.array([v[v[:, 0] == x, 1].min() for x in xs]),
            np.array([v[v[:, 0] == x, 1].max() for x in xs]))


def _check_band(line, fill, part: pd.DataFrame, y: str, scale: float = 1.0) -> None:
    """`line` is the mean over seeds of `part[y]` per step, times `scale`, and `fill` its 95 %
    interval, both computed here from the rows; a NaN value (a diverged run's) leaves its seed
    out of that step."""
    part = part[part[y].notna()]
    steps = list(dict.fromkeys(part.step))
    want = scale * np.array([_mean_ci(part[part.step == t][y]) for t in steps])
    assert_allclose(line.get_xdata(), steps)
    assert_allclose(line.get_ydata(), want[:, 0])
    xs, low, high = _band_edges(fill)
    order = np.argsort(steps)
    assert_allclose(xs, np.asarray(steps)[order])
    assert_allclose(low, want[order, 1])
    assert_allclose(high, want[order, 2])


def _check_bands(ax, table: pd.DataFrame, y: str, by: str, groups: list[str],
                 scale: float = 1.0) -> None:
    """One line and one band per group of `by` on `ax`, in the order of `groups`."""
    assert len(ax.get_lines()) == len(ax.collections) == len(groups)
    for line, fill, g in zip(ax.get_lines(), ax.collections, groups, strict=True):
        _check_band(line, fill, table[table[by] == g], y, scale)


def _seeded(by: str, groups: list[str], offset: float = 0.0) -> pd.DataFrame:
    """Histories whose values differ per group, seed and step (so every mean and interval is
    distinct); the last group's seed 0 has a NaN training loss (a diverged run)."""
    rows = []
    for i, g in enumerate(groups):
        for s in range(3):
            for t in (0, 10, 20, 30):
                v = offset + 0.1 * (i + 1) + 0.005 * t + 0.01 * s * s * (1 + t / 10)
                rows.append({by: g, "seed": s, "step": t, "smooth": 2.0 * v, "stalled": v / 2,
                             "test_metric": v, "test_loss": 1.0, "task": "digits",
                             "optimizer": "sgd",
                             "loss": math.nan if (g == groups[-1] and s == 0) else v})
    return pd.DataFrame(rows)


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


def test_lr_curves_draw_the_seed_mean_and_interval_of_each_runs_smoothed_loss():
    runs = ["AMP, lr 0.05", "fp32, lr 0.05", "fp32, lr 0.025"]
    curves = _seeded("run", runs)
    gone = (curves.run == runs[-1]) & (curves.seed == 0) & (curves.step == 30)
    curves.loc[gone, "smooth"] = math.nan  # the diverged run's loss: the mean of seeds 1 and 2
    fig = report.plot_lr_curves(curves, 0.05, "test CPU")
    ax = fig.axes[0]
    _check_bands(ax, curves, "smooth", "run", runs)
    last = curves[(curves.run == runs[-1]) & (curves.step == 30)].smooth
    assert_allclose(ax.get_lines()[-1].get_ydata()[-1], last.iloc[1:].mean())
    assert ax.get_yscale() == "log"
    assert ax.get_legend_handles_labels()[1] == runs[:2] + ["fp32, lr 0.025 (1/3 runs diverged)"]
    plt.close(fig)


def test_precision_runs_draw_each_tasks_accuracy_in_percent_per_precision():
    precisions = ["32-true", "bf16-mixed", "16-true"]
    runs = pd.concat([_seeded("precision", precisions),
                      _seeded("precision", precisions, offset=0.3).assign(task="mnist1d")],
                     ignore_index=True)
    fig = report.plot_precision_runs(runs, "test CPU")
    for ax, task in zip(fig.axes, ["digits", "mnist1d"], strict=True):
        assert ax.get_title() == task and ax.get_ylim() == (0, 100)
        _check_bands(ax, runs[runs.task == task], "test_metric", "precision", precisions, 100)
    plt.close(fig)


def test_pure_runs_draw_the_stalled_share_in_percent_per_optimizer_and_precision():
    precisions = ["32-true", "16-true"]
    pure = pd.concat([_seeded("precision", precisions),
                      _seeded("precision", precisions, offset=0.2).assign(optimizer="adam")],
                     ignore_index=True)
    fig = report.plot_pure_runs(pure, "test CPU")
    for ax, opt in zip(fig.axes, ["sgd", "adam"], strict=True):
        assert ax.get_title() == f"{opt.upper()} on digits"
        _check_bands(ax, pure[pure.optimizer == opt], "stalled", "precision", precisions, 100)
        assert "16-true (1/3 runs diverged)" in ax.get_legend_handles_labels()[1]
    plt.close(fig)


def test_article_layer_draws_loss_and_stalled_percent_per_layer():
    layers = ["fixed fp16 layer (16-true)", "nn.Linear, 16-mixed"]
    mp14 = _seeded("layer", layers)
    fig = report.plot_article_layer(mp14, 0.5, "test CPU")
    ax1, ax2 = fig.axes
    _check_bands(ax1, mp14, "smooth", "layer", layers)
    _check_bands(ax2, mp14, "stalled", "layer", layers, scale=100)
    plt.close(fig)


def test_resolution_draws_accuracy_against_the_geometric_mid_gap_and_both_spacings():
    rows = [{"variant": v, "gap_low": lo, "gap_high": 10 * lo, "pairs": 100,
             "accuracy": 1.0 - 0.1 * i * (j == 0) - 0.02 * j}
            for i, v in enumerate(["32-true", "16-mixed", "bf16-mixed, layer in FP32Island"])
            for j, lo in enumerate([1e-6, 1e-4, 1e-2])]
    resolution = pd.DataFrame(rows)
    fig = report.plot_resolution(resolution, "test CPU")
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == 3 + 2
    for line, (name, d) in zip(lines[:3], resolution.groupby("variant", sort=False), strict=True):
        assert line.get_label() == name
        assert line.get_linestyle() == ("--" if "Island" in name else "-")
        assert_allclose(line.get_xdata(), [10**-5.5, 10**-3.5, 10**-1.5])  # sqrt(lo * 10 lo)
        assert_allclose(line.get_ydata(), 100 * d.accuracy.to_numpy())
    assert_allclose(lines[0].get_ydata(), [100, 98, 96])
    assert_allclose(lines[1].get_ydata(), [90, 98, 96])
    for line, spacing in zip(lines[3:], [2.0**-11, 2.0**-8], strict=True):  # fp16, bf16
        assert_allclose(line.get_xdata(), [spacing, spacing])
    texts = {t.get_text(): t.get_position() for t in ax.texts}
    assert_allclose(texts["fp16 spacing"], (1.1 * 2.0**-11, 52))
    assert_allclose(texts["bf16 spacing"], (1.1 * 2.0**-8, 52))
    plt.close(fig)


def test_close_pairs_draw_the_mean_interval_and_every_seed_in_percent():
    acc = {"32-true": [0.90, 0.92, 0.97], "16-mixed": [0.70, 0.74, 0.75],
           "bf16-mixed": [0.55, 0.60, 0.58], "bf16-mixed, g in FP32Island": [0.88]}
    cp = pd.DataFrame([{"variant": v, "seed": s, "test_metric": a}
                       for v, accs in acc.items() for s, a in enumerate(accs)])
    tbl = []
    for v, accs in acc.items():
        mean, low, high = _mean_ci(accs) if len(accs) > 1 else (accs[0], math.nan, math.nan)
        tbl.append({"variant": v, "mean": mean, "low": low, "high": high, "n": len(accs)})
    cp_tbl = pd.DataFrame(tbl)
    fig = report.plot_close_pairs(cp, cp_tbl, "test CPU")
    ax = fig.axes[0]
    (bars,) = ax.containers
    data_line, _, (ranges,) = bars
    means = 100 * cp_tbl["mean"].to_numpy()
    assert_allclose(np.asarray(data_line.get_xdata(), dtype=float), means)
    rows = ax.yaxis.convert_units(list(acc))  # the categorical row of each variant
    assert_allclose(data_line.get_ydata(orig=False), rows)
    seg = np.array(ranges.get_segments())
    low = 100 * cp_tbl.low.fillna(cp_tbl["mean"]).to_numpy()  # one seed: no bar
    high = 100 * cp_tbl.high.fillna(cp_tbl["mean"]).to_numpy()
    assert_allclose(seg[:, :, 0].min(axis=1), low)
    assert_allclose(seg[:, :, 0].max(axis=1), high)
    assert_allclose(seg[:, :, 1], np.column_stack([rows, rows]))
    (dots,) = ax.collections[1:]
    want = np.column_stack([100 * cp.test_metric, ax.yaxis.convert_units(list(cp.variant))])
    assert_allclose(dots.get_offsets(), want)
    plt.close(fig)


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


def test_error_figure_draws_every_seed_and_the_geometric_mean_per_precision():
    order = ["32-true", "bf16-mixed", "16-mixed"]
    out = {"32-true": [1e-7, 4e-7, 2e-7], "bf16-mixed": [1e-2, 3e-2, 9e-3],
           "16-mixed": [1e-3, 8e-3, 2e-3]}
    rows = [{"seed": s, "step": f"{p}, lr", "precision": p, "out_rel_err_vs_fp64": e,
             "grad_rel_err_vs_fp64": 10 * e} for p in order for s, e in enumerate(out[p])]
    rows += [{"seed": s, "step": "32-true, lr/2", "precision": "32-true",  # not drawn
              "out_rel_err_vs_fp64": 0.5, "grad_rel_err_vs_fp64": 0.5} for s in range(3)]
    fig = report.plot_errors(pd.DataFrame(rows), "test CPU")
    for ax, factor in zip(fig.axes, [1, 10], strict=True):  # outputs, then gradient
        assert len(ax.collections) == 2 * len(order)
        for i, p in enumerate(order):
            seeds, mean = ax.collections[2 * i: 2 * i + 2]
            v = factor * np.array(out[p])
            assert_allclose(seeds.get_offsets(), np.column_stack([[i] * 3, v]))
            assert_allclose(mean.get_offsets(), [[i, np.prod(v) ** (1 / 3)]])
    plt.close(fig)


def test_update_loss_figure_draws_both_counts_per_amp_precision():
    pure = _history("precision", ["16-mixed", "bf16-mixed", "16-true"]).assign(
        skipped=False, lost_fp16_scheme=0.2)
    pure = pd.concat([pure, pure.assign(optimizer="adam")], ignore_index=True)
    fig = report.plot_update_losses(pure, "test CPU")
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "16-mixed: applied in fp16, cast back" in labels and len(labels) == 4
    assert fig.axes[0].get_ylabel() and fig.axes[0].get_xlabel()
    plt.close(fig)


def test_update_loss_figure_draws_both_lost_shares_of_unskipped_amp_steps():
    pure = _seeded("precision", ["16-mixed", "bf16-mixed", "16-true"])
    pure = pure.assign(lost_fp16_scheme=1 - pure.stalled, skipped=False)
    pure = pd.concat([pure, pure.assign(optimizer="adam", stalled=pure.stalled / 2)],
                     ignore_index=True)
    skip = (pure.seed == 2) & (pure.step == 10)  # a skipped step, its shares far off: not drawn
    pure.loc[skip, ["skipped", "stalled", "lost_fp16_scheme"]] = [True, 0.99, 0.99]
    fig = report.plot_update_losses(pure, "test CPU")
    for ax, opt in zip(fig.axes, ["sgd", "adam"], strict=True):
        kept = pure[(pure.optimizer == opt) & ~pure.skipped]
        want = [(p, col) for col in ["stalled", "lost_fp16_scheme"]
                for p in ["16-mixed", "bf16-mixed"]]  # real steps, then the fp16 scheme
        assert len(ax.get_lines()) == len(ax.collections) == len(want)
        for line, fill, (p, col) in zip(ax.get_lines(), ax.collections, want, strict=True):
            _check_band(line, fill, kept[kept.precision == p], col, scale=100)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels == ["16-mixed: real step (fp32)", "bf16-mixed: real step (fp32)",
                      "16-mixed: applied in fp16, cast back",
                      "bf16-mixed: applied in fp16, cast back"]
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


# ------------------------------------------------------------ printed texts and saved views ---

def test_trace_summary_counts_one_precisions_ops_forward_first_every_row():
    rows = [("bf16-mixed", "backward", "mm", "bf16,bf16", "bf16"),
            ("bf16-mixed", "forward", "addmm", "fp32,bf16", "bf16"),
            ("bf16-mixed", "forward", "addmm", "fp32,bf16", "bf16"),
            ("16-mixed", "forward", "relu", "fp16", "fp16")]
    rows += [("bf16-mixed", "forward", f"op{i:03d}", "fp32", "fp32") for i in range(70)]
    traces = pd.DataFrame(rows, columns=["precision", "phase", "op", "in_dtypes", "out_dtype"])
    lines = report.trace_summary(traces).splitlines()
    assert lines[0].split() == ["phase", "op", "in_dtypes", "out_dtype", "count"]
    assert len(lines) == 1 + 72  # every row, no '...' even beyond pandas' default max_rows
    assert lines[1].split() == ["forward", "addmm", "fp32,bf16", "bf16", "2"]
    assert lines[-1].split() == ["backward", "mm", "bf16,bf16", "bf16", "1"]
    assert "relu" not in "".join(lines)  # the other precision is left out


def test_cpu_autocast_text_prints_only_the_cpu_rows_as_op_by_autocast_and_input():
    probe = pd.DataFrame({"device": ["cpu", "cpu", "cuda"], "op": ["mm", "mm", "mm"],
                          "autocast": ["bf16", "bf16", "bf16"], "input": ["fp32", "bf16", "fp32"],
                          "output": ["bf16", "bf16", "fp16"]})
    text = report.cpu_autocast_text(probe)
    assert text == report.autocast_pivot(probe.iloc[:2]).to_string()
    assert "fp16" not in text and text.splitlines()[-1].split() == ["mm", "bf16", "bf16"]


def test_lr_curves_table_keeps_the_saved_columns_in_order():
    curves = pd.DataFrame({"smooth": [0.5], "test_metric": [0.9], "run": ["a"], "seed": [1],
                           "step": [3], "loss": [0.4], "test_loss": [0.6]})
    out = report.lr_curves_table(curves)
    assert list(out.columns) == ["run", "seed", "step", "loss", "test_loss", "test_metric"]
    assert out.iloc[0].tolist() == ["a", 1, 3, 0.4, 0.6, 0.9]


def test_vanishing_text_is_one_line_per_format_with_every_digit():
    text = report.vanishing_text({"fp32": 0.9998999834060669, "fp16": 1.0})
    assert text == ("1 - 1e-4, applied in fp32: 0.9998999834060669\n"
                    "1 - 1e-4, applied in fp16: 1.0")
    assert report.vanishing_text({"bf16": 2.0}, label="x") == "x, applied in bf16: 2.0"


def test_outcome_text_is_one_label_outcome_line_per_entry():
    text = report.outcome_text({"fp32 input": "RuntimeError: boom", "fp16 input": "correct"})
    assert text == "fp32 input: RuntimeError: boom\nfp16 input: correct"


def test_verdict_facts_glue_each_verdict_word_by_claim_id():
    from precisionlab.study.claims import Verdict

    found = {c: Verdict(claim=c, verdict=w, reason="r", evidence="e", chapter="02")
             for c, w in [("MP-1", "supported"), ("MP-8", "refuted")]}
    assert report.verdict_facts(found) == {"v_MP-1": "supported", "v_MP-8": "refuted"}
    assert report.verdict_facts({}) == {}
