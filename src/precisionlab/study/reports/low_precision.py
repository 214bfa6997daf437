"""Chapter 15's tables, figures and glued prose, from the tidy tables of
`precisionlab.study.experiments.low_precision`: presentation only, no measurement.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from precisionlab import formats
from precisionlab.study import plotting, stats
from precisionlab.study.designs import JUMP, RECIPE_SPECS, RECIPES
from precisionlab.study.designs import RECIPE_BASELINE as BASELINE
from precisionlab.study.reports.language_models import _ci, _ratio_ci, glue_key
from precisionlab.study.rules import low_precision as rules

# One colour per family and one marker/line per recipe inside it, so 12 recipes stay apart.
FAMILY_COLORS = {"fp32 reference": "#000000", "fp32 master weights (baseline)": "#0072B2",
                 "fp8": "#D55E00", "mx": "#CC79A7", "naive pure 16-bit": "#E69F00",
                 "pure fp16, an eps fp16 holds": "#56B4E9", "pure bf16, no master": "#009E73"}
_STYLES = [("o", "-"), ("s", "--"), ("^", ":"), ("D", "-."), ("v", "-")]
TENSORS = ("input", "weight", "grad_output")
# The constraint on the simulation: an FP8 step at most 3x a bf16-mixed step.
COST_LIMIT = 3.0


def style(recipe: str) -> tuple[str, str, str]:
    """(colour, marker, line style) of `recipe`."""
    spec = RECIPE_SPECS.get(recipe)
    family = spec.family if spec else ""
    same = [r for r, s in RECIPE_SPECS.items() if s.family == family]
    marker, line = _STYLES[same.index(recipe) % len(_STYLES)] if recipe in same else ("o", "-")
    return FAMILY_COLORS.get(family, "#999999"), marker, line


def loss_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per recipe: its family, final validation loss (mean [95 % interval] over seeds), the loss
    minus bf16-mixed's paired by seed, its outcome word (`rules.low_precision.classify`) and the
    share of weights with a gradient that a step left unchanged (updates lost to rounding)."""
    rows = []
    for r in dict.fromkeys(runs.recipe):
        part = runs[runs.recipe == r]
        if r == BASELINE:
            vs, word = "(baseline)", ""
        else:
            word, iv = rules.classify(runs, r)
            d = stats.paired_differences(runs, "val_loss", "recipe", r, BASELINE)
            vs = ("not finite" if not np.isfinite(d.to_numpy(dtype=float)).all()
                  else iv.text(unit=" nats"))
        rows.append({"recipe": r, "weights kept in": part.family.iloc[0],
                     "validation loss (nats/char)": _ci(part.val_loss),
                     "minus bf16-mixed (same seed)": vs, "outcome": word,
                     "weights left unmoved per step (%)": f"{100 * part.stalled.mean():.2g}"})
    return pd.DataFrame(rows).set_index("recipe")


def _paired_curve(curves: pd.DataFrame, recipe: str) -> pd.DataFrame:
    """Per evaluation step: the paired difference recipe - bf16-mixed (mean, low, high)."""
    rows = []
    for step, part in curves.groupby("step", sort=True):
        iv = stats.paired(part, "val_loss", "recipe", recipe, BASELINE)
        rows.append({"step": step, "mean": iv.mean, "low": iv.low, "high": iv.high})
    return pd.DataFrame(rows)


def plot_curves(curves: pd.DataFrame, runs: pd.DataFrame, hardware: str) -> Figure:
    """Left: validation loss against step per recipe (mean over seeds, drawn only where a
    seed's loss is finite). Right: each recipe's loss minus bf16-mixed's, paired by seed, with
    its 95 % interval band and the equivalence margin shaded. A recipe whose loss turned
    non-finite says at which step in its legend entry and has no marker past it; recipes that
    diverged (`rules.outcomes`) are named so in the legend and left out of the right."""
    fig, (ax, bx) = plotting.figure(ncols=2, width=11.0, height=4.6)
    out = rules.outcomes(runs)
    diverged = set(out[out.outcome == "diverged"].recipe)
    for r in dict.fromkeys(curves.recipe):
        color, marker, line = style(r)
        plotting.plot_steps(ax, curves[curves.recipe == r], "val_loss", r,
                            diverged=r in diverged, marker=marker, ls=line, ms=3, color=color)
        if r == BASELINE or r in diverged:
            continue
        p = _paired_curve(curves, r)
        bx.plot(p.step, p["mean"], marker=marker, ls=line, ms=3, color=color, label=r)
        bx.fill_between(p.step, p.low, p.high, color=color, alpha=0.12, lw=0)
    bx.axhspan(-rules.LOSS_MARGIN, rules.LOSS_MARGIN, color="#999999", alpha=0.15, lw=0,
               label=f"margin +-{rules.LOSS_MARGIN:g}")
    bx.axhline(0.0, color="#555555", lw=1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("validation loss (nats per character)")
    bx.set_xlabel("optimizer step")
    bx.set_ylabel("loss minus bf16-mixed, same seed (nats per character)")
    ax.legend(fontsize=7, ncols=2)
    bx.legend(fontsize=7, ncols=2)
    return plotting.sign(fig, hardware)


def fp8_table(fp8: pd.DataFrame) -> pd.DataFrame:
    """Per FP8/MX recipe and tensor kind, over steps and seeds: mean underflow and saturation
    (percent of nonzero entries, mean over converted Linears) and the worst single module."""
    g = fp8.groupby(["recipe", "tensor"], sort=False)
    t = g.agg(underflow=("underflow", "mean"), underflow_max=("underflow_max", "max"),
              saturated=("saturated", "mean"), saturated_max=("saturated_max", "max"))
    t = (100 * t).rename(columns={"underflow": "underflow, mean (%)",
                                  "underflow_max": "underflow, worst module-step (%)",
                                  "saturated": "saturated, mean (%)",
                                  "saturated_max": "saturated, worst module-step (%)"})
    return t.map(lambda v: f"{v:.3g}")


def plot_fp8_stats(fp8: pd.DataFrame, hardware: str) -> Figure:
    """Underflow (top row) and saturation (bottom row) per tensor kind (columns) against the
    training step, one line per FP8/MX recipe: mean over converted Linears and seeds."""
    fig, axes = plotting.figure(ncols=3, nrows=2, width=11.0, height=5.6, sharex=True)
    for j, tensor in enumerate(TENSORS):
        part = fp8[fp8.tensor == tensor]
        for r in dict.fromkeys(fp8.recipe):
            color, marker, line = style(r)
            s = part[part.recipe == r].groupby("step")[["underflow", "saturated"]].mean()
            for i, col in enumerate(("underflow", "saturated")):
                axes[i][j].plot(s.index, 100 * s[col].to_numpy(), ls=line, color=color,
                                label=r if (i, j) == (0, 0) else None)
        axes[0][j].set_title(tensor, fontsize=9)
        axes[1][j].set_xlabel("optimizer step")
        for i in range(2):
            axes[i][j].set_yscale("symlog", linthresh=0.01)
            plotting.readable_log(axes[i][j])
    axes[0][0].set_ylabel("flushed to zero (% of nonzero)")
    axes[1][0].set_ylabel("saturated (% of nonzero)")
    axes[0][0].legend(fontsize=7)
    return plotting.sign(fig, hardware)


def plot_range_change(trace: pd.DataFrame, hardware: str) -> Figure:
    """The scripted range change: per step, the input's saturated (left) and flushed-to-zero
    (right) fractions under each scaling; the steps at the larger range are shaded."""
    fig, axes = plotting.figure(ncols=2, width=11.0, height=4.0)
    up = trace[trace.input_scale > 1].step
    for ax in axes:
        if len(up):
            ax.axvspan(up.min() - 0.5, up.max() + 0.5, color="#999999", alpha=0.15, lw=0,
                       label=f"input x{JUMP:g}")
    for k, (case, part) in enumerate(trace.groupby("case", sort=False)):
        color, (marker, line) = plotting.PALETTE[k], _STYLES[k]
        for ax, col in zip(axes, ("saturated", "underflow"), strict=True):
            ax.plot(part.step, 100 * part[col], marker=marker, ls=line, ms=3, color=color,
                    label=case)
    axes[0].set_ylabel("input entries saturated (% of nonzero)")
    axes[1].set_ylabel("input entries flushed to zero (% of nonzero)")
    for ax in axes:
        ax.set_xlabel("step (one forward and backward)")
    axes[0].legend(fontsize=8)
    return plotting.sign(fig, hardware)


def cost_table(ratios: pd.DataFrame) -> pd.DataFrame:
    """Per recipe: median seconds per optimizer step (mean over seeds) and its ratio to
    bf16-mixed's (geometric mean [95 % interval] over seeds, each measured in one run)."""
    rows = []
    for r in dict.fromkeys(ratios.recipe):
        part = ratios[ratios.recipe == r]
        rows.append({"recipe": r, "ms per step": f"{1000 * part.s_per_step.mean():.3g}",
                     "step time / bf16-mixed": _ratio_ci(part.ratio)})
    return pd.DataFrame(rows).set_index("recipe")


def range_facts(trace: pd.DataFrame) -> dict[str, str]:
    """Per scaling case k (in order): its name, peak saturated and flushed-to-zero percentages,
    and its lag: the steps after the range drops back whose scale is less than half the scale
    current scaling (this step's own amax) gives at that step. Needs the "current" case."""
    if "current" not in set(trace.case):
        raise ValueError("trace: needs the 'current' case (the reference scale)")
    ref = trace[trace.case == "current"].set_index("step").scale
    out = {}
    for k, (case, part) in enumerate(trace.groupby("case", sort=False)):
        part = part.set_index("step").sort_index()
        up = part.index[part.input_scale > 1]
        after = part.index > up.max() if len(up) else part.index < 0
        lag = int((part.scale[after] < ref[part.index[after]] / 2).sum())
        out[f"range_case_{k}"] = case
        out[f"range_sat_{k}"] = f"{100 * part.saturated.max():.3g} %"
        out[f"range_under_{k}"] = f"{100 * part.underflow.max():.3g} %"
        out[f"range_lag_{k}"] = str(lag)
    return out


def facts(runs: pd.DataFrame) -> dict[str, str]:
    """The texts the prose cites about losses: per recipe its paired loss difference, outcome
    and share of weights left unmoved per step (named by `glue_key`); which FP8/MX recipes
    match bf16-mixed and which do not; which diverged (separated by semicolons, since a recipe
    label may hold a comma)."""
    out: dict[str, str] = {}
    o = rules.outcomes(runs).set_index("recipe")
    for r in o.index:
        key = glue_key(r)
        d = stats.paired_differences(runs, "val_loss", "recipe", r, BASELINE)
        out[f"dloss_{key}"] = ("not finite" if not np.isfinite(d.to_numpy(dtype=float)).all()
                               else stats.interval(d).text(unit=" nats"))
        out[f"outcome_{key}"] = o.loc[r, "outcome"]
    low = [r for r in RECIPES if RECIPE_SPECS[r].float8 and r in o.index]
    out["fp8_matching"] = ", ".join(rules.matching(runs, low)) or "none"
    out["fp8_not_matching"] = ", ".join(
        f"{r} ({o.loc[r, 'outcome']})" for r in low if o.loc[r, "outcome"] != "matches") or "none"
    out["diverged"] = "; ".join(o[o.outcome == "diverged"].index) or "none"
    out["n_seeds"] = str(runs.seed.nunique())
    if "stalled" in runs.columns:
        for r, v in runs.groupby("recipe", sort=False).stalled.mean().items():
            out[f"stalled_{glue_key(r)}"] = f"{100 * v:.2g} %"
    return out


def cost_facts(ratios: pd.DataFrame) -> dict[str, str]:
    """The texts the prose cites about cost: each recipe's step-time ratio to bf16-mixed (named
    by `glue_key`), the most expensive simulated FP8/MX recipe and whether it stays within
    COST_LIMIT."""
    out = {f"ratio_{glue_key(r)}": _ratio_ci(ratios[ratios.recipe == r].ratio)
           for r in dict.fromkeys(ratios.recipe)}
    sim = ratios[ratios.recipe.map(lambda r: bool(r in RECIPE_SPECS
                                                   and RECIPE_SPECS[r].float8))]
    if len(sim):
        worst = sim.groupby("recipe").ratio.apply(
            lambda x: float(np.exp(np.log(x.to_numpy(dtype=float)).mean())))
        out["cost_worst"] = f"{worst.max():.3g}x ({worst.idxmax()})"
        out["cost_within"] = "within" if worst.max() <= COST_LIMIT else "above"
    else:
        out["cost_worst"], out["cost_within"] = "(no FP8/MX recipe timed)", "not measured against"
    return out


def setting_texts(steps: int, batch: int, n_layers: int, d_model: int, context: int,
                  rounding_n: int, history: int) -> dict[str, str]:
    """The texts the prose cites about the settings: training length and model shape, the
    rule's margins, delayed scaling's history, the range jump, the cost limit."""
    return {"steps": f"{steps:,}", "batch": str(batch),
            "shape": f"{n_layers} block(s) of width {d_model}, {context}-character context",
            "loss_margin": f"{rules.LOSS_MARGIN:g} nats",
            "far_above": f"{rules.FAR_ABOVE:.3g} nats", "history": str(history),
            "jump": f"{JUMP:g}", "cost_limit": f"{COST_LIMIT:g}x",
            "rounding_n": f"{rounding_n:,}"}


def _named(value: object) -> bool:
    """Whether a config entry names something (a non-empty string, not "", None or NaN)."""
    return isinstance(value, str) and value != ""


def recipe_lines(configs: pd.DataFrame) -> list[str]:
    """One line per recipe of `experiments.low_precision.recipe_configs`: its Trainer, dtypes,
    Linear swap, weight-update rule and Adam eps as the parameter dtype holds it."""
    lines = []
    for c in configs.to_dict("records"):
        swap = f"Float8Linear {c['float8']}" if _named(c["float8"]) else "nn.Linear"
        rule = f"{c['pure16']} rounding to bf16" if _named(c["pure16"]) else "the policy's"
        lines.append(f"{c['recipe']:>17}: Trainer {c['precision']:>10}, parameters "
                     f"{c['param']:>8}, matmuls {c['compute']:>8}, {swap}, update: {rule}, "
                     f"Adam eps {c['eps']:g} -> {c['held']:.3g}")
    return lines


def format_lines(names: Sequence[str] = ("fp8_e4m3fn", "fp8_e5m2", "fp4_e2m1")) -> list[str]:
    """One line per low-precision format: its bits, largest finite and smallest subnormal."""
    lines = []
    for name in names:
        f = formats.get_format(name)
        lines.append(f"{name:>10}: {f.bits} bits, largest {f.max_finite:g}, smallest subnormal "
                     f"{f.min_subnormal:g}")
    return lines


def kept_line(converted: Sequence[str], kept: Sequence[str]) -> str:
    """Which Linears the FP8/MX recipes convert and which they keep in high precision."""
    return (f"FP8/MX recipes convert {len(converted)} Linears ({', '.join(converted)}) "
            f"and keep {', '.join(kept)} in high precision")
