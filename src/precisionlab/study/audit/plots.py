"""The audit's figures, each made with `plotting.figure()` and signed with the hardware."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from precisionlab import formats as F
from precisionlab.study import plotting
from precisionlab.study.audit.measure import Result
from precisionlab.study.audit.summary import FLUSH_LIMIT, _metric_name, _ptq_summary

__all__ = ["histograms", "parity", "ptq", "scaler_trace", "speed", "underflow"]


def _isna(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _finish(fig: Figure, ax: object, result: Result, **labels: object) -> Figure:
    ax.set(**labels)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return plotting.sign(fig, result.hardware)


def parity(result: Result) -> Figure:
    """Paired metric difference to 32-true per precision, with 95 % intervals and the margin."""
    fig, ax = plotting.figure()
    t = result.parity
    y = np.arange(len(t))
    mean = t["metric_diff"].to_numpy(float)
    err = np.vstack([mean - t["metric_low"].to_numpy(float),
                     t["metric_high"].to_numpy(float) - mean])
    ax.errorbar(mean, y, xerr=np.nan_to_num(err), fmt="o", capsize=4, color=plotting.PALETTE[0])
    if len(t):
        m = float(t["margin"].iloc[0])
        ax.axvspan(-m, m, color="#999999", alpha=0.2, label=f"equivalence margin ±{m:.3g}")
    ax.axvline(0, color="#555555", lw=0.8)
    ax.set_yticks(y, [f"{p} ({o})" for p, o in zip(t["precision"], t["outcome"], strict=True)])
    name = _metric_name(result.task)
    return _finish(fig, ax, result, xlabel=f"{name} minus 32-true's (paired by seed; "
                   f"{'fraction' if name == 'accuracy' else 'metric units'}), 95 % interval",
                   title="AMP parity against 32-true")


def histograms(result: Result) -> Figure:
    """Activation gradients (share per binade) against fp16's and bf16's ranges."""
    fig, ax = plotting.figure()
    h = result.histograms.dropna(subset=["log2_low"])
    total = h["count"].sum()
    if total:
        ax.bar(h["log2_low"], 100 * h["count"] / total, width=1.0, align="edge",
               color="#555555", alpha=0.85)
    for name in ("fp16", "bf16"):
        f, c = F.FORMATS[name], plotting.FORMAT_COLORS[name]
        lo, hi = math.log2(f.min_subnormal), math.log2(f.max_finite)
        ax.axvline(lo, color=c, ls="--", lw=1.2, label=f"{name}: smallest subnormal 2^{lo:.0f}")
        if name == "fp16":
            ax.axvspan(lo, math.log2(f.min_normal), color=c, alpha=0.12,
                       label="fp16 subnormals (precision lost)")
        if len(h) and hi <= h["log2_low"].max() + 1:
            ax.axvline(hi, color=c, ls=":", lw=1.2, label=f"{name}: largest value")
    if len(h):
        lo = min(h["log2_low"].min(), math.log2(F.FORMATS["fp16"].min_subnormal)) - 1
        ax.set_xlim(lo, h["log2_low"].max() + 2)
    return _finish(fig, ax, result, xlabel="log2 |activation gradient| (bins one binade wide)",
                   ylabel="share of nonzero gradients (%)",
                   title="Activation gradients of the fp32 model vs 16-bit ranges")


def scaler_trace(result: Result) -> Figure:
    """The dynamic loss scale of the 16-mixed runs per step, skipped steps marked."""
    fig, ax = plotting.figure()
    h = result.history[result.history["precision"] == "16-mixed"]
    for i, (seed, part) in enumerate(h.groupby("seed")):
        c = plotting.PALETTE[i % len(plotting.PALETTE)]
        ax.step(part["step"], np.log2(part["loss_scale"]), where="post", color=c,
                label=f"seed {seed}")
        skipped = part[part["skipped"]]
        if len(skipped):
            ax.plot(skipped["step"], np.log2(skipped["loss_scale"]), "x", color=c)
    if h.empty:
        ax.text(0.5, 0.5, "16-mixed was not audited", ha="center", transform=ax.transAxes)
    return _finish(fig, ax, result, xlabel="optimizer step",
                   ylabel="log2 loss scale (x: skipped step)",
                   title="Dynamic loss scale in 16-mixed training")


def underflow(result: Result) -> Figure:
    """Flushed share of activation gradients against the loss scale, per format."""
    fig, ax = plotting.figure()
    for fmt, part in result.underflow.groupby("format", sort=False):
        c = plotting.FORMAT_COLORS.get(fmt)
        ax.plot(part["log2_scale"], 100 * part["flushed"], "o-", color=c, label=fmt)
        over = part[part["overflowed"]]
        if len(over):
            ax.plot(over["log2_scale"], 100 * over["flushed"], "x", ms=10, color=c,
                    label=f"{fmt}: some gradient overflows")
    ax.axhline(100 * FLUSH_LIMIT, color="#999999", ls="--", lw=1,
               label=f"{100 * FLUSH_LIMIT:.0f} % bar")
    return _finish(fig, ax, result, xlabel="log2 loss scale",
                   ylabel="nonzero activation gradients flushed (%)",
                   title="Underflow against the loss scale")


def ptq(result: Result) -> Figure:
    """Bits per weight against the metric (mean over seeds, 95 % interval), weight-only and
    W8A8 marked apart; the fp32 metric as a line."""
    fig, ax = plotting.figure()
    s = _ptq_summary(result.ptq)
    first = result.ptq.drop_duplicates("config").set_index("config")
    for j, (label, w8a8) in enumerate((("weight-only", False), ("weights and activations", True))):
        part = s[s["config"].map(lambda c: not _isna(first.loc[c, "activation_bits"])) == w8a8]
        if part.empty:
            continue
        bits = part["config"].map(lambda c: first.loc[c, "weight_bits"]).to_numpy(float)
        bits = bits + (0.1 if w8a8 else 0.0)  # side by side, not on top
        metric = part["metric"].to_numpy(float)
        err = np.nan_to_num(np.vstack([part["high"] - part["drop"],
                                       part["drop"] - part["low"]]).astype(float))
        ax.errorbar(bits, metric, yerr=err, fmt="o" if not w8a8 else "s", capsize=3,
                    color=plotting.PALETTE[j], label=label)
        for b, m, c in zip(bits, metric, part["config"], strict=True):
            ax.annotate(c, (b, m), textcoords="offset points", xytext=(5, 3), fontsize=7)
    if len(s):
        ax.axhline(float(s["fp32_metric"].mean()), color="#555555", ls="--", lw=1,
                   label="fp32 (32 bits)")
    return _finish(fig, ax, result, xlabel="weight bits",
                   ylabel=f"test {_metric_name(result.task)} (mean over seeds)",
                   title="Post-training quantization: bits against quality")


def speed(result: Result) -> Figure:
    """Training-step and inference time per precision as a ratio to 32-true (one run), with the
    95 % interval of the per-round ratios as error bars."""
    fig, ax = plotting.figure()
    t = result.speed
    y = np.arange(len(t))
    for shift, name, label in ((-0.2, "train_step_ratio", "training step"),
                               (0.2, "inference_ratio", "inference forward")):
        err = None
        if f"{name}_low" in t:  # the 95 % interval of the per-round ratios
            err = np.nan_to_num([t[name] - t[f"{name}_low"], t[f"{name}_high"] - t[name]])
        ax.barh(y + shift, t[name], height=0.4, label=label, xerr=err, capsize=3,
                error_kw={"ecolor": "#333333", "lw": 1})
    ax.axvline(1.0, color="#555555", lw=0.8)
    ax.set_yticks(y, t["precision"])
    return _finish(fig, ax, result, xlabel="time / 32-true's time (median of interleaved "
                   "repeats, bars: 95 % interval; below 1 is faster)",
                   title="Speed per precision on this machine")
