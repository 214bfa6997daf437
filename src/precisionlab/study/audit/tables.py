"""The audit's tables ready to display: readable headers, no index, sensible digits."""

from __future__ import annotations

import pandas as pd

from precisionlab.study.audit.measure import Result
from precisionlab.study.audit.summary import _ptq_summary

__all__ = ["memory", "modules", "parity", "ptq", "speed", "underflow"]


def _interval(mean: float, low: float, high: float, digits: int = 3) -> str:
    """`+m [+lo, +hi]` with `digits` significant digits; rounding noise (|x| < 1e-9, e.g. a
    mean of differences that cancel) prints as 0."""
    mean, low, high = (0.0 if pd.notna(v) and abs(v) < 1e-9 else v for v in (mean, low, high))
    if pd.isna(mean):
        return "n/a"
    if pd.isna(low):
        return f"{mean:+.{digits}g}"
    return f"{mean:+.{digits}g} [{low:+.{digits}g}, {high:+.{digits}g}]"


def _pct(x: float) -> str:
    return "n/a" if pd.isna(x) else f"{x * 100:.3g} %"


def _kib(x: float) -> str:
    return "n/a" if x is None or pd.isna(x) else f"{x / 1024:,.1f}"


def parity(result: Result) -> pd.DataFrame:
    """Per precision: mean metric, paired difference to 32-true (95 % interval), outcome,
    finite runs, and the gradient cosine to 32-true."""
    cos = result.cosine.groupby("precision", sort=False)["cosine"].mean() \
        if len(result.cosine) else pd.Series(dtype=float)
    rows = []
    for r in result.parity.itertuples():
        rows.append({"precision": r.precision, "metric (mean)": f"{r.metric_mean:.4g}",
                     "metric - 32-true [95 % CI]": _interval(r.metric_diff, r.metric_low,
                                                             r.metric_high),
                     "test loss - 32-true [95 % CI]": _interval(r.loss_diff, r.loss_low,
                                                                r.loss_high),
                     "outcome": r.outcome, "finite runs": f"{r.finite_runs}/{r.n}",
                     "gradient cosine": f"{cos.get(r.precision, float('nan')):.6f}"})
    return pd.DataFrame(rows)


def modules(result: Result) -> pd.DataFrame:
    """Per leaf module (forward order): |output| and |output gradient| maxima, fp16 overflow
    flags, and the share of output gradients flushed in fp16 and bf16 without scaling."""
    t = result.modules.sort_values("fwd_order")
    return pd.DataFrame({
        "module": t["name"], "type": t["type"],
        "max |output|": t["fwd_amax"].map(lambda v: f"{v:.3g}"),
        "max |gradient|": t["grad_amax"].map(lambda v: f"{v:.3g}"),
        "output > fp16 max": t["fwd_overflow_fp16"].map({True: "yes", False: ""}),
        "gradient > fp16 max": t["grad_overflow_fp16"].map({True: "yes", False: ""}),
        "gradients flushed, fp16": t["grad_flushed_fp16"].map(_pct),
        "gradients flushed, bf16": t["grad_flushed_bf16"].map(_pct),
    }).reset_index(drop=True)


def underflow(result: Result) -> pd.DataFrame:
    """Flushed share of nonzero activation gradients per loss scale (rows) and format
    (columns); '(overflow)' marks a scale at which some gradient overflows."""
    t = result.underflow.copy()
    t["cell"] = [_pct(f) + (" (overflow)" if o else "")
                 for f, o in zip(t["flushed"], t["overflowed"], strict=True)]
    wide = t.pivot(index="log2_scale", columns="format", values="cell")
    wide = wide[list(dict.fromkeys(t["format"]))]  # the measured order: fp16, then bf16
    wide.index = [f"2^{k}" for k in wide.index]
    return wide.rename_axis("loss scale").reset_index()


def ptq(result: Result) -> pd.DataFrame:
    """Per PTQ configuration: mean metric, fp32 metric, and the drop (positive = worse) with
    its 95 % interval over seeds."""
    s = _ptq_summary(result.ptq)
    return pd.DataFrame({
        "configuration": s["config"], "metric (mean)": s["metric"].map(lambda v: f"{v:.4g}"),
        "fp32 metric": s["fp32_metric"].map(lambda v: f"{v:.4g}"),
        "drop [95 % CI]": [_interval(m, lo, hi) for m, lo, hi in
                           zip(s["drop"], s["low"], s["high"], strict=True)],
        "seeds": s["n"]})


def speed(result: Result) -> pd.DataFrame:
    """Per precision: training-step and inference times (ms) and their ratios to 32-true."""
    t = result.speed
    return pd.DataFrame({
        "precision": t["precision"],
        "train step (ms)": (t["train_step_s"] * 1e3).map(lambda v: f"{v:.3g}"),
        "train step / 32-true": t["train_step_ratio"].map(lambda v: f"{v:.2f}x"),
        "inference (ms)": (t["inference_s"] * 1e3).map(lambda v: f"{v:.3g}"),
        "inference / 32-true": t["inference_ratio"].map(lambda v: f"{v:.2f}x")})


def memory(result: Result) -> pd.DataFrame:
    """Per precision: KiB of weights, gradients, optimizer state and saved activations (and
    the CUDA peak of a training step on a GPU)."""
    t = result.memory
    out = pd.DataFrame({
        "precision": t["precision"], "weights (KiB)": t["weights_bytes"].map(_kib),
        "gradients (KiB)": t["gradients_bytes"].map(_kib),
        "optimizer state (KiB)": t["optimizer_bytes"].map(_kib),
        "saved activations (KiB)": t["activation_bytes"].map(_kib)})
    if t["peak_cuda_bytes"].notna().any():
        out["CUDA peak (KiB)"] = t["peak_cuda_bytes"].map(_kib)
    return out
