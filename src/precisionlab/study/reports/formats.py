"""Chapter 01's figures, display tables and glued prose, from the tidy tables of
`precisionlab.study.experiments.formats`: presentation only, no measurement.

Every figure is drawn in the house style, its axes labelled with units, and signed with the
`hardware` line that measured it; the caller shows it (`plt.show()`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from precisionlab import formats as F
from precisionlab.study import plotting, stats
from precisionlab.study.rules import formats as R


def _finish(fig: Figure, ax: object, hardware: str, legend: dict | None = None,
            **labels: object) -> Figure:
    """Label the axes, add the legend, name the hardware: the end of every figure."""
    ax.set(**labels)
    ax.legend(**(legend or {"fontsize": 8}))
    return plotting.sign(fig, hardware)


def machine_facts(machine: dict, threads: int) -> dict[str, str]:
    """The machine, as the book's introduction glues it in (`provenance.machine`)."""
    return {"cpu_model": machine["cpu_model"], "cpu_cores": str(machine["cpu_count"]),
            "n_threads": str(threads),
            "isa_flags": ", ".join(f for f, on in machine["isa"].items() if on) or "none"}


def plot_spacing(spacing: pd.DataFrame, hardware: str) -> Figure:
    """The gap to the next representable number against magnitude, per format (log-log)."""
    fig, ax = plotting.figure()
    for name, g in spacing.groupby("format", sort=False):
        ax.loglog(g.magnitude, g.spacing, label=name, color=plotting.FORMAT_COLORS[name], lw=1.6)
    return _finish(fig, ax, hardware, {"ncol": 2, "fontsize": 8},
                   xlabel="magnitude |x| (dimensionless, log scale)",
                   ylabel="gap to the next representable value\n(same units as x, log scale)",
                   title="Spacing of representable numbers")


def plot_relative_error(rel: pd.DataFrame, hardware: str) -> Figure:
    """The largest relative rounding error against log2 magnitude, with each unit roundoff."""
    fig, ax = plotting.figure()
    for name, g in rel.groupby("format", sort=False):
        c = plotting.FORMAT_COLORS[name]
        ax.semilogy(g.log2_magnitude, g.max_relative_error.clip(lower=1e-12), label=name, color=c)
        ax.axhline(F.FORMATS[name].unit_roundoff, color=c, lw=0.8, ls=":")
    return _finish(fig, ax, hardware, {"ncol": 3, "fontsize": 8},
                   xlabel="log2 of the magnitude |x| (dimensionless)",
                   ylabel="largest relative rounding error |r(x) - x| / |x|", ylim=(1e-10, 2),
                   title="Relative error of round-to-nearest (dotted: unit roundoff u)")


def plot_matmul_probe(probe: pd.DataFrame, hardware: str) -> Figure:
    """Median error of the same matrix product per 16-bit format against the input scale;
    crosses mark the scales where most outputs are inf/NaN (FMT-1's evidence)."""
    fig, ax = plotting.figure()
    for name, g in R.matmul_shares(probe).groupby("format", sort=False):
        c, bad = plotting.FORMAT_COLORS[name], g[g.nonfinite >= 0.5]
        ax.semilogy(g.log2_scale, g.median_error, "o-", ms=4, color=c,
                    label=f"{name}: median error")
        ax.semilogy(bad.log2_scale, np.full(len(bad), 3.0), "x", ms=9, mew=2, color=c,
                    label=f"{name}: inf/NaN output")
    ax.axhline(R.FAIL_ERROR, color="#999999", ls="--", lw=1, label="the rule's failure line")
    return _finish(fig, ax, hardware, ylim=(1e-5, 10),
                   xlabel="input scale k: entries ~ N(0, 1) * 2^k (dimensionless)",
                   ylabel="relative error of A @ B vs fp64\n(Frobenius norm ratio)",
                   title="The same matrix product in fp16 and bf16")


def gradient_facts(runs: pd.DataFrame) -> dict[str, str]:
    """The gradient runs' glued numbers: gradients recorded, test accuracy, exact zeros."""
    acc = stats.interval(runs["test_accuracy"])
    return {"n_grads": f"{runs['gradients'].sum():,}",
            "test_acc": f"{acc.mean:.3f} (95 % interval {acc.low:.3f} to {acc.high:.3f}, "
                        f"{acc.n} seeds)",
            "exact_zero": f"{100 * runs['exact_zero'].mean():.1f} %"}


def plot_gradient_histogram(hist: pd.DataFrame, gradient_formats: Sequence[str],
                            hardware: str) -> Figure:
    """The activation gradients' magnitudes (share per binade) under each format's range."""
    fig, (ax_r, ax) = plotting.figure(nrows=2, height=5.0, sharex=True,
                                      gridspec_kw={"height_ratios": [1, 4]})
    ax.bar(hist.log2_bin_left, hist.percent, width=1.0, align="edge", color="#555555", alpha=0.85)
    top = hist.log2_bin_left.max() + 1
    for i, name in enumerate(gradient_formats):
        f, c = F.FORMATS[name], plotting.FORMAT_COLORS[name]
        lo, mid = math.log2(f.min_subnormal), math.log2(f.min_normal)
        ax_r.barh(i, mid - lo, left=lo, color=c, alpha=0.35, height=0.6)
        ax_r.barh(i, min(math.log2(f.max_finite), top) - mid, left=mid, color=c, height=0.6)
        ax.axvline(lo, color=c, ls="--", lw=1.2, label=f"{name}: smallest subnormal 2^{lo:.0f}")
    ax_r.set_yticks(range(len(gradient_formats)), gradient_formats)
    ax_r.set_title("Activation gradients of an fp32-trained MLP vs representable ranges")
    ax_r.grid(False)
    return _finish(fig, ax, hardware, {"fontsize": 8, "loc": "upper left"},
                   xlim=(hist.log2_bin_left.min(), top),
                   xlabel="log2 |activation gradient| (bins one binade wide; gradient of a "
                          "dimensionless loss)",
                   ylabel="share of nonzero gradients (%)")


def underflow_table(pct: pd.DataFrame) -> pd.DataFrame:
    """`underflow_summary` in percent as 'mean ± std' columns, one per outcome."""
    return pd.DataFrame({f"{c} (%)": pct[(c, "mean")].map("{:.2f}".format) + " ± "
                         + pct[(c, "std")].map("{:.2f}".format) for c in pct.columns.levels[0]})


def underflow_facts(pct: pd.DataFrame, gradient_formats: Sequence[str]) -> dict[str, str]:
    """The underflow numbers the prose glues in: fp16 and bf16 without scaling, the loss scale
    that loses the fewest fp16 gradients and what it still flushes."""
    fp16 = pct.loc["fp16"]
    best_k = int((fp16[("flushed", "mean")] + fp16[("overflow", "mean")]).idxmin())
    bf16 = pct.loc[("bf16", 0), ("flushed", "mean")] if "bf16" in gradient_formats else math.nan
    return {"fp16_flush": f"{fp16.loc[0, ('flushed', 'mean')]:.2f} % "
                          f"(± {fp16.loc[0, ('flushed', 'std')]:.2f})",
            "fp16_sub": f"{fp16.loc[0, ('subnormal', 'mean')]:.2f} %",
            "bf16_flush": f"{bf16:.3f} %",
            "best_k": f"2^{best_k}",
            "best_flush": f"{fp16.loc[best_k, ('flushed', 'mean')]:.3f} %"}


def plot_softmax(soft: pd.DataFrame, lengths: Sequence[int], fp16_threshold: float,
                 hardware: str) -> Figure:
    """Left: the share of naive fp16 softmax rows that go wrong against the peak score; right:
    the median error of naive and max-subtracted rows where finite (FMT-2's evidence).
    `fp16_threshold` is ln(fp16's largest finite number), drawn as a grey line."""
    shares = R.softmax_shares(soft)
    fig, (ax1, ax2) = plotting.figure(ncols=2, width=10, height=4.0)
    for i, n in enumerate(lengths):
        c = plotting.PALETTE[i]
        naive, stable = (shares[(shares.method == m) & (shares.n == n)]
                         for m in (R.NAIVE, R.STABLE))
        ax1.plot(naive.peak_score, 100 * naive.wrong, marker="o", ms=3, color=c,
                 label=f"n={n}: wrong or inf/NaN")
        ax1.plot(naive.peak_score, 100 * naive.loud, ls=":", color=c, label=f"n={n}: inf/NaN")
        ax1.axvline(math.log(R.FP16_MAX / n), color=c, ls="-.", lw=0.8)
        ax2.semilogy(naive.peak_score, naive.median_error, "o-", ms=3, color=c,
                     label=f"naive, n={n}")
        ax2.semilogy(stable.peak_score, stable.median_error, "--", color=c,
                     label=f"max-subtr., n={n}")
    for ax in (ax1, ax2):
        ax.axvline(fp16_threshold, color="#999999", ls="--", lw=1)
        ax.set_xlabel("largest score in the row, max s (logit units)")
    ax2.axhline(R.WRONG_ERROR, color="#999999", lw=0.8)
    ax1.set(ylabel="naive fp16 rows wrong (%)", title="Naive exp: silent, then loud failure")
    ax1.legend(fontsize=7)
    return _finish(fig, ax2, hardware, {"fontsize": 7, "ncol": 2, "loc": "upper left"},
                   title="Accuracy where finite",
                   ylabel="median max abs error vs fp64 softmax\n(probability units; finite rows)")
