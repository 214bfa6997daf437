"""Chapter 01's report: figures from small measured tables have labelled axes and the hardware."""

from __future__ import annotations

import math

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import to_hex
from numpy.testing import assert_allclose

from precisionlab.study.experiments import formats as X
from precisionlab.study.reports import formats as report

matplotlib.use("Agg")

# IEEE fp16 and bfloat16, from their bit layouts: smallest subnormal, smallest normal, largest
FP16 = (2.0**-24, 2.0**-14, (2 - 2.0**-10) * 2.0**15)
BF16 = (2.0**-133, 2.0**-126, (2 - 2.0**-7) * 2.0**127)


def _labelled_and_signed(fig) -> None:
    assert any(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
    assert any("test CPU" in t.get_text() for t in fig.texts)
    plt.close(fig)


def test_figures_from_small_probes():
    _labelled_and_signed(report.plot_spacing(X.spacing_table(["fp16", "bf16"]), "test CPU"))
    _labelled_and_signed(report.plot_matmul_probe(X.matmul_probe([-8, 0], trials=1), "test CPU"))
    soft = X.softmax_probe([8], peaks=[2.0, 12.0], trials=2)
    _labelled_and_signed(report.plot_softmax(soft, [8], 11.09, "test CPU"))


def test_histogram_and_underflow_texts_from_a_synthetic_table():
    hist = pd.DataFrame({"log2_bin_left": [-30, -20, -10], "percent": [10.0, 60.0, 30.0]})
    _labelled_and_signed(report.plot_gradient_histogram(hist, ["fp16", "bf16"], "test CPU"))
    cols = pd.MultiIndex.from_product([["flushed", "overflow", "subnormal"], ["mean", "std"]])
    idx = pd.MultiIndex.from_product([["fp16", "bf16"], [0, 8]], names=["format", "log2_scale"])
    pct = pd.DataFrame([[5, 1, 0, 0, 2, 1], [1, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0],
                        [0, 0, 0, 0, 0, 0]], index=idx, columns=cols, dtype=float)
    facts = report.underflow_facts(pct, ["fp16", "bf16"])
    assert facts["best_k"] == "2^8" and facts["fp16_flush"] == "5.00 % (± 1.00)"
    assert list(report.underflow_table(pct).columns) == ["flushed (%)", "overflow (%)",
                                                         "subnormal (%)"]


def test_spacing_draws_each_formats_gaps_against_magnitude():
    spacing = pd.DataFrame({"format": ["fp16"] * 3 + ["bf16"] * 4,
                            "magnitude": [1e-6, 1.0, 1e4, 1e-30, 1e-3, 1.0, 1e30],
                            "spacing": [2.0**-24, 2.0**-10, 8.0, 1e-32, 2.0**-17, 2.0**-7,
                                        7e27]})
    fig = report.plot_spacing(spacing, "test CPU")
    ax = fig.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    lines = ax.get_lines()
    assert [x.get_label() for x in lines] == ["fp16", "bf16"]
    for line, name, color in zip(lines, ["fp16", "bf16"], ["#e69f00", "#009e73"], strict=True):
        g = spacing[spacing.format == name]
        assert_allclose(line.get_xdata(), g.magnitude)
        assert_allclose(line.get_ydata(), g.spacing)
        assert to_hex(line.get_color()) == color
    plt.close(fig)


def test_relative_error_draws_each_formats_worst_error_and_its_unit_roundoff():
    rel = pd.DataFrame({"format": ["fp32"] * 3 + ["fp16"] * 3 + ["bf16"] * 3,
                        "log2_magnitude": [-30.5, 0.5, 10.5] * 3,
                        "max_relative_error": [0.0, 5.9e-8, 5.5e-8, 1.0, 4.8e-4, 4.7e-4,
                                               3.9e-3, 3.8e-3, 0.0]})
    fig = report.plot_relative_error(rel, "test CPU")
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == 2 * 3
    for i, (name, u) in enumerate([("fp32", 2.0**-24), ("fp16", 2.0**-11), ("bf16", 2.0**-8)]):
        g = rel[rel.format == name]
        assert_allclose(lines[2 * i].get_xdata(), g.log2_magnitude)
        assert_allclose(lines[2 * i].get_ydata(),  # an exact 0 drawn at 1e-12 on the log axis
                        np.maximum(g.max_relative_error.to_numpy(), 1e-12))
        assert_allclose(lines[2 * i + 1].get_ydata(), [u, u])
    assert_allclose(lines[0].get_ydata()[0], 1e-12)
    plt.close(fig)


def test_matmul_probe_draws_the_median_finite_error_and_crosses_where_most_overflow():
    scales = [-20, 0, 12]
    rows = []
    for name, base in [("fp16", 1e-3), ("bf16", 8e-3)]:
        for k in scales:
            for t in range(4):
                finite = not (name == "fp16" and k == 12 and t < 3)  # 3 of 4 inf/NaN
                err = base * (1 + t * t) * (50 if k == -20 and name == "fp16" else 1)
                rows.append({"format": name, "log2_scale": k, "trial": t, "finite": finite,
                             "rel_error": err if finite else math.nan})
    probe = pd.DataFrame(rows)
    fig = report.plot_matmul_probe(probe, "test CPU")
    lines = fig.axes[0].get_lines()
    assert len(lines) == 2 * 2 + 1
    for i, name in enumerate(["fp16", "bf16"]):
        g = probe[probe.format == name]
        medians = [np.nanmedian(g[g.log2_scale == k].rel_error) for k in scales]
        assert_allclose(lines[2 * i].get_xdata(), scales)
        assert_allclose(lines[2 * i].get_ydata(), medians)
        assert lines[2 * i].get_label() == f"{name}: median error"
    assert_allclose(lines[0].get_ydata(), [50 * 3.5e-3, 3.5e-3, 1e-2])  # 2^12: 1 finite
    assert_allclose(lines[1].get_xdata(), [12])  # the cross where 3 of 4 fp16 trials overflow
    assert_allclose(lines[1].get_ydata(), [3.0])
    assert len(lines[3].get_xdata()) == 0  # bf16 never overflows
    assert_allclose(lines[4].get_ydata(), [0.1, 0.1])  # the rule's failure line
    plt.close(fig)


def test_gradient_histogram_draws_the_shares_and_each_formats_range():
    hist = pd.DataFrame({"log2_bin_left": [-30, -20, -10, 0, 10, 20],
                         "percent": [5.0, 20.0, 40.0, 25.0, 9.0, 1.0]})
    fig = report.plot_gradient_histogram(hist, ["fp16", "bf16"], "test CPU")
    ax_r, ax = fig.axes
    bars = ax.patches
    assert_allclose([b.get_x() for b in bars], hist.log2_bin_left)
    assert_allclose([b.get_height() for b in bars], hist.percent)
    assert_allclose([b.get_width() for b in bars], [1.0] * len(hist))
    assert_allclose(ax.get_xlim(), (-30, 21))
    top = 21  # the last bin's right edge: bf16's normal range is cut there, fp16's is not
    want = []
    for i, (sub, normal, largest) in enumerate([FP16, BF16]):
        lo, mid = math.log2(sub), math.log2(normal)
        want += [(lo, mid - lo, i), (mid, min(math.log2(largest), top) - mid, i)]
    got = [(b.get_x(), b.get_width(), b.get_y() + b.get_height() / 2) for b in ax_r.patches]
    assert_allclose(got, want)
    assert_allclose(want[1][1], math.log2(65504) + 14)
    assert_allclose([line.get_xdata()[0] for line in ax.get_lines()], [-24, -133])
    plt.close(fig)


def test_softmax_draws_the_wrong_and_loud_shares_and_median_errors_per_length():
    naive, stable, torch_sm = "naive exp, fp16", "max-subtracted, fp16", "torch.softmax, fp16"
    peaks, lengths = [2.0, 9.0, 12.0], [8, 64]
    rows = []
    for n in lengths:
        for peak in peaks:
            for t in range(4):
                for method in (naive, stable, torch_sm):
                    loud = method == naive and peak == 12.0 and t < (3 if n == 64 else 1)
                    err = 1e-4 * peak * (t + 1) * n / 8
                    if method == naive and peak >= 9.0:
                        err = 0.004 * (t + 1) * n / 8  # silently wrong above 0.01
                    rows.append({"n": n, "peak_score": peak, "trial": t, "method": method,
                                 "finite": not loud, "max_abs_error": math.nan if loud else err})
    soft = pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # the order must not matter
    fig = report.plot_softmax(soft, lengths, 11.09, "test CPU")
    ax1, ax2 = fig.axes
    l1, l2 = ax1.get_lines(), ax2.get_lines()
    assert len(l1) == 3 * len(lengths) + 1 and len(l2) == 2 * len(lengths) + 2
    for i, n in enumerate(lengths):
        def rows_of(method, peak, n=n):
            return soft[(soft.method == method) & (soft.n == n) & (soft.peak_score == peak)]

        loud = [100 * (~rows_of(naive, p).finite).mean() for p in peaks]
        wrong = [100 * ((~rows_of(naive, p).finite) | (rows_of(naive, p).max_abs_error > 0.01))
                 .mean() for p in peaks]
        wrong_line, loud_line, limit = l1[3 * i: 3 * i + 3]
        assert_allclose(wrong_line.get_xdata(), peaks)
        assert_allclose(wrong_line.get_ydata(), wrong)
        assert_allclose(loud_line.get_ydata(), loud)
        assert_allclose(limit.get_xdata(), [math.log(65504 / n)] * 2)
        for line, method in zip(l2[2 * i: 2 * i + 2], [naive, stable], strict=True):
            assert_allclose(line.get_xdata(), peaks)
            assert_allclose(line.get_ydata(),
                            [np.nanmedian(rows_of(method, p).max_abs_error) for p in peaks])
    assert_allclose(l1[0].get_ydata(), [0, 50, 75])  # n = 8 at peak 12: 1 loud, 2 silent
    assert_allclose(l1[1].get_ydata(), [0, 0, 25])
    assert_allclose(l1[-1].get_xdata(), [11.09, 11.09])
    assert_allclose(l2[-2].get_xdata(), [11.09, 11.09])
    assert_allclose(l2[-1].get_ydata(), [0.01, 0.01])
    plt.close(fig)
