"""Chapter 04's report: figures from synthetic measurements draw the seeds' geometric means,
their intervals and the costs computed here, label their axes and name the hardware."""

from __future__ import annotations

import math

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from numpy.testing import assert_allclose
from scipy import stats as sps

from precisionlab.study.reports import accumulation as report

matplotlib.use("Agg")

KS = [1, 4, 16]
MIB = 2**20


def _geo(values) -> tuple[float, float, float]:
    """Geometric mean of `values` and its 95 % interval (Student t on log10), computed here."""
    logs = np.log10(np.asarray(values, dtype=float))
    half = sps.t.ppf(0.975, logs.size - 1) * logs.std(ddof=1) / math.sqrt(logs.size)
    return 10 ** logs.mean(), 10 ** (logs.mean() - half), 10 ** (logs.mean() + half)


def _check_errorbar(bars, xs, want) -> None:
    """An ErrorbarContainer draws (xs, mean) with vertical bars from low to high; `want` holds
    rows (mean, low, high)."""
    line, _, (ranges,) = bars
    want = np.asarray(want, dtype=float)
    assert_allclose(np.asarray(line.get_xdata(), dtype=float), xs)
    assert_allclose(np.asarray(line.get_ydata(), dtype=float), want[:, 0])
    seg = np.array(ranges.get_segments())
    assert_allclose(seg[:, :, 0], np.column_stack([xs, xs]))
    assert_allclose(seg[:, :, 1].min(axis=1), want[:, 1])
    assert_allclose(seg[:, :, 1].max(axis=1), want[:, 2])


def _spread(s: int) -> float:
    return 1 + 0.5 * s + 0.2 * s * s  # seeds differ unevenly, so every interval is distinct


def _ga1(precisions=("32-true", "bf16-mixed"), seeds=range(3)) -> pd.DataFrame:
    rows = []
    for i, p in enumerate(precisions):
        for s in seeds:
            f = _spread(s)
            rows += [{"seed": s, "precision": p, "comparison": "1-ulp nudge", "k": 1,
                      "rel_diff": 1e-7 * (i + 1) * f},
                     {"seed": s, "precision": p, "comparison": "next precision up", "k": 1,
                      "rel_diff": 3e-6 * (i + 1) * f * f}]
            for k in KS[1:]:
                rows += [{"seed": s, "precision": p, "comparison": "accumulation", "k": k,
                          "rel_diff": 1e-8 * k * (i + 1) * f},
                         {"seed": s, "precision": p, "comparison": "smaller batch", "k": k,
                          "rel_diff": 1e-2 * math.sqrt(k) * f ** (k / 4)}]
    return pd.DataFrame(rows)


def _ga3() -> tuple[pd.DataFrame, pd.DataFrame]:
    errors = pd.DataFrame([{"seed": s, "precision": p, "k": k,
                            "rel_error": base * (1 + 0.1 * j * s) * _spread(s) ** (k / 16)}
                           for p, base in [("32-true", 1e-7), ("16-mixed", 3e-3),
                                           ("bf16-true", 2e-2)]
                           for s in range(3) for j, k in enumerate(KS)])
    parts = pd.DataFrame([{"seed": s, "accumulator": a, "k": k,
                           "rel_error": base * math.sqrt(k) * _spread(s) ** (j + 1) / 2,
                           "flushed_parts": 0.01 * j * s}
                          for a, base in [("fp32", 3e-8), ("fp16", 2e-4), ("bf16", 2e-3)]
                          for s in range(3) for j, k in enumerate(KS)])
    return errors, parts


def test_figures_have_labelled_axes_and_the_hardware():
    errors, parts = _ga3()
    for fig in (report.plot_distances(_ga1(), ["32-true", "bf16-mixed"], KS, 1, "test CPU"),
                report.plot_errors(errors, parts, KS, 8, "test CPU")):
        assert any(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
        assert any("test CPU" in t.get_text() for t in fig.texts)
        plt.close(fig)
    assert len(report.error_table(errors, parts, ["16-mixed"])) == 1 + 3 + 1


def test_distances_draw_each_comparisons_geometric_mean_interval_and_yardsticks():
    ga1 = _ga1()
    fig = report.plot_distances(ga1, ["32-true", "bf16-mixed"], KS, 5, "test CPU")
    yard = {"1-ulp nudge": "yardstick: initial weights 1 ulp up",
            "next precision up": "yardstick: one precision up"}
    for ax, p in zip(fig.axes, ["32-true", "bf16-mixed"], strict=True):
        assert ax.get_title() == p
        sub = ga1[ga1.precision == p]
        assert len(ax.containers) == 2
        for bars, c in zip(ax.containers, ["accumulation", "smaller batch"], strict=True):
            part = sub[sub.comparison == c]
            _check_errorbar(bars, KS[1:], [_geo(part[part.k == k].rel_diff) for k in KS[1:]])
        assert len(ax.patches) == 2
        for span, (c, label) in zip(ax.patches, yard.items(), strict=True):
            mean, low, high = _geo(sub[sub.comparison == c].rel_diff)
            assert_allclose([span.get_y(), span.get_y() + span.get_height()], [low, high])
            (line,) = [x for x in ax.get_lines() if x.get_label() == label]
            assert_allclose(line.get_ydata(), [mean, mean])
    plt.close(fig)


def test_distances_with_one_seed_draw_its_values_with_no_bars():
    ga1 = _ga1(["16-mixed"], seeds=[0])
    fig = report.plot_distances(ga1, ["16-mixed"], KS, 5, "test CPU")
    ax = fig.axes[0]
    for bars, c in zip(ax.containers, ["accumulation", "smaller batch"], strict=True):
        v = ga1[ga1.comparison == c].rel_diff.to_numpy()
        _check_errorbar(bars, KS[1:], np.column_stack([v, v, v]))
    nudge = ga1[ga1.comparison == "1-ulp nudge"].rel_diff.iloc[0]
    assert_allclose([ax.patches[0].get_y(), ax.patches[0].get_height()], [nudge, 0])
    plt.close(fig)


def test_costs_draw_flops_memory_and_the_median_time_ratio_with_its_iqr():
    precisions = ["32-true", "bf16-mixed"]
    ga2 = pd.DataFrame([{"precision": p, "k": k, "micro_batch": 32 // k,
                         "matmul_flops": 7.8e8 * (i + 1) + 1e6 * k,
                         "activation_bytes": 12e6 / (i + 1) / k + 5e4 * k,
                         "static_bytes": 5e5 * (i + 1), "cuda_peak_bytes": 2e7 / k + 1e6 * i}
                        for i, p in enumerate(precisions) for k in KS])
    time = pd.DataFrame([{"precision": p, "k": k, "repeat": r,
                          "time_ratio": 1 + 0.3 * (k - 1) * (i + 1) + 0.05 * r * r}
                         for i, p in enumerate(precisions) for k in KS for r in range(5)])
    fig = report.plot_costs(ga2, time, KS, "test CPU")
    ax_f, ax_m, ax_t = fig.axes
    flops, mem = ax_f.get_lines(), ax_m.get_lines()
    assert len(flops) == 2 * len(precisions) and len(mem) == 2 * len(precisions) + 2
    for i, p in enumerate(precisions):
        g = ga2[ga2.precision == p]
        assert_allclose(flops[2 * i].get_xdata(), KS)
        assert_allclose(flops[2 * i].get_ydata(), g.matmul_flops / 1e9)
        assert_allclose(flops[2 * i + 1].get_ydata(), g.matmul_flops / np.array(KS) / 1e9)
        assert_allclose(mem[2 * i].get_ydata(), g.activation_bytes / MIB)
        assert_allclose(mem[2 * i + 1].get_ydata(), g.cuda_peak_bytes / MIB)
        q = np.array([np.percentile(time[(time.precision == p) & (time.k == k)].time_ratio,
                                    [50, 25, 75]) for k in KS])
        _check_errorbar(ax_t.containers[i], KS, q)
    first = ga2[ga2.precision == "32-true"]
    k1_bytes = first[first.k == 1].activation_bytes.item()
    assert_allclose(mem[-2].get_ydata(), k1_bytes / np.array(KS) / MIB)  # 1/k of k = 1
    assert_allclose(mem[-1].get_ydata(), first.static_bytes / MIB)
    assert [x for x in ax_t.get_lines() if list(x.get_ydata()) == [1, 1]]  # the k = 1 line
    plt.close(fig)


def test_errors_draw_each_precisions_and_accumulators_geometric_mean_and_sqrt_k_guide():
    errors, parts = _ga3()
    fig = report.plot_errors(errors, parts, KS, 64, "test CPU")
    ax1, ax2 = fig.axes
    labels = ["32-true (.grad in fp32)", "16-mixed (.grad in fp32)", "bf16-true (.grad in bf16)"]
    assert [b.get_label() for b in ax1.containers] == labels
    for bars, p in zip(ax1.containers, ["32-true", "16-mixed", "bf16-true"], strict=True):
        e = errors[errors.precision == p]
        _check_errorbar(bars, KS, [_geo(e[e.k == k].rel_error) for k in KS])
        assert bars.lines[0].get_linestyle() == ("--" if p.endswith("mixed") else "-")
    guides = [x for x in ax2.get_lines() if x.get_linestyle() == ":" and len(x.get_xdata())]
    assert len(ax2.containers) == len(guides) == 3
    for bars, guide, a in zip(ax2.containers, guides, ["fp32", "fp16", "bf16"], strict=True):
        e = parts[parts.accumulator == a]
        want = [_geo(e[e.k == k].rel_error) for k in KS]
        _check_errorbar(bars, KS, want)
        assert_allclose(guide.get_xdata(), KS)
        assert_allclose(guide.get_ydata(), want[0][0] * np.sqrt(KS))
    plt.close(fig)


def test_ratio_table_and_facts_read_ga3_the_other_way():
    errors = pd.DataFrame([{"seed": s, "precision": "16-mixed", "k": k, "rel_error": e}
                           for s, (a, b) in enumerate([(0.010, 0.0099), (0.012, 0.0118),
                                                       (0.011, 0.0109)])
                           for k, e in ((1, a), (4, b))])
    parts = pd.DataFrame([{"seed": s, "accumulator": "fp16", "k": k, "rel_error": e,
                           "flushed_parts": 0.0}
                          for s in range(3) for k, e in ((1, 1e-4), (4, 2e-4 + 1e-5 * s))])
    r = report.error_ratios(errors, parts).set_index("setting")
    assert r.fell["16-mixed"] == 3 and r.fell["fp16"] == 0  # every seed's error fell / grew
    assert math.isclose(r.ratio["16-mixed"], math.exp(
        sum(math.log(b / a) for a, b in [(0.010, 0.0099), (0.012, 0.0118), (0.011, 0.0109)]) / 3))
    assert r.low["fp16"] < r.ratio["fp16"] < r.high["fp16"]
    table = report.ratio_table(errors, parts)
    assert list(table.index) == [("whole computation", "16-mixed"), ("accumulator alone", "fp16")]
    assert table.iloc[1, 1] == "0 of 3"
