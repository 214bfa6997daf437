"""Chapter 12's tables, figures and glued prose, from the tidy tables of
`precisionlab.study.experiments.language_models`: presentation only, no measurement.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from precisionlab.study import plotting, stats
from precisionlab.study.designs import LM_BASELINE as BASELINE
from precisionlab.study.designs import LM_PRECISIONS as PRECISIONS
from precisionlab.study.designs import WORKING_PURE

# Every recipe label chapter 12 trains: the five precisions, then the working pure-fp16 ones.
LABELS = (*PRECISIONS, *WORKING_PURE)
COLORS = dict(zip(LABELS, plotting.PALETTE, strict=False))
STYLES = dict(zip(LABELS, [("o", "-"), ("s", "--"), ("^", ":"), ("D", "-."), ("v", "-"),
                           ("X", "--")],
                  strict=True))  # marker and line style: recipes that coincide stay visible


def glue_key(label: str) -> str:
    """`label` as part of a glue name, letters, digits and underscores only ('16-true, eps 1e-4'
    -> '16_true_eps_1e_4'), so the prose can cite every recipe's numbers by a plain name."""
    return re.sub(r"[^0-9A-Za-z]+", "_", label).strip("_")


def _ci(values: pd.Series, digits: int = 4) -> str:
    """'mean [low, high]' over seeds, or how many runs were not finite."""
    x = values.to_numpy(dtype=float)
    bad = int((~np.isfinite(x)).sum())
    if bad:
        return f"diverged in {bad} of {len(x)} seeds"
    iv = stats.interval(x)
    if iv.n < 2:
        return f"{iv.mean:.{digits}g}"
    return f"{iv.mean:.{digits}g} [{iv.low:.{digits}g}, {iv.high:.{digits}g}]"


def _ratio_ci(values: pd.Series) -> str:
    """Geometric mean [95 % interval] over seeds of step-time ratios (intervals of the logs)."""
    iv = stats.interval(np.log(values.to_numpy(dtype=float)))
    if iv.n < 2:
        return f"{math.exp(iv.mean):.3g}"
    return f"{math.exp(iv.mean):.3g} [{math.exp(iv.low):.3g}, {math.exp(iv.high):.3g}]"


def quality_table(runs: pd.DataFrame, ratios: pd.DataFrame) -> pd.DataFrame:
    """Per precision: validation loss and perplexity (mean [95 % interval] over seeds), the loss
    minus 32-true's paired by seed, skipped steps, and the step-time ratio to 32-true."""
    rows = []
    for p in dict.fromkeys(runs.precision):
        part = runs[runs.precision == p]
        if p == BASELINE:
            vs = "(reference)"
        else:
            d = stats.paired_differences(runs, "val_loss", "precision", p, BASELINE)
            vs = ("diverged" if not np.isfinite(d.to_numpy(dtype=float)).all()
                  else stats.interval(d).text(unit=" nats"))
        r = ratios[ratios.precision == p].ratio
        rows.append({"precision": p, "validation loss (nats/char)": _ci(part.val_loss),
                     "perplexity": _ci(part.val_perplexity),
                     "loss minus 32-true (same seed)": vs,
                     "skipped steps (mean)": f"{part.skipped_steps.mean():.3g}",
                     "step time / 32-true": _ratio_ci(r) if len(r) else "(not timed)"})
    return pd.DataFrame(rows).set_index("precision")


def plot_curves(curves: pd.DataFrame, runs: pd.DataFrame, hardware: str) -> Figure:
    """Validation loss against training step per precision: mean over seeds with its 95 %
    interval band, drawn only where a seed's loss is finite; a precision whose loss turned
    non-finite says at which step in its legend entry and has no marker past it (`runs` is
    kept for the call's shape: the curves carry every evaluation drawn)."""
    fig, ax = plotting.figure(width=7.0, height=4.2)
    for p in dict.fromkeys(curves.precision):
        marker, line = STYLES.get(p, ("o", "-"))
        plotting.plot_steps(ax, curves[curves.precision == p], "val_loss", p, band=True,
                            marker=marker, ls=line, ms=4, color=COLORS.get(p, None))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("validation loss (nats per character)")
    ax.legend(fontsize=8)
    return plotting.sign(fig, hardware)


def plot_ratios(ratios: pd.DataFrame, hardware: str) -> Figure:
    """Step time of each precision over 32-true's, measured in one interleaved run per seed:
    dots are seeds, the bar the geometric mean with its 95 % interval (of the logs); 1 is
    32-true's speed."""
    fig, ax = plotting.figure(width=6.0, height=3.6)
    order = [p for p in dict.fromkeys(ratios.precision) if p != BASELINE]
    for i, p in enumerate(order):
        r = ratios[ratios.precision == p].ratio.to_numpy(dtype=float)
        iv = stats.interval(np.log(r))
        iv = stats.Interval(math.exp(iv.mean), math.exp(iv.low), math.exp(iv.high), iv.n)
        color = COLORS.get(p, None)
        ax.scatter(np.full(len(r), i) + np.linspace(-0.1, 0.1, len(r)), r, s=14, color=color,
                   alpha=0.7)
        if iv.n >= 2:
            ax.errorbar([i], [iv.mean], yerr=[[iv.mean - iv.low], [iv.high - iv.mean]],
                        fmt="s", color=color, capsize=4)
    ax.axhline(1.0, color="#555555", lw=1, ls="--")
    ax.set_yscale("log")
    plotting.readable_log(ax)
    ax.set_xticks(range(len(order)), order)
    ax.set_ylabel("step time / 32-true's (ratio, log scale)")
    ax.set_xlabel("precision")
    return plotting.sign(fig, hardware)


def facts(runs: pd.DataFrame, ratios: pd.DataFrame) -> dict[str, str]:
    """The numbers the prose cites, as text: per precision its paired loss difference, its
    perplexity and its step-time ratio (named by `glue_key`); the 32-true perplexity; the
    diverged runs (separated by semicolons, since a recipe label may hold a comma)."""
    out: dict[str, str] = {}
    for p in dict.fromkeys(runs.precision):
        key = glue_key(p)
        out[f"ppl_{key}"] = _ci(runs[runs.precision == p].val_perplexity, 3)
        r = ratios[ratios.precision == p].ratio
        out[f"ratio_{key}"] = _ratio_ci(r) + "x" if len(r) else "(not timed)"
        if p != BASELINE:
            d = stats.paired_differences(runs, "val_loss", "precision", p, BASELINE)
            out[f"dloss_{key}"] = ("diverged" if not np.isfinite(d.to_numpy(dtype=float)).all()
                                   else stats.interval(d).text(unit=" nats"))
    bad = runs[runs.diverged.astype(bool)]
    out["diverged"] = ("; ".join(f"{p} ({n} of {runs.seed.nunique()} seeds)"
                                 for p, n in bad.groupby("precision", sort=False).size().items())
                       or "none")
    out["n_seeds"] = str(runs.seed.nunique())
    worst = runs.val_loss.max()
    out["worst_loss"] = f"{worst:.3g}" if math.isfinite(worst) else "not finite"
    return out
