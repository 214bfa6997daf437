"""Verdict rule of chapter 12 (a language model trained here): LLM-5.

LLM-5 (seeds 002, 000): half or mixed precision keeps an LLM's training quality while raising
its efficiency. Tested on `experiments.language_models`: a small causal character model trained
at 32-true and under each 16-bit recipe from the same weights and batches per seed (`train`),
and its steady-state optimizer step timed per recipe, interleaved in one run per seed
(`step_times`, reduced by `ratios` to one ratio per seed).

Quality is judged on the final validation loss, paired by seed, as equivalence within
LOSS_MARGIN; efficiency on the step time over 32-true's, beyond noise by the book's one rule.
A recipe whose Adam eps rounds to 0 in the format that holds Adam's state (naive 16-true: torch's
1e-8 in fp16, `formats.adam_underflow`) is reported but not judged: it tests a setting fp16
cannot hold, not 16-bit training; the pure-fp16 recipe with an eps fp16 holds stands for it.
The efficiency half belongs to the machine that ran it, so the finding names the hardware.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from precisionlab.formats import adam_underflow, spacing
from precisionlab.study import stats
from precisionlab.study.claims import Finding, sig2, span
from precisionlab.study.designs import LM_BASELINE as BASELINE
from precisionlab.study.designs import WORKING_PURE

# "Keeps training quality": the final validation loss minus that of the 32-true run of the same
# seed has its 95 % interval inside +-0.05 nats. e^0.05 = 1.05: a 5 % change of perplexity, the
# smallest change in how well a language model predicts held-out text that we would call a
# different outcome of training (the book's margin for losses, as in chapter 03's MP-24).
LOSS_MARGIN = 0.05
# "Raises efficiency" is ruled out for a recipe only when its step-time ratio is shown to be at
# least 0.95 (the interval over seeds lies above it): a gain under 5 % is within how interleaved
# timings on a shared machine wander from run to run, and a wider interval decides nothing.
NO_GAIN = 0.95
# A paired interval needs at least two seeds; with fewer the rule cannot judge noise.
MIN_SEEDS = 2
TORCH_EPS = 1e-8  # torch.optim.Adam's default eps, what a recipe without its own eps runs
# The pure policies keep their weights, loss and Adam's state in their 16-bit format; the others
# keep them in fp32.
STATE_FORMAT = {"16-true": "fp16", "bf16-true": "bf16"}


def _state_format(label: str) -> str | None:
    """The 16-bit format recipe `label` keeps Adam's state in (None: fp32)."""
    return STATE_FORMAT.get(WORKING_PURE.get(label, (label, None))[0])


def _eps(label: str) -> float:
    """Adam's eps in recipe `label` (a precision, or a `designs.WORKING_PURE` label)."""
    eps = WORKING_PURE.get(label, (label, None))[1]
    return TORCH_EPS if eps is None else eps


def eps_lost(label: str) -> dict[str, float | bool] | None:
    """`formats.adam_underflow` of recipe `label` (a precision, or a `designs.WORKING_PURE`
    label) if its Adam eps rounds to 0 in the format of Adam's state, else None."""
    fmt = _state_format(label)
    if fmt is None:
        return None
    facts = adam_underflow(fmt, eps=_eps(label))
    return facts if facts["eps_is_zero"] else None


def quality(runs: pd.DataFrame, precision: str) -> stats.Comparison:
    """The paired comparison of `precision`'s final validation loss with 32-true's (a diverged
    run has a NaN loss, which makes the interval NaN: never equivalent). A pure recipe computes
    its loss in its 16-bit format, so the loss moves in steps of that format's spacing at the
    loss (bf16: 0.0156 near 2.5): the comparison's resolution, below which seeds that agree
    prove nothing."""
    resolution = 0.0
    fmt = _state_format(precision)
    losses = runs.loc[runs.precision == precision, "val_loss"].to_numpy(dtype=float)
    losses = losses[np.isfinite(losses)]
    if fmt is not None and len(losses):
        resolution = float(spacing(torch.tensor(float(np.median(losses))), fmt))
    return stats.compare(runs, "val_loss", "precision", precision, BASELINE, LOSS_MARGIN,
                         resolution=resolution)


def speed(ratios: pd.DataFrame, precision: str) -> stats.Interval:
    """The 95 % interval over seeds of the natural log of `precision`'s step time over 32-true's
    (ratios multiply, so their logs are averaged; below 0 beyond noise: faster). Needs one ratio
    per seed: raises on per-repeat step-time tables (reduce them with
    `experiments.language_models.ratios`), whose repeats would pass for seeds."""
    if "seed" not in ratios.columns:
        raise ValueError("ratios: has no column 'seed'; pass one ratio per seed and precision "
                         "(experiments.language_models.ratios of the step-time table)")
    part = ratios[ratios.precision == precision]
    if part.empty:
        raise ValueError(f"ratios: no rows for precision {precision!r}")
    if part.seed.duplicated().any():
        raise ValueError(f"ratios: {len(part)} rows for precision {precision!r} over "
                         f"{part.seed.nunique()} seed(s); pass one ratio per seed and precision "
                         "(experiments.language_models.ratios of the step-time table), not the "
                         "per-repeat times")
    return stats.interval(np.log(part.ratio.to_numpy(dtype=float)))


def _eps_text(label: str, facts: dict[str, float | bool]) -> str:
    """Why recipe `label`'s Adam divides by ~0: its eps and v underflow in its state format."""
    return (f"Adam's eps {sig2(_eps(label))} rounds to 0 in {facts['format']} (as does "
            f"every value up to {sig2(float(facts['min_subnormal']) / 2)}) and v = "
            f"(1 - beta2) g^2 is 0 for |g| <= {sig2(float(facts['v_zero_below']))}, so its "
            "update divides by ~0")


def elsewhere(step_speedup: pd.DataFrame | None) -> str:
    """What chapter 08 measured for the same recipes on larger models (its `step_speedup`
    table: family, size, precision, speedup, lo, hi), as a clause of the reason; '' if absent.
    Told, not judged: those models are not the language model this claim is about."""
    if step_speedup is None or step_speedup.empty:
        return ""
    sizes = len(step_speedup[["family", "size"]].drop_duplicates())
    parts = []
    for p, d in step_speedup[step_speedup.precision != BASELINE].groupby("precision",
                                                                         sort=False):
        faster = int((d.lo > 1).sum())
        untimed = (f", too slow to time at the other {sizes - len(d)}"
                   if len(d) < sizes else "")
        parts.append(f"{p} {span(d.speedup)}x 32-true's step speed, faster at {faster} of "
                     f"{len(d)} timed sizes{untimed}")
    return ("; chapter 08 (as published) timed larger MLPs and transformers: " +
            ", ".join(parts) + " (told, not judged: other models)")


def llm5(runs: pd.DataFrame, ratios: pd.DataFrame, hardware: str,
         evidence: str = "fig-llm5-loss", step_speedup: pd.DataFrame | None = None) -> Finding:
    """LLM-5 from `train`'s runs (seed, precision: the recipe's label, val_loss, diverged) and
    the per-seed step-time ratios (seed, precision, ratio: steady-state step time over
    32-true's, measured in one run; one row per seed and recipe).

    A recipe *keeps quality* when its final validation loss is within +-LOSS_MARGIN of 32-true's
    (95 % paired interval inside the margin, `stats.Comparison` 'equivalent') and *raises
    efficiency* when the interval of its step-time ratio (geometric mean over seeds) lies below
    1. Recipes whose Adam eps rounds to 0 in their state format (`eps_lost`) are reported, not
    judged. not testable here: fewer than MIN_SEEDS seeds, a 32-true run diverged (no
    reference), or no recipe left to judge; supported: every judged recipe does both; refuted:
    every judged recipe *fails*: its loss is higher beyond noise and the margin, or it diverged,
    or its step-time ratio is shown to be at least NO_GAIN (no speed-up); nuanced: anything
    else (some recipe does both, or an undecided quality or speed leaves the claim open). Raises
    on tables that lack what the rule reads.
    `step_speedup` (chapter 08's table, optional) adds what larger models measured, without
    deciding the word (`elsewhere`)."""
    seeds = sorted(set(runs.seed))
    base = runs[runs.precision == BASELINE]
    if base.empty:
        raise ValueError(f"runs: needs the {BASELINE!r} runs (the reference)")
    recipes = [p for p in dict.fromkeys(runs.precision) if p != BASELINE]
    if not recipes:
        raise ValueError("runs: needs at least one 16-bit recipe besides 32-true")
    steps = {p: speed(ratios, p) for p in recipes}  # checks the ratio table before any word
    if len(seeds) < MIN_SEEDS or not np.isfinite(base.val_loss.to_numpy(dtype=float)).all():
        why = (f"only {len(seeds)} seed(s): a paired interval needs {MIN_SEEDS}"
               if len(seeds) < MIN_SEEDS else "a 32-true run diverged: no reference")
        return Finding("LLM-5", "not testable here", why, evidence, hardware)
    lost = {p: f for p in recipes if (f := eps_lost(p)) is not None}
    judged = [p for p in recipes if p not in lost]
    parts, both, slow, worse, higher_kept, failed = [], [], [], [], [], []
    for p in recipes:
        q, s = quality(runs, p), steps[p]
        bad = int(runs[runs.precision == p].diverged.astype(bool).sum())
        keeps = q.outcome == "equivalent"
        faster, slower = s.high < 0, s.low > 0
        if p in judged and keeps and faster:
            both.append(p)
        if p in judged and (bad or q.outcome == "higher" or s.low > np.log(NO_GAIN)):
            failed.append(p)
        if p in judged and not faster:
            slow.append(p)
        if p in judged and not keeps:
            worse.append(p)
        if p in judged and keeps and q.interval.low > 0:
            higher_kept.append(p)
        higher = ", higher beyond noise" if q.interval.low > 0 else ""  # said even when kept
        kept = {"equivalent": "within", "underpowered": "within, but too few seeds to tell a "
                f"{sig2(LOSS_MARGIN)}-nat change from none"}.get(q.outcome, "not within")
        loss = (f"diverged in {bad} of {len(seeds)} seeds" if bad else
                f"val loss {q.text(unit=' nats')} vs 32-true "
                f"({kept} +-{sig2(LOSS_MARGIN)}{higher})")
        pace = "faster" if faster else "slower" if slower else "neither faster nor slower"
        step = (f"step time {sig2(np.exp(s.mean))}x 32-true's "
                f"[{sig2(np.exp(s.low))}, {sig2(np.exp(s.high))}] ({pace} beyond noise)")
        if p in lost and bad:
            parts.append(f"{p} (not judged): {loss} because {_eps_text(p, lost[p])}, {step}")
        elif p in lost:
            parts.append(f"{p} (not judged: {_eps_text(p, lost[p])}): {loss}, {step}")
        else:
            parts.append(f"{p}: {loss}, {step}")
    details = "; ".join(parts)
    if not judged:
        return Finding("LLM-5", "not testable here", "every 16-bit recipe here keeps Adam's "
                       "eps in a format that rounds it to 0, so none tests 16-bit training "
                       f"itself (add {', '.join(WORKING_PURE)})" + f"; {details}", evidence,
                       hardware)
    head = (f"{len(both)} of {len(judged)} judged 16-bit recipes kept 32-true's validation "
            f"loss within +-{sig2(LOSS_MARGIN)} nats and ran faster on this machine "
            f"({', '.join(both) or 'none'})")
    bad_news = []
    if slow:
        bad_news.append("none ran faster than 32-true beyond noise here" if len(slow) ==
                        len(judged) else f"not faster beyond noise here: {', '.join(slow)}")
    slower = [p for p in judged if steps[p].low > 0]
    if slower:
        bad_news.append(f"slower beyond noise: {', '.join(slower)} ("
                        + ", ".join(f"{sig2(np.exp(steps[p].mean))}x" for p in slower)
                        + " 32-true's step time)")
    no_gain = [p for p in judged if np.log(NO_GAIN) < steps[p].low <= 0]
    if no_gain:
        bad_news.append(f"shown to gain less than {sig2(100 * (1 - NO_GAIN))} % in step time: "
                        + ", ".join(f"{p} (step time [{sig2(np.exp(steps[p].low))}, "
                                    f"{sig2(np.exp(steps[p].high))}]x 32-true's)"
                                    for p in no_gain))
    if worse:
        bad_news.append(f"quality not shown kept: {', '.join(worse)}")
    if higher_kept:
        bad_news.append(f"loss higher beyond noise though within the margin: "
                        f"{', '.join(higher_kept)}")
    for p in lost:
        bad_news.append(f"{p} was not judged: its Adam eps rounds to 0 in "
                        f"{lost[p]['format']}, so it "
                        + ("diverged" if runs[runs.precision == p].diverged.astype(bool).any()
                           else "tests that setting, not 16 bits"))
    if (any(f["format"] == "fp16" for f in lost.values())
            and not any(_state_format(p) == "fp16" for p in judged)):
        bad_news.append("no pure-fp16 recipe with an eps fp16 holds was run")
    reason = ", ".join([head, *bad_news]) + f"; {details}" + elsewhere(step_speedup)
    if len(both) == len(judged):
        verdict = "supported"
    elif len(failed) == len(judged):
        verdict = "refuted"
    else:
        verdict = "nuanced"
        if not both:
            open_ = [p for p in judged if p not in failed]
            reason = (f"no judged recipe was shown to keep quality and run faster, but "
                      f"{', '.join(open_)} {'was' if len(open_) == 1 else 'were'} not shown to "
                      f"fail either (quality or speed undecided here); " + reason)
    return Finding("LLM-5", verdict, reason, evidence, hardware)
