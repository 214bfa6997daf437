"""The audit's summary: a JSON-ready dict of what was measured, and recommendations.

Each recommendation is a plain sentence produced by a small rule function that reads the
measured tables, with its thresholds named below, and cites the number it rests on.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from precisionlab.formats import adam_underflow
from precisionlab.study import stats
from precisionlab.study.audit.measure import FP16_MAX, Result, higher_is_better
from precisionlab.study.audit.spec import (
    ADAM_EPS,
    PURE_FORMATS,
    WORKING_PURE,
    Subject,
    eps_is_zero,
    recipe,
)
from precisionlab.study.designs import PURE

__all__ = ["FLUSH_LIMIT", "MAX_SEEDS", "SPEED_GAIN", "diverged_advice", "jsonable",
           "keep_in_fp32", "loss_scale_advice", "overflow_of", "precision_advice", "ptq_advice",
           "recommendations", "seeds_needed", "smallest_scale", "summary",
           "underpowered_advice"]

# A lower precision is recommended for training only if its step takes at most this share of
# 32-true's time: interleaved medians on a shared machine still move by a few per cent, and a
# gain below 5 % is not worth a change of numerics.
SPEED_GAIN = 0.95
# The issue's bar for underflow: a loss scale is needed when more than 1 % of the nonzero
# activation gradients flush to zero (about where chapter 03 saw fp16 training start to suffer).
FLUSH_LIMIT = 0.01
# An underpowered precision's advice names the seeds that would detect the margin, searched up to
# this many; beyond it, a wider margin or more test examples is the better lever.
MAX_SEEDS = 50
OPTIMIZER_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}


def jsonable(value: object) -> object:
    """`value` with numpy/pandas scalars made Python ones and NaN/inf made None (JSON-safe)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str | int):
        return value
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)


def _metric_name(task: str) -> str:
    return {"classification": "accuracy", "regression": "MSE",
            "language-model": "perplexity"}[task]


def _iv(mean: float, low: float, high: float, n: int) -> str:
    return stats.Interval(mean, low, high, n).text()


def _cost(task: str, drop: float, ref: float) -> str:
    """A metric change (drop > 0 is worse) as a verb phrase in readable units: accuracy points,
    or per cent of the fp32 MSE/perplexity."""
    if task == "classification":
        if round(abs(drop) * 100, 1) == 0:
            return "changes accuracy by less than 0.05 points"
        return f"{'costs' if drop > 0 else 'gains'} {abs(drop) * 100:.1f} points of accuracy"
    rel = drop / abs(ref) * 100 if ref else math.nan
    if round(abs(rel), 1) == 0:
        return f"changes {_metric_name(task)} by less than 0.05 %"
    return f"{'raises' if not rel < 0 else 'lowers'} {_metric_name(task)} by {abs(rel):.1f} %"


def _sci(x: float) -> str:
    """A small number as a reader types it: 1e-4, 5.96e-8 (three significant digits)."""
    mantissa, exponent = f"{x:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _label(label: str, optimizer: str | None) -> str:
    """A run label for a sentence: a WORKING_PURE recipe says what it changes."""
    if label not in WORKING_PURE:
        return label
    _, eps = WORKING_PURE[label]
    name = OPTIMIZER_NAMES.get(optimizer, "Adam")
    return f"{label} (pure fp16 with {name}'s eps raised to {_sci(eps)})"


def precision_advice(parity: pd.DataFrame, speed: pd.DataFrame, task: str,
                     optimizer: str | None = None, eps: float | None = None) -> list[str]:
    """Which precision to train in: the fastest one whose parity outcome is 'equivalent' or
    'better' and whose training step takes at most SPEED_GAIN x 32-true's; else 32-true, saying
    why (equivalent ones are not faster, or none is equivalent). Then `underpowered_advice`
    (inside the margin, too few seeds to tell: never recommended) and `diverged_advice` for
    the audit's `optimizer` and Adam `eps` (None: unknown optimizer, torch's eps)."""
    out = []
    ratio = speed.set_index("precision")["train_step_ratio"] if len(speed) else pd.Series()
    ok = parity[parity["outcome"].isin(["equivalent", "better"])]
    fast = ok[ok["precision"].map(lambda p: ratio.get(p, math.inf) <= SPEED_GAIN)]
    if len(fast):
        best = fast.loc[fast["precision"].map(ratio).idxmin()]
        out.append(f"Train in {_label(best['precision'], optimizer)}: its "
                   f"{_metric_name(task)} differs from "
                   f"32-true by {_iv(best['metric_diff'], best['metric_low'], best['metric_high'], best['n'])}"  # noqa: E501
                   f" (within the margin {best['margin']:.3g}), and a training step takes "
                   f"{ratio[best['precision']]:.2f}x the time of 32-true on this machine.")
    elif len(ok):
        names = ", ".join(f"{p} ({ratio.get(p, math.nan):.2f}x 32-true's step time)"
                          for p in ok["precision"])
        match, are = ("matches", "is") if len(ok) == 1 else ("match", "are")
        out.append(f"Train in 32-true: {names} {match} it within the margin but {are} not at "
                   f"least {(1 - SPEED_GAIN) * 100:.0f} % faster per training step on this "
                   "machine.")
    else:
        names = ", ".join(f"{r.precision}: {r.outcome}" for r in parity.itertuples())
        out.append("Train in 32-true: no lower precision was shown equivalent to it "
                   f"({names or 'none audited'}).")
    return out + underpowered_advice(parity, task) + diverged_advice(parity, optimizer, eps)


def seeds_needed(detectable: float, n: int, margin: float) -> int | None:
    """The fewest seeds that detect an effect of `margin` at 80 % power if the paired
    differences keep the spread these `n` seeds showed (a detectable effect is proportional to
    it); None when that spread is unknown (n < 2, none seen) or more than MAX_SEEDS are needed."""
    if not (n >= 2 and math.isfinite(detectable) and detectable > 0):
        return None
    sd = detectable / stats.detectable_effect(1.0, n)
    for k in range(n + 1, MAX_SEEDS + 1):
        if stats.detectable_effect(sd, k) <= margin:
            return k
    return None


def underpowered_advice(parity: pd.DataFrame, task: str) -> list[str]:
    """A sentence per 'underpowered' precision: its difference lies inside the margin, but the
    seeds could not have detected one of the margin's size, so it is not shown equivalent (and
    not recommended); it says how many seeds would tell."""
    out = []
    for r in parity[parity["outcome"] == "underpowered"].itertuples():
        k = seeds_needed(r.detectable, r.n, r.margin)
        if k is not None:
            more = f"an audit with about {k} seeds (the `seeds` parameter) would tell"
        elif r.n >= 2 and math.isfinite(r.detectable) and r.detectable > 0:
            more = (f"more than {MAX_SEEDS} seeds would be needed at this spread: widen the "
                    "margin or evaluate more test examples")
        else:
            more = "more seeds would show how much they vary"
        could = ("could not estimate the noise" if not r.detectable > 0
                 else f"could only detect a difference of {r.detectable:.3g} at 80 % power")
        out.append(f"Too few seeds to judge {r.precision}: its {_metric_name(task)} differs from "
                   f"32-true by {_iv(r.metric_diff, r.metric_low, r.metric_high, r.n)}, inside "
                   f"the margin {r.margin:.3g}, but {r.n} seeds {could}, so it is not shown "
                   f"equivalent; {more}.")
    return out


def diverged_advice(parity: pd.DataFrame, optimizer: str | None = None,
                    eps: float | None = None) -> list[str]:
    """A sentence per precision with a diverged run advising against it. Where it is a pure
    precision trained by Adam/AdamW at an eps its format rounds to 0, the sentence says that
    the optimizer setting, not the model, is the cause (`formats.adam_underflow`'s numbers),
    how to fix it, and how the audit's WORKING_PURE run with a held eps fared."""
    out = []
    for r in parity[parity["outcome"] == "diverged"].itertuples():
        runs = f"{r.n - r.finite_runs} of {r.n} runs ended with a non-finite test loss"
        precision, run_eps = recipe(r.precision, eps)
        if optimizer is None or not eps_is_zero(precision, optimizer, run_eps):
            out.append(f"Avoid {r.precision}: {runs}.")
            continue
        fmt, name = PURE_FORMATS[precision], OPTIMIZER_NAMES[optimizer]
        run_eps = ADAM_EPS if run_eps is None else run_eps
        u = adam_underflow(fmt, eps=run_eps)
        working = [(label, e) for label, (p, e) in WORKING_PURE.items() if p == precision]
        held = working[0][1] if working else 1e-4
        text = (f"Avoid {r.precision} with {name}'s eps at {_sci(run_eps)}: {runs}, and that "
                f"is the optimizer setting, not the model. eps {_sci(run_eps)} rounds to 0 in "
                f"{fmt} (it is below half of {fmt}'s smallest subnormal, "
                f"{_sci(u['min_subnormal'])}), and {name}'s second moment v = (1 - beta2) g^2 "
                f"is 0 in {fmt} for every |g| <= {u['v_zero_below']:.2g}, so the update "
                "m / (sqrt(v) + eps) divides by 0 wherever a gradient is that small, on any "
                f"model. Raise eps to one {fmt} holds (e.g. {_sci(held)}) or train in "
                f"{PURE[precision]}.")
        for label, _ in working:
            w = parity[parity["precision"] == label]
            if not len(w):
                continue
            w = w.iloc[0]
            ran = f"The audit's own run with eps {_sci(held)} ('{label}')"
            if w["outcome"] == "diverged":
                text += (f" {ran} diverged too ({w['n'] - w['finite_runs']} of {w['n']} runs), "
                         f"so {precision} fails this model beyond eps: train in "
                         f"{PURE[precision]}.")
            else:
                text += (f" {ran} stayed finite in all {w['n']} runs; its outcome against "
                         f"32-true: {w['outcome']}.")
        out.append(text)
    return out


def overflow_of(modules: pd.DataFrame, fp16_inf: str | None) -> dict | None:
    """The first module in forward order whose output exceeds fp16's max, else the first in
    backward order whose output gradient does, else the first module with an inf in an actual
    fp16 forward; None if none. `fp16_forward_inf` records that confirmation."""
    found = None
    if modules.empty:
        fwd = bwd = modules
    else:
        fwd = modules[modules["fwd_overflow_fp16"]].sort_values("fwd_order")
        bwd = modules[modules["grad_overflow_fp16"]].sort_values("bwd_order")
    if len(fwd):
        r = fwd.iloc[0]
        found = {"module": r["name"], "type": r["type"], "where": "forward",
                 "amax": float(r["fwd_amax"])}
    elif len(bwd):
        r = bwd.iloc[0]
        found = {"module": r["name"], "type": r["type"], "where": "backward",
                 "amax": float(r["grad_amax"])}
    elif fp16_inf is not None:
        found = {"module": fp16_inf, "type": None, "where": "fp16 forward", "amax": None}
    if found is not None:
        found["fp16_forward_inf"] = fp16_inf
    return found


def keep_in_fp32(overflow: dict | None) -> str | None:
    """A sentence naming the module to keep in fp32, with the value that leaves fp16's range;
    None when nothing overflows."""
    if overflow is None:
        return None
    name = overflow["module"]
    if overflow["where"] == "forward":
        return (f"Keep `{name}` in fp32: its output reaches {overflow['amax']:.3g}, above fp16's "
                f"largest value {FP16_MAX:.0f}.")
    if overflow["where"] == "backward":
        return (f"Keep `{name}` in fp32 (or lower the loss scale): the gradient of its output "
                f"reaches {overflow['amax']:.3g} in fp32, above fp16's largest value "
                f"{FP16_MAX:.0f}.")
    return (f"Keep `{name}` in fp32: in an fp16 forward its output is the first to hold inf, "
            "although no fp32 value exceeds fp16's range (an fp16 intermediate overflows).")


def smallest_scale(underflow: pd.DataFrame, fmt: str) -> int | None:
    """The smallest log2 scale with flushed share < FLUSH_LIMIT and no overflow, or None."""
    part = underflow[(underflow["format"] == fmt) & (underflow["flushed"].fillna(0) < FLUSH_LIMIT)
                     & ~underflow["overflowed"]]
    return int(part["log2_scale"].min()) if len(part) else None


def loss_scale_advice(underflow: pd.DataFrame, fmt: str = "fp16") -> str:
    """Whether `fmt` needs a loss scale: none when under FLUSH_LIMIT unscaled; else the
    smallest scale that brings flushing under it without overflow; else none found."""
    part = underflow[underflow["format"] == fmt].set_index("log2_scale")
    flushed = float(part.loc[0, "flushed"]) if 0 in part.index else math.nan
    limit = f"{FLUSH_LIMIT * 100:.0f} %"
    if math.isnan(flushed) or (flushed < FLUSH_LIMIT and not part.loc[0, "overflowed"]):
        share = "none" if math.isnan(flushed) else f"{flushed * 100:.2g} %"
        return (f"{fmt} needs no loss scale for this model: {share} of the nonzero activation "
                f"gradients flush to zero unscaled (under {limit}).")
    k = smallest_scale(underflow, fmt)
    if k is not None:
        return (f"For {fmt}, use a loss scale of at least 2^{k}: unscaled, {flushed * 100:.2g} % "
                f"of the nonzero activation gradients flush to zero; at 2^{k}, "
                f"{float(part.loc[k, 'flushed']) * 100:.2g} %.")
    ks = list(part.index)
    return (f"No loss scale from 2^{min(ks)} to 2^{max(ks)} brings {fmt} flushing under {limit} "
            f"without overflow (unscaled: {flushed * 100:.2g} %): prefer bf16 or fp32.")


def _ptq_summary(ptq: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for name, part in ptq.groupby("config", sort=False):
        iv = stats.interval(part["drop"].to_numpy())
        rows.append({"config": name, "drop": iv.mean, "low": iv.low, "high": iv.high, "n": iv.n,
                     "fp32_metric": float(part["fp32_metric"].mean()),
                     "metric": float(part["metric"].mean())})
    return pd.DataFrame(rows, columns=["config", "drop", "low", "high", "n", "fp32_metric",
                                       "metric"])


def ptq_advice(ptq: pd.DataFrame, task: str, margin: float) -> list[str]:
    """One sentence for the configurations whose mean drop is within the margin (cheap), and
    one for those beyond it (costly); nothing when no PTQ was run. For MSE and perplexity the
    margin is relative to the fp32 metric, as in parity."""
    if ptq.empty:
        return []
    s = _ptq_summary(ptq)
    scaled = margin if higher_is_better(task) else margin * s["fp32_metric"].abs()
    cheap, costly = s[s["drop"] <= scaled], s[~(s["drop"] <= scaled)]
    out = []
    if len(cheap):
        items = "; ".join(f"{r.config} {_cost(task, r.drop, r.fp32_metric)}"
                          for r in cheap.itertuples())
        out.append(f"Post-training quantization within the margin: {items}.")
    if len(costly):
        items = "; ".join(f"{r.config} {_cost(task, r.drop, r.fp32_metric)}"
                          for r in costly.itertuples())
        out.append(f"Post-training quantization beyond the margin: {items}.")
    return out


def recommendations(result: Result) -> list[str]:
    """All recommendation sentences for a result, in a fixed order: precision, fp32 modules,
    loss scale, PTQ."""
    task = result.task
    out = precision_advice(result.parity, result.speed, task, result.params.get("optimizer"),
                           result.params.get("eps"))
    keep = keep_in_fp32(overflow_of(result.modules, result.fp16_forward_inf))
    if keep:
        out.append(keep)
    if len(result.underflow):
        out.append(loss_scale_advice(result.underflow, "fp16"))
    out += ptq_advice(result.ptq, task, result.params["margin"])
    return out


def _by(table: pd.DataFrame, key: str) -> dict:
    return {r[key]: {k: v for k, v in r.items() if k != key} for r in table.to_dict("records")}


def summary(subject: Subject, result: Result) -> dict:
    """The audit as a JSON-ready dict (str/int/float/bool/None/list/dict, NaN as None): model,
    data, task, machine, parameters, amp, overflow, underflow, ptq, speed, memory and
    recommendations."""
    task = result.task
    amp = {"metric": _metric_name(task), "higher_is_better": higher_is_better(task),
           "precisions": {}}
    runs = result.runs
    for p in runs["precision"].unique():
        part = runs[runs["precision"] == p]
        cos = result.cosine[result.cosine["precision"] == p]["cosine"] if len(result.cosine) \
            else pd.Series(dtype=float)
        entry = {"metric_mean": float(part["metric"].mean()),
                 "test_loss_mean": float(part["test_loss"].mean()),
                 "finite_runs": int(part["finite"].sum()), "runs": len(part),
                 "skipped_steps_mean": float(part["skipped_steps"].mean()),
                 "gradient_cosine": float(cos.mean()) if len(cos) else None}
        par = result.parity[result.parity["precision"] == p]
        if len(par):
            r = par.iloc[0]
            entry.update({"loss_diff": {"mean": r["loss_diff"], "low": r["loss_low"],
                                        "high": r["loss_high"]},
                          "metric_diff": {"mean": r["metric_diff"], "low": r["metric_low"],
                                          "high": r["metric_high"]},
                          "n": int(r["n"]), "margin": r["margin"],
                          "detectable": r["detectable"], "outcome": r["outcome"]})
        amp["precisions"][p] = entry
    underflow = {}
    for fmt in result.underflow["format"].unique() if len(result.underflow) else []:
        part = result.underflow[result.underflow["format"] == fmt]
        unscaled = part[part["log2_scale"] == 0]["flushed"]
        underflow[fmt] = {"flushed_unscaled": float(unscaled.iloc[0]) if len(unscaled) else None,
                          "smallest_log2_scale_under_1pct": smallest_scale(result.underflow, fmt),
                          "by_log2_scale": {int(r.log2_scale): {"flushed": r.flushed,
                                                                "overflowed": r.overflowed}
                                            for r in part.itertuples()}}
    ptq = {}
    for r in _ptq_summary(result.ptq).itertuples() if not result.ptq.empty else []:
        first = result.ptq[result.ptq["config"] == r.config].iloc[0]
        ptq[r.config] = {"weight_bits": first["weight_bits"],
                         "granularity": first["granularity"],
                         "group_size": first["group_size"],
                         "activation_bits": first["activation_bits"],
                         "metric_mean": r.metric, "fp32_metric_mean": r.fp32_metric,
                         "drop": {"mean": r.drop, "low": r.low, "high": r.high}, "n": r.n}
    out = {
        "model": {"name": subject.name, "parameters": subject.parameters,
                  "spec": subject.model_spec},
        "data": {"spec": subject.data_spec, "n_train": len(subject.split.x_train),
                 "n_test": len(subject.split.x_test)},
        "task": task,
        "machine": {"device": result.device, "hardware": result.hardware,
                    "matmul16_in_training": result.matmul16},
        "parameters": result.params,
        "amp": amp,
        "overflow": overflow_of(result.modules, result.fp16_forward_inf),
        "underflow": underflow,
        "ptq": ptq,
        "speed": _by(result.speed, "precision") if len(result.speed) else {},
        "memory": _by(result.memory, "precision") if len(result.memory) else {},
        "recommendations": recommendations(result),
    }
    return jsonable(out)
