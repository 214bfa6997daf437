"""Verdict rule of chapter 15 (training below 16 bits): MP-12, and the findings on FP8/MX.

MP-12 (seeds 003, 004): training with 16-bit tensors and no fp32 master weights is a way to
train. Tested on `experiments.low_precision.train`: the language model of chapter 12 trained
from the same weights and batches per seed under each recipe, its final validation loss
compared, paired by seed, with the bf16-mixed run (fp32 master weights) of the same seed.

A recipe *matches* when the 95 % paired interval of its loss minus bf16-mixed's lies inside
+-LOSS_MARGIN (chapter 12's margin); it *diverged* when a run's loss is not finite or lies more
than FAR_ABOVE above its pair. The same words describe the FP8 and MX recipes (`outcomes`),
as findings, not verdicts: no seed article claims anything about them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from precisionlab.study import stats
from precisionlab.study.claims import Finding, sig2
from precisionlab.study.rules import mixed
from precisionlab.study.rules.language_models import LOSS_MARGIN

BASELINE = "bf16-mixed"
# The recipes that keep no fp32 copy of the weights. Naive: the weights are 16-bit and every
# update is rounded to nearest (torch's cast). Corrected: bf16 weights whose update is rounded
# stochastically or carries a bf16 Kahan compensation buffer (still no fp32 master copy).
NAIVE = ("bf16-true", "16-true")
CORRECTED = ("bf16-stochastic", "bf16-kahan")
# "Diverged", not merely worse: a final validation loss more than ln 2 nats above the baseline
# run of the same seed is a perplexity at least twice as high, a run that failed to train.
FAR_ABOVE = math.log(2.0)
# A paired interval needs at least two seeds; with fewer the rule cannot judge noise.
MIN_SEEDS = 2
OUTCOMES = ("matches", "diverged", "worse", "better", "inconclusive")


def _differences(runs: pd.DataFrame, recipe: str) -> pd.Series:
    """Final validation loss of `recipe` minus bf16-mixed's, paired by seed."""
    return stats.paired_differences(runs, "val_loss", "recipe", recipe, BASELINE)


def classify(runs: pd.DataFrame, recipe: str) -> tuple[str, stats.Interval]:
    """`recipe`'s outcome against bf16-mixed (one of OUTCOMES) and the paired interval.

    diverged: a run's loss is not finite or more than FAR_ABOVE above its pair; matches: the
    95 % interval lies inside +-LOSS_MARGIN; worse / better: beyond noise above / below and not
    matching; inconclusive: otherwise (more seeds would decide)."""
    d = _differences(runs, recipe).to_numpy(dtype=float)
    iv = stats.interval(d)
    if not np.isfinite(d).all() or (d > FAR_ABOVE).any():
        return "diverged", iv
    outcome = stats.Comparison(iv, LOSS_MARGIN).outcome
    return {"equivalent": "matches", "higher": "worse", "lower": "better"}.get(
        outcome, "inconclusive"), iv


def outcomes(runs: pd.DataFrame, recipes: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per recipe other than bf16-mixed (default: all in `runs`, in order): recipe,
    outcome, mean, low, high (the paired loss difference in nats), n, diverged_runs."""
    recipes = [r for r in (recipes or dict.fromkeys(runs.recipe)) if r != BASELINE]
    rows = []
    for r in recipes:
        word, iv = classify(runs, r)
        d = _differences(runs, r).to_numpy(dtype=float)
        rows.append({"recipe": r, "outcome": word, "mean": iv.mean, "low": iv.low,
                     "high": iv.high, "n": iv.n,
                     "diverged_runs": int((~np.isfinite(d) | (d > FAR_ABOVE)).sum())})
    return pd.DataFrame(rows, columns=["recipe", "outcome", "mean", "low", "high", "n",
                                       "diverged_runs"])


def matching(runs: pd.DataFrame, recipes: Sequence[str]) -> list[str]:
    """Those of `recipes` present in `runs` whose outcome against bf16-mixed is 'matches'."""
    present = [r for r in recipes if r in set(runs.recipe)]
    return [r for r in present if classify(runs, r)[0] == "matches"]


def mp12(runs: pd.DataFrame, pure02: pd.DataFrame | None = None,
         evidence: str = "tbl-mp12") -> Finding:
    """MP-12 from `train`'s runs (seed, recipe, val_loss) and, if given, chapter 02's pure runs
    (`pure02`: `experiments.mixed.finals` of its `pure_precision` table, judged per arm by
    `rules.mixed.mp12`: fp16 and bf16 weights with SGD and Adam on an MLP).

    Each language-model recipe without fp32 master weights is compared with bf16-mixed
    (`classify`). not testable here: fewer than MIN_SEEDS seeds, or a bf16-mixed run not
    finite (no reference); supported: every naive pure 16-bit recipe tested (NAIVE) matches and
    chapter 02's arms all train; refuted: no language-model recipe without master weights
    matches (naive or CORRECTED: stochastic rounding, Kahan) and chapter 02's arms all fail;
    nuanced otherwise (some ways of keeping 16-bit weights train, others do not). Raises if
    `runs` has no bf16-mixed or no recipe without master weights."""
    if BASELINE not in set(runs.recipe):
        raise ValueError(f"runs: needs the {BASELINE!r} runs (the reference)")
    naive = [r for r in NAIVE if r in set(runs.recipe)]
    corrected = [r for r in CORRECTED if r in set(runs.recipe)]
    if not naive and not corrected:
        raise ValueError(f"runs: needs at least one recipe without master weights: "
                         f"{', '.join(NAIVE + CORRECTED)}")
    seeds = sorted(set(runs.seed))
    base = runs[runs.recipe == BASELINE].val_loss.to_numpy(dtype=float)
    if len(seeds) < MIN_SEEDS or not np.isfinite(base).all():
        why = (f"only {len(seeds)} seed(s): a paired interval needs {MIN_SEEDS}"
               if len(seeds) < MIN_SEEDS else f"a {BASELINE} run diverged: no reference")
        return Finding("MP-12", "not testable here", why, evidence)
    parts = []
    for r in naive + corrected:
        word, iv = classify(runs, r)
        d = _differences(runs, r).to_numpy(dtype=float)
        bad = int((~np.isfinite(d) | (d > FAR_ABOVE)).sum())
        parts.append(f"{r} {word} (" + (f"{bad} of {len(d)} seeds not finite or > "
                                        f"{sig2(FAR_ABOVE)} nats above" if bad else
                                        iv.text(unit=" nats")) + ")")
    ok_naive, ok_corrected = matching(runs, naive), matching(runs, corrected)
    reason = (f"language model, final val loss minus {BASELINE}'s, paired by seed, margin "
              f"+-{sig2(LOSS_MARGIN)} nats: " + "; ".join(parts))
    mlp = mixed.mp12(pure02) if pure02 is not None else None
    if mlp is not None:
        reason += f". Chapter 02's MLPs, test accuracy vs AMP: {mlp.reason}"
    word = mlp.verdict if mlp is not None else None
    if naive and len(ok_naive) == len(naive) and word in (None, "supported"):
        verdict = "supported"
    elif not ok_naive and not ok_corrected and word in (None, "refuted"):
        verdict = "refuted"
    else:
        verdict = "nuanced"
    return Finding("MP-12", verdict, reason, evidence)
