"""Verdict rule of chapter 15 (training below 16 bits): MP-12, and the findings on FP8/MX.

MP-12 (seeds 003, 004): training with 16-bit tensors and no fp32 master weights is a way to
train. Tested on `experiments.low_precision.train`: the language model of chapter 12 trained
from the same weights and batches per seed under each recipe, its final validation loss
compared, paired by seed, with the bf16-mixed run (fp32 master weights) of the same seed.

A recipe *matches* when the 95 % paired interval of its loss minus bf16-mixed's lies inside
+-LOSS_MARGIN (chapter 12's margin); it *diverged* when a run's loss is not finite or lies more
than FAR_ABOVE above its pair. Pure fp16 is tried twice: naively (torch's Adam eps 1e-8, which
rounds to 0 in fp16, `formats.adam_underflow`) and as a practitioner would (an eps fp16 holds,
`designs.WORKING_PURE`); a format is a way to train when one of its plain recipes matches. The
same words describe the FP8 and MX recipes (`outcomes`), as findings, not verdicts: no seed
article claims anything about them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from precisionlab.formats import adam_underflow
from precisionlab.study import stats
from precisionlab.study.claims import Finding, sig2
from precisionlab.study.designs import RECIPE_SPECS, WORKING_PURE
from precisionlab.study.rules import mixed
from precisionlab.study.rules.language_models import LOSS_MARGIN

BASELINE = "bf16-mixed"
# The recipes that keep no fp32 copy of the weights. Plain: the weights (and Adam's state) are
# 16-bit and every update is rounded to nearest (torch's cast), per weight format; fp16 both
# naively (torch's eps) and with an eps fp16 holds. Corrected: bf16 weights whose update is
# rounded stochastically or carries a bf16 Kahan compensation buffer (still no fp32 master copy).
PLAIN = {"fp16": ("16-true", *WORKING_PURE), "bf16": ("bf16-true",)}
NAIVE = ("bf16-true", "16-true")
CORRECTED = ("bf16-stochastic", "bf16-kahan")
# "Diverged", not merely worse: a final validation loss more than ln 2 nats above the baseline
# run of the same seed is a perplexity at least twice as high, a run that failed to train.
FAR_ABOVE = math.log(2.0)
# A paired interval needs at least two seeds; with fewer the rule cannot judge noise.
MIN_SEEDS = 2
OUTCOMES = ("matches", "diverged", "worse", "better", "inconclusive")
TORCH_EPS = 1e-8  # torch.optim.Adam's default eps, what a recipe without its own eps runs
STATE_FORMAT = {"16-true": "fp16", "bf16-true": "bf16"}  # pure policies: Adam's state format


def eps_lost(recipe: str) -> dict[str, float | bool] | None:
    """`formats.adam_underflow` of `recipe` (a key of `designs.RECIPE_SPECS`) if its Adam eps
    rounds to 0 in the format of its weights and Adam's state, else None."""
    spec = RECIPE_SPECS.get(recipe)
    fmt = STATE_FORMAT.get(spec.precision) if spec else None
    if fmt is None:
        return None
    facts = adam_underflow(fmt, eps=TORCH_EPS if spec.eps is None else spec.eps)
    return facts if facts["eps_is_zero"] else None


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


def _recipe_text(runs: pd.DataFrame, recipe: str) -> str:
    """'16-true diverged (3 of 3 seeds ...): Adam's eps ... divides by ~0': one recipe's outcome
    against bf16-mixed with its interval, and why when its eps rounds to 0 (`eps_lost`)."""
    word, iv = classify(runs, recipe)
    d = _differences(runs, recipe).to_numpy(dtype=float)
    bad = int((~np.isfinite(d) | (d > FAR_ABOVE)).sum())
    text = f"{recipe} {word} (" + (f"{bad} of {len(d)} seeds not finite or > "
                                   f"{sig2(FAR_ABOVE)} nats above" if bad else
                                   stats.Comparison(iv, LOSS_MARGIN).text(unit=" nats")) + ")"
    lost = eps_lost(recipe)
    if lost is not None:
        eps = RECIPE_SPECS[recipe].eps
        text += (f": Adam's eps {sig2(TORCH_EPS if eps is None else eps)} rounds to 0 in "
                 f"{lost['format']} (as does every value up to "
                 f"{sig2(float(lost['min_subnormal']) / 2)}) and v = (1 - beta2) g^2 is 0 for "
                 f"|g| <= {sig2(float(lost['v_zero_below']))}, so its update divides by ~0")
    return text


def _group_text(runs: pd.DataFrame, subject: str, recipes: Sequence[str],
                ok: Sequence[str]) -> str:
    """"pure fp16 trains as '16-true, eps 1e-4' (matches) but not as '16-true' (diverged: its
    Adam eps rounds to 0 in fp16)": which of a group's recipes match bf16-mixed, which do not,
    and why when the cause is an eps the format cannot hold."""
    fail, lost = [], []
    for r in recipes:
        if r in ok:
            continue
        facts = eps_lost(r)
        lost.append(facts is not None)
        why = f": its Adam eps rounds to 0 in {facts['format']}" if facts is not None else ""
        fail.append(f"'{r}' ({classify(runs, r)[0]}{why})")
    if not ok:
        none_held = " (no recipe with an eps this format holds was run)" if all(lost) else ""
        return f"{subject} is not shown to train: {' and '.join(fail)}{none_held}"
    return (f"{subject} trains as {' and '.join(repr(r) for r in ok)} (matches)"
            + (f" but not as {' or '.join(fail)}" if fail else ""))


def mp12(runs: pd.DataFrame, pure02: pd.DataFrame | None = None,
         evidence: str = "tbl-mp12") -> Finding:
    """MP-12 from `train`'s runs (seed, recipe, val_loss) and, if given, chapter 02's pure runs
    (`pure02`: `experiments.low_precision.chapter02_pure`, recipe labels in `precision`, judged
    by `rules.mixed.mp12`: fp16 and bf16 weights with SGD and Adam on an MLP, an arm training
    when any of its recipes does).

    Each language-model recipe without fp32 master weights is compared with bf16-mixed
    (`classify`); a weight format is a way to train when one of its PLAIN recipes present
    matches (naive 16-true fails by an Adam eps fp16 cannot hold: the reason says so).
    not testable here: fewer than MIN_SEEDS seeds, or a bf16-mixed run not finite (no
    reference); supported: every format with a plain recipe here has one that matches and
    chapter 02's arms all train; refuted: no language-model recipe without master weights
    matches (plain or CORRECTED: stochastic rounding, Kahan) and chapter 02's arms all fail;
    nuanced otherwise (some ways of keeping 16-bit weights train, others do not). Raises if
    `runs` has no bf16-mixed or no recipe without master weights."""
    present = set(runs.recipe)
    if BASELINE not in present:
        raise ValueError(f"runs: needs the {BASELINE!r} runs (the reference)")
    plain = {f: [r for r in rs if r in present] for f, rs in PLAIN.items()}
    plain = {f: rs for f, rs in plain.items() if rs}
    corrected = [r for r in CORRECTED if r in present]
    if not plain and not corrected:
        known = [r for rs in PLAIN.values() for r in rs] + list(CORRECTED)
        raise ValueError(f"runs: needs at least one recipe without master weights: "
                         f"{', '.join(known)}")
    seeds = sorted(set(runs.seed))
    base = runs[runs.recipe == BASELINE].val_loss.to_numpy(dtype=float)
    if len(seeds) < MIN_SEEDS or not np.isfinite(base).all():
        why = (f"only {len(seeds)} seed(s): a paired interval needs {MIN_SEEDS}"
               if len(seeds) < MIN_SEEDS else f"a {BASELINE} run diverged: no reference")
        return Finding("MP-12", "not testable here", why, evidence)
    ok = {f: matching(runs, rs) for f, rs in plain.items()}
    ok_corrected = matching(runs, corrected)
    head = [_group_text(runs, f"pure {f}", plain[f], ok[f]) for f in plain]
    if corrected:
        head.append(_group_text(runs, "bf16 with a corrected update", corrected,
                                ok_corrected))
    mlp = mixed.mp12(pure02) if pure02 is not None else None
    if mlp is not None:
        head.append(f"chapter 02's MLPs: {mlp.verdict}")
    details = [_recipe_text(runs, r) for rs in plain.values() for r in rs]
    details += [_recipe_text(runs, r) for r in corrected]
    reason = (f"language model against {BASELINE} (fp32 master weights): " + ", ".join(head)
              + f"; final val loss minus {BASELINE}'s, paired by seed, margin "
              f"+-{sig2(LOSS_MARGIN)} nats: " + "; ".join(details))
    if mlp is not None:
        reason += f". Chapter 02's MLPs, test accuracy vs AMP: {mlp.reason}"
    word = mlp.verdict if mlp is not None else None
    if plain and all(ok.values()) and word in (None, "supported"):
        verdict = "supported"
    elif not any(ok.values()) and not ok_corrected and word in (None, "refuted"):
        verdict = "refuted"
    else:
        verdict = "nuanced"
    return Finding("MP-12", verdict, reason, evidence)
