"""Chapter 11's figures and display tables (GPT and BERT, run), from `experiments.transformers`."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from precisionlab.study import plotting, stats

PRECISION_ORDER = ("bf16", "fp16", "fp16-scaled")


def perturbation_figure(table: pd.DataFrame, hardware: str) -> Figure:
    """Heat maps, one per model: the mean over seeds of max |change| of the hidden state at
    each position (x) when token j (y) is changed; log colour scale, exact zeros in white."""
    models = list(table["model"].unique())
    fig, axes = plotting.figure(ncols=len(models), width=4.6 * len(models), height=3.6,
                                squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        grid = (table[table["model"] == model].groupby(["j", "position"])["delta"].mean()
                .unstack("position"))
        values = np.log10(grid.to_numpy().clip(min=1e-12))
        values[grid.to_numpy() == 0] = np.nan
        image = ax.imshow(values, aspect="auto", origin="lower", cmap="viridis", vmin=-8,
                          vmax=1, extent=(-0.5, grid.shape[1] - 0.5, -0.5, grid.shape[0] - 0.5))
        ax.set_yticks(range(grid.shape[0]), [str(j) for j in grid.index])  # one row per j
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(False)
        ax.set_xlabel("position p (tokens)")
        ax.set_ylabel("changed token j (position)")
        ax.set_title(f"{model}: white = exactly 0")
        fig.colorbar(image, ax=ax, label="log10 max |Δh| (hidden units)")
    return plotting.sign(fig, hardware)


def gradient_figure(table: pd.DataFrame, hardware: str) -> Figure:
    """Relative L2 error of the parameter gradient against fp32 (left) and the share of nonzero
    fp32 gradient entries flushed to zero (right), per model and precision, mean and 95 %
    interval over seeds."""
    fig, (left, right) = plotting.figure(ncols=2, width=10.0, height=3.8)
    models = list(table["model"].unique())
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        part = table[(table["model"] == model) & table["precision"].isin(PRECISION_ORDER)]
        for ax, value, scale in ((left, "grad_rel_error", 1.0), (right, "flushed", 100.0)):
            s = stats.summarize(part, value, "precision").set_index("precision")
            s = s.reindex([p for p in PRECISION_ORDER if p in s.index])
            x = np.arange(len(s)) + (i - (len(models) - 1) / 2) * width
            err = np.vstack([(s["mean"] - s["low"]).fillna(0), (s["high"] - s["mean"]).fillna(0)])
            ax.bar(x, s["mean"] * scale, width, yerr=err * scale, label=model, capsize=3)
            ax.set_xticks(np.arange(len(s)), s.index)
    left.set_ylabel("gradient error vs fp32 (relative L2)")
    left.set_xlabel("autocast precision")
    right.set_ylabel("nonzero fp32 gradient entries flushed (%)")
    right.set_xlabel("autocast precision")
    left.legend()
    return plotting.sign(fig, hardware)


def attention_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per dtype and logit scale: largest |logit|, worst difference from non-causal SDPA (in
    units of the dtype's eps), smallest difference from causal SDPA, and finite shares."""
    t = table.assign(noncausal_eps=table["diff_noncausal"] / table["eps"],
                     causal_eps=table["diff_causal"] / table["eps"])
    return t.groupby(["dtype", "logit_scale"], sort=False).agg(
        cases=("seed", "size"), max_logit=("max_logit", "max"),
        vs_sdpa_eps_max=("noncausal_eps", "max"), vs_causal_eps_min=("causal_eps", "min"),
        formula_finite=("formula_finite", "mean"), sdpa_finite=("sdpa_finite", "mean"))


def autocast_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per model and precision: mean and 95 % interval of the loss difference, gradient cosine,
    gradient error and flushed share over seeds, as text."""
    rows = []
    for (model, precision), part in table.groupby(["model", "precision"], sort=False):
        row = {"model": model, "precision": precision}
        for value in ("loss_rel_diff", "grad_cosine", "grad_rel_error", "flushed"):
            row[value] = stats.interval(part[value]).text()
        rows.append(row)
    return pd.DataFrame(rows)
