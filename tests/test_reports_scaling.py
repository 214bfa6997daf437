"""Chapter 03's report: tables, glued facts and figures from toy measurements."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.collections import PathCollection, PolyCollection  # noqa: E402
from matplotlib.container import ErrorbarContainer  # noqa: E402
from plotdata import band_of, mean_interval, xy

from precisionlab.study.reports import scaling as report  # noqa: E402


def test_tables_facts_and_figures_read_the_measurements(scaling_measured, tmp_path):
    runs, traces, under = scaling_measured
    table = report.loss_table(runs, [8])
    assert list(table.index.get_level_values("config"))[0] == "32-true"
    assert len(report.underflow_table(under, 2)) == 2
    facts = report.facts(runs, under, traces, [8], {"mlp": 3, "transformer": 3}, 2)
    assert facts["mlp_act_none"] == "(not run)" and facts["transformer_best"].startswith("2^")
    assert report.histogram_facts(tmp_path / "missing.csv")["ch01_flush"] == "(see chapter 1)"


def test_one_line_table_pairs_each_change_with_32_true(scaling_measured):
    runs, *_ = scaling_measured
    table = report.one_line_table(runs)
    configs = list(table.index.get_level_values("configuration"))
    assert configs == ["bf16-mixed", "16-mixed, no scaling", "16-mixed, dynamic", "16-true"]
    assert table["train loss minus 32-true (nats)"].iloc[0].endswith("(n=2)")
    assert table.loc[("TinyTransformer on characters", "16-true"), "seeds with non-finite loss"
                     ].endswith("of 2")


def test_one_line_facts_give_paired_intervals_per_task(scaling_measured):
    runs, *_ = scaling_measured
    facts = report.one_line_facts(runs, 0.05)
    assert facts["transformer_bf16_vs32"].endswith("nats (n=2)")
    assert facts["transformer_cast_bad"] == "2 of 2" and facts["transformer_cast_first"] == "2"
    assert facts["mlp_none_within"] == "(not run)"
    one = report.one_line_facts(runs[runs.seed == 0], 0.05)
    assert one["transformer_dyn_vs32"] == "(one seed: no interval)"


def test_adam_fp16_facts_follow_from_fp16():
    import torch

    facts = report.adam_fp16_facts()
    assert facts["adam_eps16"] == "0"  # 1e-8 is below half fp16's smallest subnormal
    g = float(facts["adam_gmin"])
    v = torch.tensor(0.001 * g * g, dtype=torch.float16)
    assert v > 0 and torch.tensor(0.001 * (0.99 * g) ** 2, dtype=torch.float16) == 0


def test_figures_have_labelled_axes_and_the_hardware(scaling_measured):
    runs, traces, under = scaling_measured
    for fig in (report.plot_final_loss(runs, [8], "test CPU"),
                report.plot_underflow(under, [8], "test CPU"),
                report.plot_dynamic(traces, "test CPU")):
        assert any(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
        assert any("test CPU" in t.get_text() for t in fig.texts)
        matplotlib.pyplot.close(fig)


# -- the data drawn, from small synthetic tables ---------------------------------------------------

# (config, precision, x on the figure, skipped steps) and the final train loss of seeds 0, 1, 2;
# the test loss is the train loss + 0.1 * (seed + 1)
FINAL = [(("32-true", "32-true", None, 0), [1.0, 1.2, 1.1]),
         (("bf16-mixed", "bf16-mixed", None, 0), [1.05, 1.3, 1.15]),
         (("16-mixed, no scaling", "16-mixed", 0.0, 0), [1.4, 1.5, 1.9]),
         (("16-mixed, 2^8", "16-mixed", 8.0, 0), [1.01, 1.21, 1.12]),
         (("16-mixed, 2^16", "16-mixed", 16.0, 3), [2.0, 2.5, 2.2]),
         (("16-mixed, dynamic", "16-mixed", 21.0, 1), [1.02, 1.19, 1.1]),  # right of 2^16: +5
         (("16-true", "16-true", None, 0), [3.0, 3.0, 3.0])]


def test_final_loss_figure_draws_seeds_means_intervals_and_reference_bands():
    runs = pd.DataFrame([{"task": "mlp", "seed": s, "config": config, "precision": p,
                          "train_loss": v[s], "test_loss": v[s] + 0.1 * (s + 1),
                          "skipped_steps": skipped}
                         for (config, p, _, skipped), v in FINAL for s in range(3)])
    fig = report.plot_final_loss(runs, [8, 16], "test CPU")
    assert len(fig.axes) == 2  # train loss, test loss
    for c, ax in enumerate(fig.axes):
        def values(v, test=c == 1):
            return [x + (0.1 * (s + 1) if test else 0.0) for s, x in enumerate(v)]

        refs = {config: mean_interval(values(v)) for (config, p, x, _), v in FINAL
                if x is None and config != "16-true"}  # 32-true, bf16-mixed
        assert len(ax.patches) == 2
        for span, (_, low, high) in zip(ax.patches, refs.values(), strict=True):
            np.testing.assert_allclose([span.get_y(), span.get_y() + span.get_height()],
                                       [low, high])
        means = {line.get_label().split(":")[0]: line for line in ax.get_lines()
                 if "interval band" in line.get_label()}
        for config, (mean, _, _) in refs.items():
            np.testing.assert_allclose(np.asarray(means[config].get_ydata(), dtype=float), mean)
        scaled = [(x, skipped, values(v)) for (_, p, x, skipped), v in FINAL if p == "16-mixed"]
        dots = [k for k in ax.collections if isinstance(k, PathCollection)]
        bars = [k for k in ax.containers if isinstance(k, ErrorbarContainer)]
        assert len(dots) == len(bars) == len(scaled)
        for (x, skipped, v), dot, bar in zip(scaled, dots, bars, strict=True):
            np.testing.assert_allclose(dot.get_offsets(), np.column_stack([[x] * 3, v]))
            mean, low, high = mean_interval(v)
            np.testing.assert_allclose(xy(bar.lines[0]), [[x, mean]])
            (segment,) = bar.lines[2][0].get_segments()
            np.testing.assert_allclose(segment, [[x, low], [x, high]])
            assert bar.lines[0].get_marker() == ("X" if skipped else "o")  # overflowed: a cross
    plt.close(fig)


def test_underflow_figure_draws_the_mean_and_min_max_per_scale_and_overflow_crosses():
    def act(k, step, s):
        return 0.5 / (1 + k) * (1 + 0.1 * s) * step

    rows = [{"task": "transformer", "step": step, "seed": s, "log2_scale": k,
             "act_flushed": act(k, step, s), "weight_flushed": 0.01 * s,
             "act_flushed_mass": 0.001 * (k + s), "grad_rel_error": 0.1 / (1 + k + s),
             "overflow": k == 16 and (step == 2 or s == 1), "loss": 2.0 / step}
            for step in (1, 2) for s in range(3) for k in (0, 8, 16)]
    under = pd.DataFrame(rows)
    fig = report.plot_underflow(under, [8, 16], "test CPU")
    assert len(fig.axes) == 4
    quantities = [(lambda k, step, s: act(k, step, s), 100),
                  (lambda k, step, s: 0.01 * s, 100),
                  (lambda k, step, s: 0.001 * (k + s), 100),
                  (lambda k, step, s: 0.1 / (1 + k + s), 1)]
    for ax, (f, factor) in zip(fig.axes, quantities, strict=True):
        lines = ax.get_lines()
        bands = [k for k in ax.collections if isinstance(k, PolyCollection)]
        crosses = [k for k in ax.collections if isinstance(k, PathCollection)]
        assert len(lines) == len(bands) == len(crosses) == 2
        for step, line, band, cross in zip((1, 2), lines, bands, crosses, strict=True):
            ok = [0, 8]  # 2^16 overflowed in at least one seed at both checkpoints
            seeds = np.array([[f(k, step, s) for s in range(3)] for k in ok])
            np.testing.assert_allclose(xy(line), np.column_stack([ok, factor * seeds.mean(1)]))
            x, low, high = band_of(band)
            np.testing.assert_allclose(x, ok)
            np.testing.assert_allclose(low, factor * seeds.min(1))
            np.testing.assert_allclose(high, factor * seeds.max(1))
            np.testing.assert_allclose(cross.get_offsets(), [[16, 0.97]])
    plt.close(fig)


def test_dynamic_figure_steps_through_log2_of_the_scale_and_marks_skipped_steps():
    scales = {0: [2.0**15, 2.0**16, 2.0**15, 2.0**15, 2.0**16],
              1: [2.0**16, 2.0**16, 2.0**17, 2.0**16, 2.0**16]}
    skipped = {0: [False, True, False, False, True], 1: [False, False, True, False, False]}
    traces = pd.DataFrame([{"task": "mlp", "seed": seed, "step": k, "loss_scale": v[k],
                            "skipped": skipped[seed][k]}
                           for seed, v in scales.items() for k in range(5)])
    fig = report.plot_dynamic(traces, "test CPU")
    ax = fig.axes[0]
    lines = [line for line in ax.get_lines() if line.get_label().startswith("seed")]
    crosses = [k for k in ax.collections if isinstance(k, PathCollection)]
    for i, (line, cross) in enumerate(zip(lines, crosses, strict=True)):
        y = np.log2(scales[i]) + 0.06 * i  # seed i lifted by 0.06 so seeds do not hide
        assert line.get_drawstyle() == "steps-post"
        np.testing.assert_allclose(xy(line), np.column_stack([range(5), y]))
        hit = np.flatnonzero(skipped[i])
        np.testing.assert_allclose(cross.get_offsets(), np.column_stack([hit, y[hit]]))
        assert cross.get_label() == f"seed {i}: {len(hit)} skipped"
    plt.close(fig)
