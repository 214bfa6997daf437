"""Verdict rules of chapter 02 (mixed precision): one function per claim, from the tidy tables
of `precisionlab.experiments.mixed` to a `claims.Finding`.

Accuracy comparisons are paired by seed (`stats.compare`) against the margin each claim
declares below; "beyond noise" means the 95 % paired interval excludes 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from precisionlab import stats
from precisionlab.claims import Finding, sig2
from precisionlab.experiments.mixed import PURE, adam_underflow

# "Same accuracy" = within 1 percentage point of test accuracy: a difference a reader of the
# claims would not call a loss (digits' 450 test images: 1 image = 0.22 pp).
ACC_MARGIN = 0.01
# A step "equals" the fp32 step (or half of it) when its projection on the fp32 step is within
# 0.1 of 1 (of 0.5): ten times finer than the factor of two the claim is about.
STEP_MARGIN = 0.1
# A gradient norm "equals" fp64's within 5 %; the claimed factor 2 would be 50 % (or 100 %) off.
NORM_MARGIN = 0.05
# Pure 16-bit training "stalls" when at least 5 % more of the wanted weight updates are lost
# than with fp32 master weights (AMP loses about 0 %).
STALL_MARGIN = 0.05

LOW = {"16-mixed": "fp16", "bf16-mixed": "bf16"}


def _pp(iv: stats.Interval) -> str:
    return iv.text(scale=100, unit=" pp")


# --------------------------------------------------------------------------- MP-1, MP-2 ---

def mp1_mp2(claim: str, casts: pd.DataFrame) -> Finding:
    """MP-1/MP-2 (floats to integers and back; a float part plus an integer part), from the
    traced steps' casts (`experiments.mixed.casts`): refuted when no cast turns a float into an
    integer type, supported when one does."""
    pairs = ", ".join(sorted(set(casts.pair)))
    to_int = casts[casts.to_integer]
    if to_int.empty:
        return Finding(claim, "refuted", f"none of the {len(casts)} casts in the traced "
                       f"16-mixed and bf16-mixed steps turns a float into an integer; the casts "
                       f"are {pairs}", "tbl-trace")
    return Finding(claim, "supported", f"{len(to_int)} of {len(casts)} casts in the traced steps "
                   f"turn floats into integers ({', '.join(sorted(set(to_int.pair)))})",
                   "tbl-trace")


# ------------------------------------------------------------------------------- MP-3 ---

def mp3(tensors: pd.Series) -> Finding:
    """MP-3 (forward in 16 bits, gradients and updates in fp32), from the bf16-mixed column of
    `experiments.mixed.tensor_dtypes`: supported when activations are 16-bit and every gradient
    (activation gradients too), master weight and optimizer state is fp32; nuanced when the
    activation gradients are 16-bit as well; refuted when the forward pass is not 16-bit or the
    stored gradients, master weights or optimizer state are not fp32."""
    act, act_grad = tensors["activation"], tensors["activation gradient"]
    kept = [tensors[k] for k in tensors.index
            if k == "weight gradient (.grad)" or k.startswith(("weight (master", "optimizer"))]
    if act == "fp32" or any(v != "fp32" for v in kept):
        return Finding("MP-3", "refuted", f"activations {act}, stored gradients/master weights/"
                       f"optimizer state {', '.join(sorted(set(kept)))}", "tbl-tensors")
    if act_grad == "fp32":
        return Finding("MP-3", "supported", f"activations are {act}; activation gradients, "
                       ".grad, master weights and optimizer state are fp32", "tbl-tensors")
    return Finding("MP-3", "nuanced", f"forward matmuls and activations are {act}, and so are "
                   "the activation gradients of the backward pass; only the stored weight "
                   "gradients (.grad), master weights, optimizer state and the update are fp32",
                   "tbl-tensors")


# ------------------------------------------------------------------------------- MP-4 ---

def mp4(updates: pd.DataFrame) -> Finding:
    """MP-4 (AMP halves the learning rate), from `one_step_updates`: each AMP step's projection
    on the fp32 step (step_ratio), paired by seed. Refuted when every AMP policy's ratio is
    within STEP_MARGIN of 1, supported when within STEP_MARGIN of 0.5, else nuanced. The
    measured lr/2 step is the yardstick a halved rule would give."""
    parts, near_one, near_half = [], [], []
    half = stats.interval(updates[updates.step == "32-true, lr/2"].step_ratio)
    for precision in LOW:
        r = updates[updates.step == f"{precision}, lr"].step_ratio
        one, hal = stats.interval(r - 1), stats.interval(r - 0.5)
        near_one.append(one.within(STEP_MARGIN))
        near_half.append(hal.within(STEP_MARGIN))
        parts.append(f"{precision} step = {sig2(r.mean())} x the fp32 step "
                     f"(ratio - 1: {one.text()})")
    text = "; ".join(parts) + f"; a measured fp32 step at lr/2 is {sig2(half.mean)} x"
    if all(near_one):
        return Finding("MP-4", "refuted", text + ": AMP keeps the learning rate", "tbl-update")
    if all(near_half):
        return Finding("MP-4", "supported", text + ": AMP steps are half as long", "tbl-update")
    return Finding("MP-4", "nuanced", text + f": neither within {STEP_MARGIN} of 1 nor of 0.5",
                   "tbl-update")


# ------------------------------------------------------------------------------- MP-5 ---

def mp5(updates: pd.DataFrame) -> Finding:
    """MP-5 (AMP halves the gradient's precision: a factor 2), from `one_step_updates`: refuted
    when every AMP gradient norm ratio to fp64 is within NORM_MARGIN of 1, supported when within
    it of 0.5 or 2, else nuanced. The reason gives the error in units of the format's u."""
    parts, near_one, near_two = [], [], []
    for precision in LOW:
        d = updates[updates.step == f"{precision}, lr"]
        ratio = d.grad_norm_ratio_vs_fp64
        near_one.append(bool(((ratio - 1).abs() < NORM_MARGIN).all()))
        near_two.append(bool(((ratio - 0.5).abs() < NORM_MARGIN / 2).all()
                             or ((ratio - 2).abs() < 2 * NORM_MARGIN).all()))
        parts.append(f"{precision}: norm ratio {ratio.min():.4f} to {ratio.max():.4f}, "
                     f"relative error {sig2(d.grad_rel_err_vs_fp64.mean())} = "
                     f"{sig2((d.grad_rel_err_vs_fp64 / d.unit_roundoff).mean())} u")
    text = "against fp64, " + "; ".join(parts)
    if all(near_one):
        return Finding("MP-5", "refuted", text + ": rounding set by the unit roundoff u, "
                       "no factor 2", "tbl-update")
    if all(near_two):
        return Finding("MP-5", "supported", text + ": gradients off by a factor 2", "tbl-update")
    return Finding("MP-5", "nuanced", text, "tbl-update")


# ------------------------------------------------------------------------------- MP-6 ---

def mp6(final: pd.DataFrame) -> Finding:
    """MP-6 (AMP reaches the same or better accuracy than fp32), from `finals` of the precision
    runs (task, precision, seed, test_metric): per task and AMP policy, the paired difference to
    32-true against ACC_MARGIN. Supported when every one is equivalent or higher, refuted when
    any is lower, nuanced when some are inconclusive."""
    outcomes, parts = [], []
    for task, part in final.groupby("task", sort=False):
        for precision in LOW:
            c = stats.compare(part, "test_metric", "precision", precision, "32-true", ACC_MARGIN)
            outcomes.append(c.outcome)
            parts.append(f"{task} {precision} {_pp(c.interval)} {c.outcome}")
    text = f"test accuracy minus 32-true's, paired by seed (margin {100 * ACC_MARGIN:g} pp): " + \
        "; ".join(parts)
    if "lower" in outcomes:
        return Finding("MP-6", "refuted", text, "tbl-final")
    if all(o in ("equivalent", "higher") for o in outcomes):
        better = "" if "higher" in outcomes else "; never better beyond noise"
        return Finding("MP-6", "supported", text + better, "tbl-final")
    return Finding("MP-6", "nuanced", text + "; more seeds needed for the inconclusive ones",
                   "tbl-final")


# ------------------------------------------------------------------------------- MP-8 ---

def mp8(pairs: pd.DataFrame, final: pd.DataFrame) -> Finding:
    """MP-8 (AMP may be unsuitable for precision-sensitive tasks), from the trained close-pairs
    runs (variant, seed, test_metric) and the ordinary tasks' `finals` (MP-6's table).

    Refuted when AMP matches fp32 on the precision-sensitive task; supported when AMP is lower
    there and also on an ordinary task; nuanced when it is lower only on the sensitive task (and
    the reason says whether keeping the sensitive op in fp32 restores it)."""
    sens = {p: stats.compare(pairs, "test_metric", "variant", p, "32-true", ACC_MARGIN)
            for p in LOW}
    island = stats.compare(pairs, "test_metric", "variant", "bf16-mixed, g in FP32Island",
                           "32-true", ACC_MARGIN)
    ordinary = [stats.compare(part, "test_metric", "precision", p, "32-true", ACC_MARGIN).outcome
                for _, part in final.groupby("task") for p in LOW]
    text = ("trained close pairs, accuracy minus 32-true's: " +
            "; ".join(f"{p} {_pp(c.interval)}" for p, c in sens.items()) +
            f"; bf16-mixed with the comparison kept in fp32 {_pp(island.interval)}")
    if all(c.outcome in ("equivalent", "higher") for c in sens.values()):
        return Finding("MP-8", "refuted", text + ": no loss even where precision matters",
                       "fig-close-pairs")
    if not any(c.outcome == "lower" for c in sens.values()):
        return Finding("MP-8", "nuanced", text + ": inconclusive", "fig-close-pairs")
    if "lower" in ordinary:
        return Finding("MP-8", "supported", text + "; AMP is lower on ordinary tasks too",
                       "fig-close-pairs")
    fix = ("restores it" if island.outcome in ("equivalent", "higher")
           else "does not restore it")
    return Finding("MP-8", "nuanced", text + "; the digits and MNIST-1D runs show no loss "
                   f"beyond noise, keeping the one sensitive op in fp32 {fix}, and mixed "
                   "precision matched fp32 on speech recognition (Micikevicius et al. 2018): "
                   "sensitivity is per quantity, not per task name", "fig-close-pairs")


# ------------------------------------------------------------------------------- MP-9 ---

def mp9(updates: pd.DataFrame) -> Finding:
    """MP-9 (AMP reduces the precision loss of models), from `one_step_updates`: log10 of each
    AMP gradient's relative error against fp64 minus log10 of fp32's, paired by seed (a ratio of
    errors: they span decades, so a difference of raw errors would be ruled by one seed).
    Supported when every AMP error is lower than fp32's beyond noise, refuted when every one is
    higher, else nuanced."""
    full = updates[updates.step.str.endswith(", lr")]
    full = full.assign(log_err=np.log10(full.grad_rel_err_vs_fp64))  # errors differ by decades
    err32 = full[full.precision == "32-true"].grad_rel_err_vs_fp64.mean()
    ivs = {p: stats.paired(full, "log_err", "precision", p, "32-true") for p in LOW}
    text = ("gradient error against fp64: " + "; ".join(
        f"{p} {sig2(full[full.precision == p].grad_rel_err_vs_fp64.mean())} "
        f"({sig2(10 ** ivs[p].mean)} x fp32's, geometric mean over seeds)"
        for p in LOW) + f" vs 32-true {sig2(err32)}")
    if all(iv.low > 0 for iv in ivs.values()):
        return Finding("MP-9", "refuted", text + ": mixed precision adds rounding error, it "
                       "removes none", "tbl-update")
    if all(iv.high < 0 for iv in ivs.values()):
        return Finding("MP-9", "supported", text + ": mixed precision has less error than fp32",
                       "tbl-update")
    return Finding("MP-9", "nuanced", text + ": not beyond noise for every policy", "tbl-update")


# ------------------------------------------------------------------------------ MP-11 ---

def mp11(probe: pd.DataFrame) -> Finding:
    """MP-11 (precision chosen per op type automatically), from `autocast_table`: supported when,
    for fp32 inputs, autocast lowers some op types and keeps others in fp32 (a per-type choice);
    refuted when it lowers all of them or none. The reason lists, per device and input dtype,
    which ops come out low, fp32, or in the input's dtype."""
    parts, per_type = [], []
    for (device, low), d in probe.groupby(["device", "autocast"], sort=False):
        f32 = d[d.input == "fp32"].set_index("op").output
        lowin = d[d.input == low].set_index("op").output
        lowered = sorted(f32[f32 == low].index)
        upcast = sorted(lowin[lowin == "fp32"].index)
        follow = sorted(set(f32[f32 == "fp32"].index) - set(upcast))
        per_type.append(0 < len(lowered) < len(f32))
        parts.append(f"{device} {low} autocast: {', '.join(lowered) or 'none'} -> {low}; "
                     f"{', '.join(upcast) or 'none'} -> fp32 from any input; "
                     f"{', '.join(follow) or 'none'} keep the input's dtype (fp32 in, fp32 out; "
                     f"{low} in, {low} out)")
    text = "; ".join(parts)
    if all(per_type):
        return Finding("MP-11", "supported", text + ": chosen per op type from fixed lists, not "
                       "from the data", "tbl-autocast")
    return Finding("MP-11", "refuted", text + ": no per-op-type choice", "tbl-autocast")


# ------------------------------------------------------------------------------ MP-12 ---

def _arm(final: pd.DataFrame, optimizer: str, pure: str) -> tuple[str, str]:
    """One pure-16-bit arm against its AMP twin: (status, text); status is trains, fails,
    diverged or unclear."""
    amp = PURE[pure]
    d = final[(final.optimizer == optimizer) & final.precision.isin([pure, amp])]
    runs = d[d.precision == pure]
    stalled = runs.stalled.mean() if "stalled" in runs else float("nan")
    fmt = "fp16" if pure.startswith("16") else "bf16"
    name = f"{fmt} {optimizer.upper() if optimizer == 'sgd' else optimizer.capitalize()}"
    if runs.diverged.any():
        why = ""
        if optimizer != "sgd":
            t = adam_underflow(fmt)
            why = (f" (in {fmt} Adam's v = (1 - beta2) g^2 is 0 for |g| <= "
                   f"{sig2(t['v_zero_below'])}" + (" and eps = 1e-8 rounds to 0" if
                                                   t["eps_is_zero"] else "") + ")")
        return "diverged", f"{name} diverged in {int(runs.diverged.sum())}/{len(runs)} runs{why}"
    c = stats.compare(d, "test_metric", "precision", pure, amp, ACC_MARGIN)
    status = {"equivalent": "trains", "higher": "trains", "lower": "fails"}.get(c.outcome,
                                                                                "unclear")
    return status, (f"{name} {status} ({_pp(c.interval)} vs {amp}, {sig2(100 * stalled)} % "
                    "of updates stalled below half an ulp)")


def mp12(final: pd.DataFrame) -> Finding:
    """MP-12 (pure 16-bit tensors, no fp32 master weights, is a way to train), from `finals` of
    `pure_runs` (optimizer, precision, seed, test_metric, diverged, stalled): each arm (fp16,
    bf16 x SGD, Adam) against its AMP twin with ACC_MARGIN. Supported when every arm trains,
    refuted when every arm fails or diverges, nuanced otherwise (some train, or some are
    inconclusive)."""
    arms = [_arm(final, opt, pure) for opt in ("sgd", "adam") for pure in PURE]
    text = "; ".join(t for _, t in arms)
    statuses = [s for s, _ in arms]
    if all(s == "trains" for s in statuses):
        return Finding("MP-12", "supported", text, "tbl-pure")
    if all(s in ("fails", "diverged") for s in statuses):
        return Finding("MP-12", "refuted", text, "tbl-pure")
    return Finding("MP-12", "nuanced", text, "tbl-pure")


# ------------------------------------------------------------------------------ MP-13 ---

def mp13(error: str | None, fixed_trains: bool) -> Finding:
    """MP-13 (fp16 inputs fed to an fp32 model is mixed-precision training): refuted when it
    raises and the autocast version trains; supported when it runs and trains; else nuanced."""
    if error and fixed_trains:
        return Finding("MP-13", "refuted", f"fp16 inputs to an fp32 model raise ({error}) before "
                       "any training; fp32 inputs with autocast and a GradScaler train",
                       "tbl-mp13")
    if error is None:
        return Finding("MP-13", "supported", "fp16 inputs into the fp32 model run", "tbl-mp13")
    return Finding("MP-13", "nuanced", f"it raises ({error}), and the autocast version did not "
                   "lower its loss either", "tbl-mp13")


# ------------------------------------------------------------------------------ MP-14 ---

def mp14(errors: dict[str, str], final: pd.DataFrame) -> Finding:
    """MP-14 (the article's fp16 `matmul(x, weight)` layer works), from `article_layer_errors`
    and `finals` of `article_layer_runs` (layer, seed, test_metric, stalled). Refuted when as
    written it fails (an error or the wrong map); otherwise supported when pure fp16 training
    with it neither stalls (STALL_MARGIN more updates lost than AMP, beyond noise) nor loses
    accuracy against AMP, nuanced when it does. The reason gives the repaired layer's stall."""
    fixed, amp = "fixed fp16 layer (16-true)", "nn.Linear, 16-mixed"
    broken = all(not e.startswith("runs, within") for e in errors.values())
    stall = stats.paired(final, "stalled", "layer", fixed, amp)
    acc = stats.compare(final, "test_metric", "layer", fixed, amp, ACC_MARGIN)
    stalls = stall.low > STALL_MARGIN
    share = {k: sig2(100 * final[final.layer == k].stalled.mean()) for k in (fixed, amp)}
    text = (f"as written: {sum(e.startswith('RuntimeError') for e in errors.values())} of "
            f"{len(errors)} input cases raise, the rest compute x W instead of x W^T"
            if broken else "as written it computes x W^T + b")
    text += (f"; {'repaired, ' if broken else ''}pure fp16 SGD leaves {share[fixed]} % of "
             f"updates unapplied vs {share[amp]} % with fp32 master weights "
             f"({'stalls' if stalls else 'no stall'} beyond {100 * STALL_MARGIN:g} pp), "
             f"accuracy {_pp(acc.interval)} vs AMP")
    if broken:
        return Finding("MP-14", "refuted", text, "fig-article-layer")
    if not stalls and acc.outcome in ("equivalent", "higher"):
        return Finding("MP-14", "supported", text, "fig-article-layer")
    return Finding("MP-14", "nuanced", text, "fig-article-layer")
