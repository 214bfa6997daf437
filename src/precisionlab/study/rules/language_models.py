"""Verdict rule of chapter 12 (a language model trained here): LLM-5.

LLM-5 (seeds 002, 000): half or mixed precision keeps an LLM's training quality while raising
its efficiency. Tested on `experiments.language_models`: a small causal character model trained
at 32-true and at each 16-bit recipe from the same weights and batches per seed (`train`), and
its optimizer step timed per recipe, interleaved in one run per seed (`step_times`).

Quality is judged on the final validation loss, paired by seed, as equivalence within
LOSS_MARGIN; efficiency on the step time over 32-true's, beyond noise by the book's one rule.
The efficiency half belongs to the machine that ran it, so the finding names the hardware.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from precisionlab.study import stats
from precisionlab.study.claims import Finding, sig2

BASELINE = "32-true"
# "Keeps training quality": the final validation loss minus that of the 32-true run of the same
# seed has its 95 % interval inside +-0.05 nats. e^0.05 = 1.05: a 5 % change of perplexity, the
# smallest change in how well a language model predicts held-out text that we would call a
# different outcome of training (the book's margin for losses, as in chapter 03's MP-24).
LOSS_MARGIN = 0.05
# A paired interval needs at least two seeds; with fewer the rule cannot judge noise.
MIN_SEEDS = 2


def quality(runs: pd.DataFrame, precision: str) -> stats.Comparison:
    """The paired comparison of `precision`'s final validation loss with 32-true's (a diverged
    run has a NaN loss, which makes the interval NaN: never equivalent)."""
    return stats.compare(runs, "val_loss", "precision", precision, BASELINE, LOSS_MARGIN)


def speed(ratios: pd.DataFrame, precision: str) -> stats.Interval:
    """The 95 % interval over seeds of the natural log of `precision`'s step time over 32-true's
    (ratios multiply, so their logs are averaged; below 0 beyond noise: faster)."""
    r = ratios[ratios.precision == precision].ratio.to_numpy(dtype=float)
    if r.size == 0:
        raise ValueError(f"ratios: no rows for precision {precision!r}")
    return stats.interval(np.log(r))


def llm5(runs: pd.DataFrame, ratios: pd.DataFrame, hardware: str,
         evidence: str = "fig-llm5-loss") -> Finding:
    """LLM-5 from `train`'s runs (seed, precision, val_loss, diverged) and the per-seed step-time
    ratios (seed, precision, ratio: step time over 32-true's, measured in one run).

    A recipe *keeps quality* when its final validation loss is within +-LOSS_MARGIN of 32-true's
    (95 % paired interval inside the margin) and *raises efficiency* when the interval of its
    step-time ratio (geometric mean over seeds) lies below 1. not testable here: fewer than
    MIN_SEEDS seeds, or a 32-true run diverged (no reference); supported: every 16-bit recipe
    tested does both; refuted: none does both; nuanced: some do."""
    seeds = sorted(set(runs.seed))
    base = runs[runs.precision == BASELINE]
    if base.empty:
        raise ValueError(f"runs: needs the {BASELINE!r} runs (the reference)")
    recipes = [p for p in dict.fromkeys(runs.precision) if p != BASELINE]
    if not recipes:
        raise ValueError("runs: needs at least one 16-bit precision besides 32-true")
    if len(seeds) < MIN_SEEDS or not np.isfinite(base.val_loss.to_numpy(dtype=float)).all():
        why = (f"only {len(seeds)} seed(s): a paired interval needs {MIN_SEEDS}"
               if len(seeds) < MIN_SEEDS else "a 32-true run diverged: no reference")
        return Finding("LLM-5", "not testable here", why, evidence, hardware)
    parts, both = [], []
    for p in recipes:
        q, s = quality(runs, p), speed(ratios, p)
        bad = int(runs[runs.precision == p].diverged.astype(bool).sum())
        keeps = q.outcome == "equivalent"
        faster, slower = s.high < 0, s.low > 0
        if keeps and faster:
            both.append(p)
        worse = ", higher beyond noise" if q.interval.low > 0 else ""  # said even when kept
        loss = (f"diverged in {bad} of {len(seeds)} seeds" if bad else
                f"val loss {q.interval.text(unit=' nats')} vs 32-true "
                f"({'within' if keeps else 'not within'} +-{sig2(LOSS_MARGIN)}{worse})")
        pace = "faster" if faster else "slower" if slower else "neither faster nor slower"
        step = (f"step time {sig2(np.exp(s.mean))}x 32-true's "
                f"[{sig2(np.exp(s.low))}, {sig2(np.exp(s.high))}] ({pace} beyond noise)")
        parts.append(f"{p}: {loss}, {step}")
    reason = (f"{len(both)} of {len(recipes)} 16-bit recipes kept quality and ran faster "
              f"({', '.join(both) or 'none'}); " + "; ".join(parts))
    if len(both) == len(recipes):
        verdict = "supported"
    elif not both:
        verdict = "refuted"
    else:
        verdict = "nuanced"
    return Finding("LLM-5", verdict, reason, evidence, hardware)
