"""Verdict rules of chapter 02 (mixed precision): one function per claim, from the tidy tables
of `precisionlab.study.experiments.mixed` to a `claims.Finding`.

Accuracy comparisons are paired by seed (`stats.compare`) against the margin each claim
declares below, with one test example as the accuracy's resolution where the runs log the test
set's size; "beyond noise" means the 95 % paired interval excludes 0, and each comparison states
the smallest effect its design could detect.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from precisionlab.formats import adam_underflow
from precisionlab.study import stats
from precisionlab.study.claims import Finding, sig2
from precisionlab.study.designs import MIXED, PURE, WORKING_PURE

# "Same accuracy" = within 1 percentage point of test accuracy: a difference a reader of the
# claims would not call a loss (digits' 450 test images: 1 image = 0.22 pp).
ACC_MARGIN = 0.01
# A run "has converged" when 32-true's test accuracy gained less than ACC_MARGIN over the last
# quarter of its training: a comparison made while accuracy still rises says nothing about the
# accuracy each precision *reaches*, which is what MP-6 claims.
CONVERGED_QUARTER = 0.25
# A step "equals" the fp32 step (or half of it) when its projection on the fp32 step is within
# 0.1 of 1 (of 0.5): ten times finer than the factor of two the claim is about.
STEP_MARGIN = 0.1
# A gradient norm "equals" fp64's within 5 %; the claimed factor 2 would be 50 % (or 100 %) off.
NORM_MARGIN = 0.05
# Pure 16-bit training "stalls" when at least 5 % more of the wanted weight updates are lost
# than with fp32 master weights (AMP loses about 0 %).
STALL_MARGIN = 0.05
# A step is "faster" when it takes at most 95 % of fp32's time: ratios measured interleaved in
# one run on a shared machine wander by a few per cent from run to run, so a smaller gain is
# not told apart from none.
SPEED_MARGIN = 0.05

LOW = {"16-mixed": "fp16", "bf16-mixed": "bf16"}


def _pp(iv: stats.Interval | stats.Comparison) -> str:
    return iv.text(scale=100, unit=" pp")


def _resolution(table: pd.DataFrame) -> float:
    """One test example's share of accuracy (the metric's smallest step), where the runs log
    the test set's size (`test_examples`); 0 (unknown) otherwise."""
    if "test_examples" not in table or table.test_examples.isna().all():
        return 0.0
    return 1.0 / float(table.test_examples.min())


def _acc(table: pd.DataFrame, column: str, treatment: str, control: str) -> stats.Comparison:
    """Paired test-accuracy comparison against ACC_MARGIN at the runs' resolution."""
    return stats.compare(table, "test_metric", column, treatment, control, ACC_MARGIN,
                         resolution=_resolution(table))


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

def still_rising(runs: pd.DataFrame, baseline: str = "32-true") -> dict[str, float]:
    """Per task of the precision runs' histories (task, precision, seed, step, test_metric): the
    gain of `baseline`'s mean test accuracy over the last CONVERGED_QUARTER of its evaluations,
    for the tasks where it is at least ACC_MARGIN (not converged)."""
    out = {}
    h = runs[(runs.precision == baseline) & runs.test_metric.notna()]
    for task, d in h.groupby("task", sort=False):
        curve = d.groupby("step").test_metric.mean().sort_index()
        steps = curve.index.to_numpy()
        start = curve[steps >= steps[-1] - CONVERGED_QUARTER * steps[-1]].iloc[0]
        gain = float(curve.iloc[-1] - start)
        if gain >= ACC_MARGIN:
            out[str(task)] = gain
    return out


def mp6(final: pd.DataFrame, hardware: str, runs: pd.DataFrame | None = None) -> Finding:
    """MP-6 (AMP reaches the same or better accuracy than fp32), from `finals` of the precision
    runs (task, precision, seed, test_metric, test_examples) and, to judge convergence, their
    histories `runs`: per task and AMP policy, the paired difference to 32-true against
    ACC_MARGIN at one test example's resolution.

    Refuted when any is lower beyond noise; supported when every one is equivalent (the design
    could detect a 1 pp loss) or higher *and* every task's 32-true run had converged; nuanced
    otherwise: an inconclusive or underpowered comparison, or a task still improving, whose
    final accuracy is not what the runs reach. The runs follow the 16-bit kernels of `hardware`
    (native or emulated), and an interval near the margin can land on the other side on another
    CPU (it did: inconclusive on an AVX2 EPYC, equivalent on an AMX Xeon), so the verdict
    carries `hardware`."""
    outcomes, parts = [], []
    for task, part in final.groupby("task", sort=False):
        for precision in LOW:
            c = _acc(part, "precision", precision, "32-true")
            outcomes.append(c.outcome)
            parts.append(f"{task} {precision} {_pp(c)} {c.outcome}")
    rising = still_rising(runs) if runs is not None else {}
    text = "test accuracy minus 32-true's, paired by seed: " + "; ".join(parts)
    if "lower" in outcomes:
        return Finding("MP-6", "refuted", f"lower beyond noise on {outcomes.count('lower')} of "
                       f"{len(outcomes)} task-policy pairs; " + text, "tbl-final", hardware)
    better = "" if "higher" in outcomes else "; never better beyond noise"  # the claim's "even"
    unconverged = ("; " + ", ".join(f"{t}'s 32-true still gained {100 * g:.2g} pp over the last "
                                    f"quarter of training" for t, g in rising.items()) +
                   ": not converged, so these are not the accuracies the runs reach"
                   if rising else "")
    if all(o in ("equivalent", "higher") for o in outcomes) and not rising:
        return Finding("MP-6", "supported", "equivalent or better on every task-policy pair "
                       "(converged runs); " + text + better, "tbl-final", hardware)
    gaps = [o for o in outcomes if o in ("inconclusive", "underpowered")]
    why = (f"{len(gaps)} of {len(outcomes)} comparisons could not rule out a "
           f"{100 * ACC_MARGIN:g} pp loss ({', '.join(sorted(set(gaps)))})" if gaps else
           "no loss beyond noise")
    return Finding("MP-6", "nuanced", f"{why}{unconverged}; " + text + better,
                   "tbl-final", hardware)


# ------------------------------------------------------------------------------- MP-8 ---

def mp8(pairs: pd.DataFrame, final: pd.DataFrame) -> Finding:
    """MP-8 (AMP may be unsuitable for precision-sensitive tasks *such as segmentation or speech
    recognition*), from the trained close-pairs runs (variant, seed, test_metric) and the
    realistic tasks' `finals` (MP-6's table: digits and MNIST-1D, a 1-D signal task, the nearest
    here to the claim's named examples).

    The claim has a principle (AMP loses where precision matters) and examples (tasks of the
    named kind). Refuted when AMP matches fp32 on the precision-sensitive task (the principle
    fails); supported when it loses there and on a realistic task too (the examples hold as
    well); nuanced when it loses only on the sensitive task (shown of a quantity that needs more
    resolution than 16 bits keep, not of a kind of task; the reason tells whether keeping the
    comparator in fp32 restores it and that published speech recognition matched fp32), or when
    no loss is shown either way."""
    sens = {p: _acc(pairs, "variant", p, "32-true") for p in LOW}
    island = _acc(pairs, "variant", "bf16-mixed, g in FP32Island", "32-true")
    ordinary = [_acc(part, "precision", p, "32-true").outcome
                for _, part in final.groupby("task") for p in LOW]
    text = ("trained close pairs, accuracy minus 32-true's: " +
            "; ".join(f"{p} {_pp(c)}" for p, c in sens.items()) +
            f"; bf16-mixed with the comparator g kept in fp32 {_pp(island)} {island.outcome}")
    if all(c.outcome in ("equivalent", "higher") for c in sens.values()):
        return Finding("MP-8", "refuted", text + ": no loss even where precision matters",
                       "fig-close-pairs")
    if not any(c.outcome == "lower" for c in sens.values()):
        return Finding("MP-8", "nuanced", text + ": neither a loss nor equivalence shown",
                       "fig-close-pairs")
    lost = sum(o == "lower" for o in ordinary)
    if lost:
        return Finding("MP-8", "supported", "AMP loses on the precision-sensitive task and on "
                       f"realistic tasks too ({lost} of {len(ordinary)} digits and MNIST-1D "
                       "comparisons lower beyond noise): " + text, "fig-close-pairs")
    fix = ("restores it" if island.outcome in ("equivalent", "higher")
           else f"does not clearly restore it ({island.outcome})")
    unsure = sum(o not in ("equivalent", "higher") for o in ordinary)
    ordinary_text = ("show no loss beyond noise" + (
        f" (though {unsure} of their {len(ordinary)} comparisons could not rule one out)"
        if unsure else ""))
    return Finding("MP-8", "nuanced", text + f"; the realistic digits and MNIST-1D runs "
                   f"{ordinary_text}, and mixed precision matched fp32 on speech recognition "
                   "(Micikevicius et al. 2018): the loss shown belongs to a quantity that "
                   "needs more resolution than 16 bits keep, and none was shown on a realistic "
                   "task; keeping g in fp32 "
                   f"(here all of the comparator's arithmetic, so AMP off for this model) {fix}",
                   "fig-close-pairs")


# ------------------------------------------------------------------------------- MP-9 ---

def mp9(updates: pd.DataFrame, pure_final: pd.DataFrame | None = None) -> Finding:
    """MP-9 (AMP reduces the precision loss of models), read both ways the seeds allow.

    Against fp32 (`one_step_updates`): log10 of each AMP gradient's relative error against fp64
    minus log10 of fp32's, paired by seed (errors span decades, so a difference of raw errors
    would be ruled by one seed). Against pure 16-bit training, the scheme mixed precision was
    introduced to fix (`finals` of `pure_runs`: optimizer, precision, seed, stalled, diverged):
    the share of wanted weight updates lost per step under 16-true against 16-mixed, and pure
    fp16 runs that diverged. Supported when AMP has less error than fp32 and loses less than
    pure fp16; refuted when it has more error than fp32 and (where measured) does not lose less
    than pure fp16; nuanced when the readings disagree or are not beyond noise."""
    full = updates[updates.step.str.endswith(", lr")]
    full = full.assign(log_err=np.log10(full.grad_rel_err_vs_fp64))  # errors differ by decades
    err32 = full[full.precision == "32-true"].grad_rel_err_vs_fp64.mean()
    ivs = {p: stats.paired(full, "log_err", "precision", p, "32-true") for p in LOW}
    text = ("against fp32, gradient error vs fp64: " + "; ".join(
        f"{p} {sig2(full[full.precision == p].grad_rel_err_vs_fp64.mean())} "
        f"({sig2(10 ** ivs[p].mean)} x fp32's, geometric mean over seeds)"
        for p in LOW) + f" vs 32-true {sig2(err32)}")
    more = all(iv.low > 0 for iv in ivs.values())
    less = all(iv.high < 0 for iv in ivs.values())
    vs_pure = None  # True: AMP loses fewer updates than pure fp16 on every optimizer
    if pure_final is not None:
        parts, wins = [], []
        for opt, d in pure_final.groupby("optimizer", sort=False):
            pure, amp = d[d.precision == "16-true"], d[d.precision == "16-mixed"]
            if pure.empty or amp.empty:
                continue
            if pure.diverged.astype(bool).any():
                wins.append(True)
                parts.append(f"{opt}: pure fp16 diverged in {int(pure.diverged.sum())}/"
                             f"{len(pure)} runs, 16-mixed in {int(amp.diverged.sum())}/{len(amp)}")
                continue
            iv = stats.paired(d, "stalled", "precision", "16-true", "16-mixed")
            wins.append(bool(iv.low > 0))
            parts.append(f"{opt}: {sig2(100 * pure.stalled.mean())} % of updates lost per step "
                         f"in pure fp16 vs {sig2(100 * amp.stalled.mean())} % in 16-mixed "
                         f"({'more' if iv.low > 0 else 'not more'} beyond noise)")
        if wins:
            vs_pure = all(wins)
            text += "; against pure fp16 training: " + "; ".join(parts)
    if more and vs_pure is not True:
        return Finding("MP-9", "refuted", "mixed precision adds rounding error to fp32's and "
                       "removes none; " + text, "tbl-update")
    if less and vs_pure is not False:
        return Finding("MP-9", "supported", "mixed precision has less error than fp32; " + text,
                       "tbl-update")
    if more and vs_pure:
        return Finding("MP-9", "nuanced", "it reduces precision loss only against pure 16-bit "
                       "training, which loses updates it keeps; against fp32 it adds rounding "
                       "error; " + text, "tbl-update")
    return Finding("MP-9", "nuanced", "not beyond noise for every policy; " + text, "tbl-update")


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
        return Finding("MP-11", "supported", "the precision is chosen per op type, "
                       "automatically, from autocast's fixed op lists (the same for any input "
                       "values; 'dynamic' only in that the user picks no op): " + text,
                       "tbl-autocast")
    return Finding("MP-11", "refuted", text + ": no per-op-type choice", "tbl-autocast")


# ------------------------------------------------------------------------------ MP-12 ---

def _arm(final: pd.DataFrame, optimizer: str, pure: str) -> tuple[str, str]:
    """One pure-16-bit recipe (a PURE policy or a WORKING_PURE recipe) against its AMP twin:
    (status, text); status is trains, fails, diverged or unclear."""
    policy, eps = WORKING_PURE.get(pure, (pure, None))
    amp = PURE[policy]
    d = final[(final.optimizer == optimizer) & final.precision.isin([pure, amp])]
    runs = d[d.precision == pure]
    stalled = runs.stalled.mean() if "stalled" in runs else float("nan")
    fmt = "fp16" if policy.startswith("16") else "bf16"
    name = f"{fmt} {optimizer.upper() if optimizer == 'sgd' else optimizer.capitalize()}"
    name += f" with eps {eps:g}" if eps is not None else ""
    if runs.diverged.any():
        why = ""
        if optimizer != "sgd" and eps is None:
            t = adam_underflow(fmt)
            why = (f" (in {fmt} Adam's v = (1 - beta2) g^2 is 0 for |g| <= "
                   f"{sig2(t['v_zero_below'])}" + (" and eps = 1e-8 rounds to 0" if
                                                   t["eps_is_zero"] else "") + ")")
        return "diverged", f"{name} diverged in {int(runs.diverged.sum())}/{len(runs)} runs{why}"
    c = _acc(d, "precision", pure, amp)
    status = {"equivalent": "trains", "higher": "trains", "lower": "fails"}.get(c.outcome,
                                                                                "unclear")
    return status, (f"{name} {status} ({_pp(c)} vs {amp}, {sig2(100 * stalled)} % "
                    "of updates stalled below half an ulp)")


def mp12(final: pd.DataFrame) -> Finding:
    """MP-12 (pure 16-bit tensors, no fp32 master weights, is a way to train), from `finals` of
    `pure_runs` (optimizer, precision, seed, test_metric, diverged, stalled): each recipe (fp16,
    bf16 x SGD, Adam; with Adam also the WORKING_PURE recipes present) against its AMP twin
    with ACC_MARGIN. An arm (format x optimizer) trains when any of its recipes does: the claim
    is that a way exists. Supported when every arm trains, refuted when every recipe fails or
    diverges, nuanced otherwise; the reason names every recipe, the naive ones that fail too."""
    arms: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for opt in ("sgd", "adam"):
        recipes = list(PURE) + [r for r in WORKING_PURE if opt != "sgd" and
                                r in set(final[final.optimizer == opt].precision)]
        for r in recipes:
            fmt = WORKING_PURE.get(r, (r,))[0]
            arms.setdefault((opt, fmt), []).append(_arm(final, opt, r))
    text = "; ".join(t for results in arms.values() for _, t in results)
    trains = [any(s == "trains" for s, _ in results) for results in arms.values()]
    if all(trains):
        return Finding("MP-12", "supported", text, "tbl-pure")
    if all(s in ("fails", "diverged") for results in arms.values() for s, _ in results):
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
    acc = _acc(final, "layer", fixed, amp)
    stalls = stall.low > STALL_MARGIN
    share = {k: sig2(100 * final[final.layer == k].stalled.mean()) for k in (fixed, amp)}
    text = (f"as written: {sum(e.startswith('RuntimeError') for e in errors.values())} of "
            f"{len(errors)} input cases raise, the rest compute x W instead of x W^T"
            if broken else "as written it computes x W^T + b")
    text += (f"; {'repaired, ' if broken else ''}pure fp16 SGD leaves {share[fixed]} % of "
             f"updates unapplied vs {share[amp]} % with fp32 master weights "
             f"({'stalls' if stalls else 'no stall'} beyond {100 * STALL_MARGIN:g} pp), "
             f"accuracy {_pp(acc)} vs AMP ({acc.outcome})")
    if broken:
        return Finding("MP-14", "refuted", text, "fig-article-layer")
    if not stalls and acc.outcome in ("equivalent", "higher"):
        return Finding("MP-14", "supported", text, "fig-article-layer")
    return Finding("MP-14", "nuanced", text, "fig-article-layer")


# ------------------------------------------------------------------------------ MP-15 ---

def mp15(results: pd.DataFrame) -> Finding:
    """MP-15 (after a low-precision computation the result is converted back to the original
    precision), from `result_dtypes` (device, autocast, op, input, computed, output). The ops
    that compute in 16 bits from an fp32 input are the test: supported when every one of them
    returns fp32, refuted when none does (their 16-bit results flow on as they are), nuanced
    when some do; "not testable here" when no op computes in 16 bits. The reason also names the
    ops that take a 16-bit input back to fp32 (autocast's fp32 list) per device."""
    def sixteen(computed: str) -> bool:
        return bool(set(computed.split(", ")) & {"bf16", "fp16"})

    f32 = results[results.input == "fp32"]
    low = f32[f32.computed.map(sixteen)]
    if low.empty:
        return Finding("MP-15", "not testable here", "no probed op computed in 16 bits under "
                       "autocast", "tbl-mp15")
    back = low[low.output == "fp32"]
    parts = []
    for (device, dtype), d in results.groupby(["device", "autocast"], sort=False):
        lowered = d[(d.input == "fp32") & d.computed.map(sixteen)]
        up = d[(d.input == dtype) & (d.output == "fp32")]
        parts.append(f"{device} {dtype} autocast: {', '.join(lowered.op)} compute in {dtype} and "
                     f"return {', '.join(sorted(set(lowered.output)))}; "
                     f"{', '.join(up.op) or 'no op'} turn {dtype} inputs into fp32")
    text = "; ".join(parts)
    if back.empty:
        return Finding("MP-15", "refuted", text + ": nothing converts a 16-bit result back; "
                       "fp32 comes back only where an op on autocast's fp32 list consumes it",
                       "tbl-mp15")
    if len(back) == len(low):
        return Finding("MP-15", "supported", text + ": every 16-bit result comes back in fp32",
                       "tbl-mp15")
    return Finding("MP-15", "nuanced", text + f": {len(back)} of {len(low)} 16-bit results come "
                   "back in fp32", "tbl-mp15")


# ------------------------------------------------------------------------------ MP-16 ---

def mp16(flops: pd.DataFrame) -> Finding:
    """MP-16 (mixed precision reduces the number of FLOPs), from `step_flops` (precision,
    step_flops, casts): each AMP policy's matmul FLOPs per training step against 32-true's,
    exact counts. Supported when every AMP policy counts fewer, refuted when none does (the
    same or more), nuanced otherwise."""
    by = flops.set_index("precision")
    base = int(by.loc["32-true", "step_flops"])
    counts = {p: int(by.loc[p, "step_flops"]) for p in MIXED}
    fewer = [c < base for c in counts.values()]
    text = (f"matmul FLOPs of one training step (forward + backward): 32-true {base:,}; " +
            "; ".join(f"{p} {c:,} (ratio {c / base:g}, {int(by.loc[p, 'casts'])} casts vs "
                      f"{int(by.loc['32-true', 'casts'])})" for p, c in counts.items()))
    if not any(fewer):
        return Finding("MP-16", "refuted", text + ": the same operations in narrower formats, "
                       "plus casts", "tbl-mp16")
    if all(fewer):
        return Finding("MP-16", "supported", text + ": fewer FLOPs", "tbl-mp16")
    return Finding("MP-16", "nuanced", text + ": fewer FLOPs for some policies only", "tbl-mp16")


# ------------------------------------------------------------------------------ MP-18 ---

STEP_KINDS = ("weight gradient (.grad)", "weight (master copy)", "optimizer")


def mp18(tensors: pd.DataFrame, losses: pd.DataFrame) -> Finding:
    """MP-18 (the update is computed in half precision, then cast back to fp32), from
    `tensor_dtypes` (tensor kind x precision) and `update_losses` (optimizer, precision, seed,
    stalled, lost_fp16_scheme) of the AMP runs.

    Supported when, in every AMP policy, `optimizer.step()` computes 16-bit results; otherwise,
    when .grad, master weights, optimizer state and the step's operands and results are all fp32
    in every AMP policy, refuted if applying the same updates in fp16 and casting back loses more
    of them than the real step, beyond noise (paired by seed) in some run group, and nuanced if
    it loses no more on these runs (the description is wrong, but not in a way that shows here);
    nuanced as well when the policies disagree."""
    step = {p: {k: tensors.loc[k, p] for k in tensors.index if k.startswith(STEP_KINDS)}
            for p in MIXED}
    half = [any(x in step[p].get("optimizer.step() results", "") for x in ("fp16", "bf16"))
            for p in MIXED]
    all_fp32 = all(v == "fp32" for p in MIXED for v in step[p].values())
    parts = []
    extra = []
    for (opt, precision), d in losses.groupby(["optimizer", "precision"], sort=False):
        d = d.assign(extra=d.lost_fp16_scheme - d.stalled)
        iv = stats.interval(d.extra)
        extra.append(iv.low > 0)
        parts.append(f"{opt.upper() if opt == 'sgd' else opt.capitalize()} {precision}: "
                     f"{sig2(100 * d.lost_fp16_scheme.mean())} % of updates lost if applied in "
                     f"fp16 vs {sig2(100 * d.stalled.mean())} % in the real step "
                     f"({iv.text(scale=100, unit=' pp')})")
    lost = "; ".join(parts)
    if all(half):
        return Finding("MP-18", "supported", "optimizer.step() computes in 16 bits in every AMP "
                       "policy; " + lost, "fig-mp18")
    if all_fp32:
        text = (".grad, master weights, optimizer state and every operand and result of "
                "optimizer.step() are fp32 in " + " and ".join(MIXED) + "; " + lost)
        if any(extra):
            return Finding("MP-18", "refuted", text + ": AMP computes the update in fp32, and "
                           "the described scheme would lose updates it keeps", "fig-mp18")
        return Finding("MP-18", "nuanced", text + ": AMP computes the update in fp32, but the "
                       "described scheme loses no more updates on these runs", "fig-mp18")
    return Finding("MP-18", "nuanced", "optimizer.step() computes in 16 bits in some AMP "
                   "policies or reads 16-bit tensors, not in all; " + lost, "fig-mp18")


# ------------------------------------------------------------------------------ MP-20 ---

ERRORS = {"out_rel_err_vs_fp64": "outputs", "grad_rel_err_vs_fp64": "gradients"}


def mp20(updates: pd.DataFrame) -> Finding:
    """MP-20 (combining the two precisions makes training and inference more accurate than
    fp32), from `one_step_updates`: the relative error of the forward outputs and of the
    gradient against an fp64 copy of the same model, state and batch. Per AMP policy and
    quantity, log10(error) minus fp32's, paired by seed (errors span decades). Supported when
    every one is lower than fp32's beyond noise, refuted when every one is higher, else
    nuanced."""
    full = updates[updates.step.str.endswith(", lr")]
    higher, lower, parts = [], [], []
    for col, label in ERRORS.items():
        d = full.assign(log_err=np.log10(full[col]))
        base = full[full.precision == "32-true"][col].mean()
        for p in LOW:
            iv = stats.paired(d, "log_err", "precision", p, "32-true")
            higher.append(iv.low > 0)
            lower.append(iv.high < 0)
            parts.append(f"{label} {p} {sig2(full[full.precision == p][col].mean())} "
                         f"({sig2(10 ** iv.mean)} x fp32's {sig2(base)})")
    text = "relative error against fp64, mean over seeds: " + "; ".join(parts)
    if all(higher):
        return Finding("MP-20", "refuted", text + ": mixed precision is less accurate than fp32 "
                       "in both, beyond noise", "fig-mp20")
    if all(lower):
        return Finding("MP-20", "supported", text + ": mixed precision is more accurate",
                       "fig-mp20")
    return Finding("MP-20", "nuanced", text + ": not beyond noise in every case", "fig-mp20")


# ------------------------------------------------------------------------------ MP-26 ---

def mp26(final: pd.DataFrame, times: pd.DataFrame, hardware: str) -> Finding:
    """MP-26 (lowering the precision of the parameters raises training speed and model
    quality), from `finals` of the precision runs (task, precision, seed, test_metric) and
    `policy_step_times` (precision, ratio_to_32-true), measured on `hardware`.

    Per pure policy (16-true, bf16-true) and task, accuracy minus 32-true's paired by seed with
    ACC_MARGIN (and minus its AMP twin's, in the reason). Refuted when some pure policy is lower
    beyond the margin on some task (quality falls), or when none is higher and none is faster
    (neither rises); supported when every one is higher and every pure policy's step takes at
    most 1 - SPEED_MARGIN of 32-true's time; nuanced otherwise. The word can depend on the
    speed, so it carries `hardware`."""
    ratio = times.set_index("precision")["ratio_to_32-true"]
    faster = {p: bool(ratio[p] <= 1 - SPEED_MARGIN) for p in PURE}
    outcomes, names, parts = [], [], []
    for task, part in final.groupby("task", sort=False):
        for p, amp in PURE.items():
            c = _acc(part, "precision", p, "32-true")
            a = stats.paired(part, "test_metric", "precision", p, amp)
            outcomes.append(c.outcome)
            names.append(f"{p} on {task}")
            parts.append(f"{task} {p} {_pp(c)} vs 32-true ({c.outcome}), "
                         f"{_pp(a)} vs {amp}")
    speed = "; ".join(f"{p} step {ratio[p]:.2f} x 32-true's time" for p in PURE)
    text = "accuracy: " + "; ".join(parts) + "; " + speed
    lowered = [name + (" (diverged)" if final[(final.task == name.split(" on ")[1]) &
                                             (final.precision == name.split(" on ")[0])]
                       .get("diverged", pd.Series(dtype=bool)).astype(bool).any() else "")
               for name, o in zip(names, outcomes, strict=True) if o == "lower"]
    if lowered:
        return Finding("MP-26", "refuted", f"quality falls ({', '.join(lowered)}); " + text,
                       "tbl-mp26", hardware)
    if "higher" not in outcomes and not any(faster.values()):
        return Finding("MP-26", "refuted", "neither quality nor speed rises; " + text,
                       "tbl-mp26", hardware)
    if all(o == "higher" for o in outcomes) and all(faster.values()):
        return Finding("MP-26", "supported", text, "tbl-mp26", hardware)
    return Finding("MP-26", "nuanced", text + ": the claim holds only in part", "tbl-mp26",
                   hardware)
