"""The verdicts on loss scaling (LS-1) and on mixed precision as one line (MP-24), from chapter
03's tables.

LS-1 says two things: the seed articles never mention loss scaling, and without it fp16
gradients underflow. The first is a reading of the articles; the second is measured. The rule
judges the underflow: on each trained task, the share of nonzero activation-gradient entries
(what the fp16 backward pass holds) that flush to zero without scaling, and how much a loss
scale that never overflowed brings back, paired by seed. What training without a scaler ends at
(test accuracy against the dynamic scaler, paired by seed) is the consequence, stated in the
reason whichever way it goes.

MP-24 says that turning on mixed precision takes nothing but a change of precision policy. The
rule asks, per format, whether some one-line change (autocast alone, or casting the model)
trains like fp32, paired by seed, with gradients intact (LS-1's underflow test).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from precisionlab.study import stats
from precisionlab.study.claims import Finding, sig2

# A task "underflows" when at least this share of the nonzero activation-gradient entries flush
# without scaling (mean over seeds): one entry in a hundred is a property of the gradient, not a
# stray value; fewer is reported but does not count as the claimed underflow.
FLUSH_MIN = 0.01
# ... and a loss scale cuts that share at least this many times (geometric mean over seeds,
# beyond noise): at least half of what flushes must be underflow that scaling recovers, not
# forward-pass rounding (a ReLU gate flipped by fp16), which no scale undoes.
CUT_MIN = 2.0
# Final test accuracy counts as unchanged by the scaler within +-1 percentage point: the size of
# difference a reader would act on for these small classifiers.
ACC_MARGIN = 0.01
# A paired interval needs at least two seeds; with fewer the rule cannot judge noise.
MIN_SEEDS = 2
# MP-24: a one-line run "trains like fp32" on a task when its final train loss minus that of the
# 32-true run of the same seed has its 95 % interval inside +-0.05 nats. e^0.05 = 1.05: a 5 %
# change of the loss's perplexity, the smallest change in how well a model fits its training
# data that we would call a different outcome of training. Train loss rather than test
# accuracy because the claim is about training, and a few hundred test examples move accuracy
# by a point when one borderline example flips.
LOSS_MARGIN = 0.05
NONE, DYNAMIC = "16-mixed, no scaling", "16-mixed, dynamic"
FP32, BF16, CAST16 = "32-true", "bf16-mixed", "16-true"


def _underflow(under: pd.DataFrame, task: str) -> dict:
    """One task's underflow facts: worst checkpoint without scaling, best clean scale, the
    share flushed there per seed, and the paired log-cut of that share by the scale."""
    t = under[under.task == task]
    none = t[t.log2_scale == 0]
    step = none.groupby("step").act_flushed.mean().idxmax()
    over = t.groupby("log2_scale").overflow.any()
    clean = [k for k, o in over.items() if k > 0 and not o]
    at = none[none.step == step].set_index("seed")
    facts = {"step": int(step), "share": stats.interval(at.act_flushed),
             "weight": float(at.weight_flushed.mean()), "best": None, "cut": None}
    if clean:
        best = max(clean)
        scaled = t[(t.step == step) & (t.log2_scale == best)].set_index("seed").loc[at.index]
        floor = 0.5 / at.act_nonzero_fp32  # half an entry: a zero count stays finite on a log
        cut = np.log(np.maximum(at.act_flushed, floor) / np.maximum(scaled.act_flushed, floor))
        facts.update(best=best, cut=stats.interval(cut), scaled=float(scaled.act_flushed.mean()))
    return facts


def _outcome(f: dict) -> str:
    """'underflows', 'none' or 'inconclusive' for one task's facts."""
    share, cut = f["share"], f["cut"]
    cut_ok = cut is not None and cut.low > 0 and cut.mean >= math.log(CUT_MIN)
    if share.mean >= FLUSH_MIN and cut_ok:
        return "underflows"
    if share.high < FLUSH_MIN or (cut is not None and cut.high < math.log(CUT_MIN)):
        return "none"
    return "inconclusive"


def _factor(iv: stats.Interval) -> str:
    return f"{sig2(math.exp(iv.mean))}x [{sig2(math.exp(iv.low))}x, {sig2(math.exp(iv.high))}x]"


def _describe(task: str, f: dict, outcome: str) -> str:
    text = (f"{task}: {sig2(100 * f['share'].mean)} % of nonzero activation-gradient entries flush "
            f"without scaling at its worst checkpoint (step {f['step']}; weight gradients "
            f"{sig2(100 * f['weight'])} %)")
    if f["cut"] is None:
        text += ", and every scale tried overflowed"
    elif not math.isnan(f["cut"].low):
        text += (f", 2^{f['best']:g} cuts that {_factor(f['cut'])} to {sig2(100 * f['scaled'])} %")
    else:
        text += f", 2^{f['best']:g} leaves {sig2(100 * f['scaled'])} %"
    return f"{text} (n={f['share'].n}, {outcome})"


def ls1(under: pd.DataFrame, runs: pd.DataFrame, evidence: str = "fig-flushed") -> Finding:
    """LS-1 from `under` (`amp.underflow` rows with task, seed, step, log2_scale, act_flushed,
    act_nonzero_fp32, weight_flushed, overflow) and `runs` (task, seed, config, test_accuracy).

    supported: every task underflows (>= FLUSH_MIN flush without scaling and a clean scale cuts
    that >= CUT_MIN times, beyond noise); refuted: on no task (share below FLUSH_MIN or cut below
    CUT_MIN, whole interval); nuanced: it depends on the task or stays within noise;
    not testable here: fewer than MIN_SEEDS seeds."""
    tasks = list(dict.fromkeys(under.task))
    if not tasks:
        raise ValueError("under: no rows")
    n_seeds = under.groupby("task").seed.nunique().min()
    if n_seeds < MIN_SEEDS:
        return Finding("LS-1", "not testable here", f"underflow was measured on {n_seeds} seed(s); "
                       f"a paired interval needs at least {MIN_SEEDS}", evidence)
    facts = {t: _underflow(under, t) for t in tasks}
    outcomes = {t: _outcome(f) for t, f in facts.items()}
    parts = [_describe(t, facts[t], outcomes[t]) for t in tasks]
    consequence = []
    for t in tasks:
        r = runs[(runs.task == t) & runs.config.isin([NONE, DYNAMIC])]
        c = stats.compare(r, "test_accuracy", "config", NONE, DYNAMIC, ACC_MARGIN)
        word = {"equivalent": f"equivalent within +-{sig2(100 * ACC_MARGIN)} pp",
                "inconclusive": "inconclusive"}.get(c.outcome, f"{c.outcome}, beyond noise")
        consequence.append(f"{t} {c.interval.text(100, ' pp')}, {word}")
    found = set(outcomes.values())
    if found == {"underflows"}:
        verdict, lead = "supported", "fp16 gradients underflow without scaling on every task"
    elif found == {"none"}:
        verdict, lead = "refuted", "no task loses a real share of its fp16 gradients to underflow"
    else:
        verdict, lead = "nuanced", "underflow depends on the task or stays within seed noise"
    reason = (f"{lead}: {'; '.join(parts)}; what it costs: final test accuracy without scaling "
              f"minus with the dynamic scaler {', '.join(consequence)}")
    return Finding("LS-1", verdict, reason, evidence)


def _candidate(runs: pd.DataFrame, task: str, config: str, under: pd.DataFrame | None
               ) -> tuple[str, str]:
    """One one-line configuration on one task: 'like' (trains like fp32, gradients intact),
    'fails' (a non-finite run, a train loss higher beyond noise and not within the margin, or
    LS-1's underflow) or
    'unclear', with the text the reason gives."""
    r = runs[(runs.task == task) & runs.config.isin([config, FP32])]
    cand = r[r.config == config]
    bad = int((~np.isfinite(cand.train_loss.to_numpy(dtype=float))).sum())
    if bad:
        first = cand.get("first_nonfinite", pd.Series(dtype=float)).min()
        since = "" if pd.isna(first) else f" from step {first:g}"
        return "fails", f"{task}: loss non-finite in {bad} of {len(cand)} seeds{since}"
    c = stats.compare(r, "train_loss", "config", config, FP32, LOSS_MARGIN)
    status = {"equivalent": "like", "higher": "fails"}.get(c.outcome, "unclear")
    text = f"{task} {c.interval.text(1, ' nats')} {c.outcome}"
    if under is not None and task in set(under.task):
        f = _underflow(under, task)
        flows = _outcome(f)
        if flows == "underflows":
            status = "fails"
            text += (f", but {sig2(100 * f['share'].mean)} % of its nonzero activation-gradient "
                     f"entries flush (LS-1)")
        elif flows == "inconclusive" and status == "like":
            status, text = "unclear", text + ", underflow inconclusive (LS-1)"
    return status, text


def _across(statuses: list[str]) -> str:
    """A candidate over all tasks: 'suffices' if like fp32 on each, 'fails' if it fails on one."""
    if "fails" in statuses:
        return "fails"
    return "suffices" if set(statuses) == {"like"} else "unclear"


def mp24(runs: pd.DataFrame, under: pd.DataFrame, evidence: str = "tbl-mp24") -> Finding:
    """MP-24 from `runs` (task, seed, config, train_loss, optional first_nonfinite; configs
    32-true, bf16-mixed, '16-mixed, no scaling', optionally '16-mixed, dynamic' and 16-true)
    and `under` (LS-1's underflow rows, for 16-mixed without a scaler).

    A one-line change trains like fp32 on a task when its final train loss minus 32-true's,
    paired by seed, lies within +-LOSS_MARGIN, every run stays finite and (for 16-mixed without
    a scaler) LS-1's test finds no underflow; it fails on a non-finite run, a loss higher beyond
    noise and not within the margin, or underflow. One line suffices for a format when one of
    its one-line changes (bf16: bf16-mixed; fp16: 16-mixed without a scaler, or 16-true) trains
    like fp32 on every task; it needs more when all of them fail somewhere. supported: one line
    suffices for both formats; refuted: both need more; nuanced: anything else (one format
    only, or undecided); not testable here: fewer than MIN_SEEDS seeds. The reason also gives
    16-mixed with the dynamic scaler against 32-true."""
    for name in (FP32, BF16, NONE):
        if name not in set(runs.config):
            raise ValueError(f"runs: no {name!r} rows; configs: {', '.join(runs.config.unique())}")
    n_seeds = runs.groupby("task").seed.nunique().min()
    if n_seeds < MIN_SEEDS:
        return Finding("MP-24", "not testable here", f"trained on {n_seeds} seed(s); a paired "
                       f"interval needs at least {MIN_SEEDS}", evidence)
    tasks = list(dict.fromkeys(runs.task))
    formats = {"bf16": [BF16], "fp16": [NONE] + ([CAST16] if CAST16 in set(runs.config) else [])}
    names = {BF16: "bf16-mixed (autocast alone)", NONE: "16-mixed without a scaler",
             CAST16: "16-true (model cast to fp16)"}
    state, parts = {}, []
    for fmt, candidates in formats.items():
        found = []
        for config in candidates:
            per = [_candidate(runs, t, config, under if config == NONE else None) for t in tasks]
            found.append(_across([s for s, _ in per]))
            parts.append(f"{names[config]}: {', '.join(text for _, text in per)}")
        state[fmt] = ("suffices" if "suffices" in found else
                      "needs more" if set(found) == {"fails"} else "unclear")
    if DYNAMIC in set(runs.config):
        per = [_candidate(runs, t, DYNAMIC, None)[1] for t in tasks]
        parts.append(f"16-mixed with the dynamic scaler: {', '.join(per)}")
    if state["bf16"] == state["fp16"] == "suffices":
        verdict, lead = "supported", "one line trains like fp32 in bf16 and in fp16"
    elif state["bf16"] == state["fp16"] == "needs more":
        verdict, lead = "refuted", "no one-line change trains like fp32, in bf16 or in fp16"
    else:
        verdict = "nuanced"
        words = {"suffices": "one line suffices", "needs more": "one line is not enough",
                 "unclear": "one line is undecided (within noise)"}
        lead = f"{words[state['bf16']]} for bf16, {words[state['fp16']]} for fp16"
    reason = (f"{lead}; final train loss minus 32-true, paired by seed (margin +-"
              f"{sig2(LOSS_MARGIN)} nats): {'; '.join(parts)}")
    return Finding("MP-24", verdict, reason, evidence)
