"""The verdicts on loss scaling (LS-1) and on mixed precision as one line (MP-24), from chapter
03's tables.

LS-1 says two things: the seed articles never mention loss scaling, and without it fp16
gradients underflow. The first is a reading of the articles; the second is measured. The rule
judges the underflow: on each trained task, the share of nonzero activation-gradient entries
(what the fp16 backward pass holds) that flush to zero without scaling, and how much a loss
scale that never overflowed brings back, paired by seed. What training without a scaler ends at
(test accuracy against the dynamic scaler, paired by seed) is the consequence, stated in the
reason whichever way it goes.

MP-24 says that turning on mixed precision takes nothing but a change of precision policy (the
seed's setting: Keras's `set_global_policy`). The rule judges the policy line as that framework
builds it (chapter 09's Keras runs say whether `compile` adds a loss scaler under
mixed_float16): does it train like fp32, paired by seed, per format; and for fp16 without a
scaler, what LS-1's lost gradients cost.
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
             "weight": float(at.weight_flushed.mean()), "best": None, "cut": None,
             "mass": float(at.act_flushed_mass.mean()) if "act_flushed_mass" in at else None}
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
    mass = ("" if f.get("mass") is None else
            f"; they carry {sig2(100 * f['mass'])} % of the gradient's L1 mass")
    text = (f"{task}: {sig2(100 * f['share'].mean)} % of nonzero activation-gradient entries flush "
            f"without scaling at its worst checkpoint (step {f['step']}{mass}; weight gradients "
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
                "underpowered": f"within +-{sig2(100 * ACC_MARGIN)} pp but underpowered",
                "inconclusive": "inconclusive"}.get(c.outcome, f"{c.outcome}, beyond noise")
        consequence.append(f"{t} {c.text(100, ' pp')}, {word}")
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


def _vs_fp32(runs: pd.DataFrame, task: str, config: str) -> tuple[str, str]:
    """One configuration on one task against 32-true: 'like' (final train loss equivalent within
    +-LOSS_MARGIN, paired by seed), 'fails' (a non-finite run, or higher beyond noise and not
    equivalent) or 'unclear', with the text the reason gives."""
    r = runs[(runs.task == task) & runs.config.isin([config, FP32])]
    cand = r[r.config == config]
    bad = int((~np.isfinite(cand.train_loss.to_numpy(dtype=float))).sum())
    if bad:
        first = cand.get("first_nonfinite", pd.Series(dtype=float)).min()
        since = "" if pd.isna(first) else f" from step {first:g}"
        return "fails", f"{task}: loss non-finite in {bad} of {len(cand)} seeds{since}"
    c = stats.compare(r, "train_loss", "config", config, FP32, LOSS_MARGIN)
    status = {"equivalent": "like", "higher": "fails"}.get(c.outcome, "unclear")
    return status, f"{task} {c.text(1, ' nats')} {c.outcome}"


def _without_scaler(runs: pd.DataFrame, under: pd.DataFrame, task: str) -> tuple[str, str]:
    """16-mixed without a scaler on one task, weighing what it loses: 'like' when its train loss
    is equivalent to 32-true's and, where LS-1 finds underflow (or cannot rule it out), its
    train loss minus the dynamic scaler's run is equivalent within +-LOSS_MARGIN or lower (the
    lost gradients cost nothing measurable); 'fails' on a non-finite run, a loss higher than
    32-true's, or a loss higher than the scaler's run (the lost gradients cost); 'unclear'
    otherwise. With the text the reason gives."""
    status, text = _vs_fp32(runs, task, NONE)
    if task not in set(under.task):
        return status, text + ", underflow not measured"
    f = _underflow(under, task)
    flows = _outcome(f)
    text += (f", {sig2(100 * f['share'].mean)} % of its nonzero activation-gradient entries "
             f"flush (LS-1: {flows})")
    if status == "fails" or flows == "none":
        return status, text
    pair = runs[(runs.task == task) & runs.config.isin([NONE, DYNAMIC])]
    if DYNAMIC not in set(pair.config) or pair.train_loss.isna().any():
        return ("unclear" if status == "like" else status), text + ", cost not measured"
    cost = stats.compare(pair, "train_loss", "config", NONE, DYNAMIC, LOSS_MARGIN)
    text += (f", what the dynamic scaler changes: train loss without it minus with it "
             f"{cost.text(1, ' nats')} {cost.outcome}")
    if "test_accuracy" in pair.columns and pair.test_accuracy.notna().all():
        acc = stats.compare(pair, "test_accuracy", "config", NONE, DYNAMIC, ACC_MARGIN)
        text += f", test accuracy {acc.text(100, ' pp')} {acc.outcome}"
    if cost.outcome == "higher":
        return "fails", text
    if status == "like" and cost.outcome in ("equivalent", "lower"):
        return "like", text
    return "unclear", text


def _across(statuses: list[str]) -> str:
    """One line over all tasks: 'suffices' if like fp32 on each, 'needs more' if it fails on
    one, 'unclear' otherwise."""
    if "fails" in statuses:
        return "needs more"
    return "suffices" if set(statuses) == {"like"} else "unclear"


def framework_scaler(keras: pd.DataFrame | None) -> tuple[bool | None, str]:
    """Does the seed's framework add a loss scaler by itself under the fp16 policy? From chapter
    09's runs of the seed's Keras examples (`experiments.articles.keras_examples`: article,
    policy, optimizer, outcome): True when every trained mixed_float16 run's optimizer is a
    LossScaleOptimizer and no trained float32 run of the same articles has one (so the policy,
    not the code, added it); None when the table is absent or holds no trained
    mixed_float16 run. With the text the reason gives."""
    if keras is None:
        return None, ("whether the seed's framework adds a loss scaler by itself is not in the "
                      "data this rule received")
    missing = [c for c in ("article", "policy", "optimizer", "outcome") if c not in keras.columns]
    if missing:
        raise ValueError(f"keras: no column {missing[0]!r}; columns: {', '.join(keras.columns)}")
    trained = keras[keras.outcome == "trained"]
    mixed = trained[trained.policy == "mixed_float16"]
    if mixed.empty:
        return None, "chapter 09's Keras runs hold no trained mixed_float16 run"
    plain = trained[(trained.policy == "float32") & trained.article.isin(set(mixed.article))]
    wrapped = mixed.optimizer.astype(str).str.contains("LossScale")
    plain_wrapped = plain.optimizer.astype(str).str.contains("LossScale").any()
    kept = ", ".join(sorted(set(plain.optimizer.astype(str)))) or "no float32 run to compare"
    text = (f"in chapter 09's runs of the seed articles' Keras code, compile gave "
            f"{', '.join(sorted(set(mixed.optimizer.astype(str))))} under mixed_float16 (a "
            f"LossScaleOptimizer in {int(wrapped.sum())} of {len(mixed)} trained runs), where "
            f"the same code under float32 got {kept}")
    return bool(wrapped.all()) and not plain_wrapped, text


def mp24(runs: pd.DataFrame, under: pd.DataFrame, keras: pd.DataFrame | None = None,
         evidence: str = "tbl-mp24") -> Finding:
    """MP-24 from `runs` (task, seed, config, train_loss, optional test_accuracy and
    first_nonfinite; configs 32-true, bf16-mixed, '16-mixed, no scaling', optionally '16-mixed,
    dynamic' and 16-true), `under` (LS-1's underflow rows) and `keras` (chapter 09's Keras runs,
    see `framework_scaler`; None if not available).

    The policy line is judged as the seed's framework builds it. bf16: autocast alone
    (bf16-mixed). fp16: autocast plus the dynamic scaler where `keras` shows the policy adds a
    LossScaleOptimizer, else autocast alone (16-mixed without a scaler). A line trains like fp32
    on a task when its final train loss minus 32-true's, paired by seed, lies within
    +-LOSS_MARGIN and every run is finite. For fp16 without a scaler the rule also weighs LS-1:
    lost gradients count against the line only when they cost something measurable (the
    dynamic scaler's run ends lower beyond noise and outside the margin), and leave it
    undecided when the seeds cannot tell (no equivalence with that run); where the framework
    adds the scaler, a measurable cost without it limits the line to that framework's own loop.
    16-true (pure fp16, not mixed precision) is reported, not judged.

    supported: bf16-mixed and the fp16 line train like fp32 on every task (e.g. bf16-mixed and
    '16-mixed, dynamic' within the margin, `keras` showing the LossScaleOptimizer, and no
    measurable cost without it); refuted: both lines fail somewhere (non-finite, or a loss
    higher beyond noise and outside the margin; e.g. bf16-mixed higher, and 16-mixed without a
    scaler higher with no `keras` table); nuanced: anything else (one format only, an interval
    wider than the margin, or fp16 that suffices only with the framework's scaler); not
    testable here: fewer than MIN_SEEDS seeds."""
    for name in (FP32, BF16, NONE):
        if name not in set(runs.config):
            raise ValueError(f"runs: no {name!r} rows; configs: {', '.join(runs.config.unique())}")
    n_seeds = runs.groupby("task").seed.nunique().min()
    if n_seeds < MIN_SEEDS:
        return Finding("MP-24", "not testable here", f"trained on {n_seeds} seed(s); a paired "
                       f"interval needs at least {MIN_SEEDS}", evidence)
    tasks = list(dict.fromkeys(runs.task))
    adds, framework = framework_scaler(keras)
    if adds and DYNAMIC not in set(runs.config):
        raise ValueError(f"runs: no {DYNAMIC!r} rows, the run that stands for the policy line "
                         "where the framework adds the scaler")
    bf16 = [_vs_fp32(runs, t, BF16) for t in tasks]
    bare = [_without_scaler(runs, under, t) for t in tasks]
    state = {"bf16": _across([s for s, _ in bf16])}
    bare_state = _across([s for s, _ in bare])
    open_tasks = {"bf16": [t for t, (s, _) in zip(tasks, bf16, strict=True) if s != "like"]}
    parts = [f"bf16-mixed (autocast alone): {', '.join(x for _, x in bf16)}"]
    if adds:
        line = [_vs_fp32(runs, t, DYNAMIC) for t in tasks]
        state["fp16"] = _across([s for s, _ in line])
        open_tasks["fp16"] = [t for t, (s, _) in zip(tasks, line, strict=True) if s != "like"]
        if state["fp16"] == "suffices" and bare_state == "needs more":
            state["fp16"] = "framework only"
        parts.append(f"fp16 as the policy line builds it in the seed's framework (autocast and "
                     f"a dynamic loss scaler, 16-mixed, dynamic): {', '.join(x for _, x in line)}")
        parts.append(f"the framework: {framework}")
        parts.append(f"without the scaler (a custom loop, or autocast alone in PyTorch): "
                     f"{'; '.join(x for _, x in bare)}")
    else:
        state["fp16"] = bare_state
        open_tasks["fp16"] = [t for t, (s, _) in zip(tasks, bare, strict=True) if s != "like"]
        parts.append(f"fp16 as autocast alone (16-mixed without a scaler), since {framework}: "
                     f"{'; '.join(x for _, x in bare)}")
        if DYNAMIC in set(runs.config):
            line = [_vs_fp32(runs, t, DYNAMIC)[1] for t in tasks]
            parts.append(f"16-mixed with the dynamic scaler: {', '.join(line)}")
    if CAST16 in set(runs.config):
        cast = [_vs_fp32(runs, t, CAST16)[1] for t in tasks]
        parts.append(f"the fp16 cast (16-true: pure fp16, not mixed precision, reported only): "
                     f"{', '.join(cast)}")
    lost = [t for t in tasks if t in set(under.task) and _outcome(_underflow(under, t)) != "none"]
    cost = {"suffices": "at no cost measurable in final train loss here",
            "unclear": "its cost undecided"}.get(bare_state, "and training ends worse")
    caveat = (f"; without a scaler fp16 loses gradients on {', '.join(lost)} (LS-1), {cost}"
              if lost and state["fp16"] != "framework only" else "")
    if state["bf16"] == state["fp16"] == "suffices":
        verdict, lead = "supported", ("one line trains like fp32 in bf16 and in fp16"
                                      + (" (fp16 with the loss scaler the framework's compile "
                                         "adds)" if adds else "") + caveat)
    elif state["bf16"] == state["fp16"] == "needs more":
        verdict, lead = "refuted", "the policy line does not train like fp32, in bf16 or in fp16"
    else:
        verdict = "nuanced"
        words = {"suffices": "one line suffices", "needs more": "one line is not enough",
                 "suffices, scaler added": "one line suffices (the framework's compile adds "
                                           "the loss scaler)",
                 "unclear": "one line is undecided",
                 "framework only": "one line suffices only where the framework adds the loss "
                                   "scaler (without it training ends worse)"}
        fp16 = "suffices, scaler added" if adds and state["fp16"] == "suffices" else state["fp16"]
        where = {f: (f" (not decided on {', '.join(open_tasks[f])}: an interval wider than the "
                     "margin, or too few seeds to detect an effect of its size)"
                     if state[f] == "unclear" else "") for f in state}
        lead = (f"{words[state['bf16']]} for bf16{where['bf16']}, {words[fp16]} for fp16"
                f"{where['fp16']}{caveat}")
    reason = (f"{lead}; final train loss minus 32-true, paired by seed (margin +-"
              f"{sig2(LOSS_MARGIN)} nats): {'; '.join(parts)}")
    return Finding("MP-24", verdict, reason, evidence)
