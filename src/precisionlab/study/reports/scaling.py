"""Chapter 03's tables, figures and glued prose, from the tidy tables of
`precisionlab.study.experiments.scaling`: presentation only, no measurement.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from precisionlab.study import stats
from precisionlab.study.designs import DYNAMIC, NONE, configs, label
from precisionlab.study.designs import SCALING_TASK_NAMES as TASK_NAMES


def loss_table(runs: pd.DataFrame, log2_scales: Sequence[int]) -> pd.DataFrame:
    """Per task and configuration: mean and 95 % interval over seeds of the final losses and
    test accuracy, the paired difference from 32-true, skipped steps."""
    def ci(s: pd.Series) -> str:
        bad = int((~np.isfinite(s.to_numpy(dtype=float))).sum())
        if bad:
            return f"non-finite in {bad} of {len(s)} seeds"
        iv = stats.interval(s.to_numpy())
        return f"{iv.mean:.4g}" if iv.n < 2 else f"{iv.mean:.4g} [{iv.low:.4g}, {iv.high:.4g}]"

    ref = runs[runs.precision == "32-true"].set_index(["task", "seed"]).train_loss
    pairs = list(zip(runs.task, runs.seed, strict=True))
    runs = runs.assign(vs=runs.train_loss - ref.loc[pairs].to_numpy())
    order = [label(p, s) for p, s in configs(log2_scales)]
    table = (runs.groupby(["task", "config"], sort=False)
             .agg(train_loss=("train_loss", ci), vs=("vs", ci), test_loss=("test_loss", ci),
                  test_accuracy=("test_accuracy", ci),
                  skipped=("skipped_steps", lambda s: f"{s.mean():.3g}")).reset_index())
    table["config"] = pd.Categorical(table.config, order, ordered=True)
    table = table.sort_values(["task", "config"]).set_index(["task", "config"])
    table.columns = ["train loss", "train loss minus 32-true (same seed)", "test loss",
                     "test accuracy", "skipped steps (mean)"]
    return table


ONE_LINE = {"bf16-mixed": "autocast to bf16 (one line)",
            NONE: "autocast to fp16 (one line)",
            DYNAMIC: "autocast to fp16 + dynamic loss scaler",
            "16-true": "model and inputs cast to fp16 (one line)"}


def one_line_table(runs: pd.DataFrame) -> pd.DataFrame:
    """MP-24's table: per task, each way to turn on 16-bit training against 32-true, paired by
    seed: train loss and test accuracy differences (mean [95 % interval]), non-finite runs."""
    def paired(part: pd.DataFrame, value: str, scale: float, unit: str) -> str:
        diffs = stats.paired_differences(part, value, "config", config, "32-true")
        if not np.isfinite(diffs.to_numpy(dtype=float)).all():
            return "non-finite"
        return stats.interval(diffs).text(scale, unit)

    rows = []
    for task in dict.fromkeys(runs.task):
        t = runs[runs.task == task]
        for config, change in ONE_LINE.items():
            if config not in set(t.config):
                continue
            c = t[t.config == config]
            bad = ~np.isfinite(c.train_loss.to_numpy(dtype=float))
            first = c.first_nonfinite.min() if "first_nonfinite" in c else math.nan
            rows.append({"task": TASK_NAMES[task], "configuration": config, "change": change,
                         "train loss minus 32-true (nats)": paired(t, "train_loss", 1, ""),
                         "test accuracy minus 32-true (pp)": paired(t, "test_accuracy", 100, ""),
                         "seeds with non-finite loss": f"{int(bad.sum())} of {len(c)}",
                         "first non-finite step": "-" if pd.isna(first) else f"{first:g}"})
    return pd.DataFrame(rows).set_index(["task", "configuration"])


def one_line_facts(runs: pd.DataFrame, margin: float) -> dict[str, str]:
    """MP-24's glued numbers, keyed `<task>_<name>`: each one-line change's final train loss
    minus 32-true (paired interval, nats) and whether it lies within `margin`; 16-true's
    non-finite seeds and first non-finite step. A task not run (or run on one seed, which gives
    no interval) says so."""
    keys = {"bf16-mixed": "bf16", NONE: "none", DYNAMIC: "dyn"}
    out: dict[str, str] = {}
    for task in TASK_NAMES:
        t = runs[runs.task == task]
        if t.empty or t.seed.nunique() < 2:
            why = "(not run)" if t.empty else "(one seed: no interval)"
            found = {f"{k}_{w}": why for k in keys.values() for w in ("vs32", "within")}
            found |= {"cast_bad": why, "cast_first": why}
        else:
            found = {}
            for config, key in keys.items():
                c = stats.compare(t, "train_loss", "config", config, "32-true", margin)
                found[f"{key}_vs32"] = c.interval.text(1, " nats")
                found[f"{key}_within"] = {
                    "equivalent": "inside the margin", "higher": "above the margin, beyond noise",
                    "lower": "below the margin, beyond noise"}.get(
                        c.outcome, "neither inside nor outside the margin: its interval is wider")
            cast = t[t.config == "16-true"]
            bad = ~np.isfinite(cast.train_loss.to_numpy(dtype=float))
            found["cast_bad"] = f"{int(bad.sum())} of {len(cast)}"
            first = cast.first_nonfinite.min() if len(cast) else math.nan
            found["cast_first"] = "no step" if pd.isna(first) else f"{first:g}"
        out.update({f"{task}_{k}": v for k, v in found.items()})
    words = [out[f"{t}_none_within"] for t in dict.fromkeys(runs.task)]
    if words and all(w == "inside the margin" for w in words):
        out["none_story"] = ("Inside the margin on every task, then: here the data cut against "
                             "the expected story, and the gradients fp16 lost did not show in "
                             "the final loss of these small models.")
    elif "above the margin, beyond noise" in words:
        out["none_story"] = ("On at least one task the run without a scaler ends worse than fp32 "
                             "beyond the margin: the lost gradients cost training.")
    else:
        out["none_story"] = "The intervals do not settle whether the lost gradients cost training."
    return out


def adam_fp16_facts(eps: float = 1e-8, beta2: float = 0.999) -> dict[str, str]:
    """Why Adam breaks on fp16 weights, from fp16 itself: its eps in fp16, and the smallest
    gradient whose (1 - beta2) g^2 still rounds to nonzero in fp16 (second moment > 0)."""
    import torch

    eps16 = torch.tensor(eps, dtype=torch.float16).item()
    tiny = 2.0**-25  # half fp16's smallest subnormal: anything at or below rounds to zero
    g_min = math.sqrt(tiny / (1 - beta2))
    return {"adam_eps": f"{eps:g}", "adam_eps16": f"{eps16:g}", "adam_gmin": f"{g_min:.1e}"}


def best_scales(under: pd.DataFrame) -> dict[str, float]:
    """Per task, the largest scale (log2) at which no seed overflowed at any checkpoint."""
    over = under.groupby(["task", "log2_scale"]).overflow.any()
    return {t: max([k for k, o in over.loc[t].items() if not o], default=0.0)
            for t in dict.fromkeys(under.task)}


def underflow_table(under: pd.DataFrame, n_seeds: int) -> pd.DataFrame:
    """Every scale at each task's last checkpoint: shares flushed, overflows, relative error."""
    last = under[under.step == under.groupby("task").step.transform("max")]
    view = (last.groupby(["task", "log2_scale"])
            .agg(act=("act_flushed", "mean"), act_mass=("act_flushed_mass", "mean"),
                 w=("weight_flushed", "mean"), w_mass=("weight_flushed_mass", "mean"),
                 over=("overflow", "sum"), err=("grad_rel_error", "mean")))
    table = pd.DataFrame(index=view.index)
    for col, name in [("act", "activation entries flushed"),
                      ("act_mass", "activation L1 norm flushed"),
                      ("w", "weight entries flushed"), ("w_mass", "weight L1 norm flushed")]:
        table[name] = (100 * view[col]).map("{:.2g} %".format)
    table["seeds overflowed"] = view.over.astype(int).astype(str) + f" of {n_seeds}"
    table["weight-gradient relative error (finite seeds)"] = view.err.map(
        lambda e: "-" if math.isnan(e) else f"{e:.2g}")
    table.index = table.index.set_levels([f"2^{k:g}" for k in table.index.levels[1]], level=1)
    table.index.names = ["task", "loss scale"]
    return table


def histogram_facts(path) -> dict[str, str]:
    """Chapter 01's histogram half of underflow, from its saved `underflow.csv` (fp16 rows):
    the share flushed without scaling, the scale with least flushed + overflowed, its share."""
    from pathlib import Path

    if not Path(path).is_file():  # chapter 01 not run yet on this checkout
        return dict.fromkeys(["ch01_flush", "ch01_best_k", "ch01_best_flush"], "(see chapter 1)")
    u = pd.read_csv(path)
    u = u[u.format == "fp16"].groupby("log2_scale")[["flushed", "overflow"]].mean()
    k = int((u.flushed + u.overflow).idxmin())
    return {"ch01_flush": f"{100 * u.loc[0, 'flushed']:.0f} %", "ch01_best_k": f"2^{k}",
            "ch01_best_flush": f"{100 * u.loc[k, 'flushed']:.2f} %"}


def _ci(s: pd.Series, digits: int = 3) -> str:
    iv = stats.interval(s.to_numpy())
    if iv.n < 2:
        return f"{iv.mean:.{digits}g} (one seed)"
    return f"{iv.mean:.{digits}g} [{iv.low:.{digits}g}, {iv.high:.{digits}g}]"


def _loss_facts(task: str, runs: pd.DataFrame, log2_scales: Sequence[int]) -> dict[str, str]:
    r = runs[runs.task == task]
    ref = r[r.precision == "32-true"].set_index("seed").train_loss
    r = r.assign(vs=r.train_loss - ref.loc[r.seed].to_numpy())
    pick = lambda lab: r[r.config == lab]  # noqa: E731
    clean = r[r.skipped_steps == 0]
    static = r[r.scaler == "static"]
    over = static[static.skipped_steps > 0].log2_scale
    top = r[r.log2_scale == max(log2_scales)].skipped_share.mean()
    return {"none": _ci(pick(NONE).train_loss), "dyn": _ci(pick(DYNAMIC).train_loss),
            "fp32": _ci(pick("32-true").train_loss),
            "maxdiff": f"{clean[clean.precision == '16-mixed'].vs.abs().max():.2g} nats",
            "bf16diff": f"{clean[clean.precision == 'bf16-mixed'].vs.abs().max():.2g} nats",
            "none_diff": f"{pick(NONE).vs.mean():+.2g} nats",
            "dyn_diff": f"{pick(DYNAMIC).vs.mean():+.2g} nats",
            "first_over": "none of the scales tried" if over.empty else f"2^{over.min():g}",
            "top_skip": f"{100 * top:.0f} %"}


def _underflow_facts(task: str, under: pd.DataFrame, best: float) -> dict[str, str]:
    u = under[under.task == task]
    cols = ["act_flushed", "act_flushed_mass", "weight_flushed", "weight_flushed_mass",
            "grad_rel_error"]
    per = u[u.log2_scale == 0].groupby("step")[cols].mean()
    at_best = u[u.log2_scale == best].groupby("step")[cols].mean()
    step, err_step = per.act_flushed.idxmax(), per.grad_rel_error.idxmax()
    over = [k for k, o in u.groupby("log2_scale").overflow.any().items() if o]
    e_none, e_best = per.grad_rel_error[err_step], at_best.grad_rel_error[err_step]
    kind = ("falls with the scale, so it is underflow"
            if at_best.act_flushed_mass[step] < per.act_flushed_mass[step] / 2
            else "hardly falls with the scale, so most of it is forward rounding, not underflow")
    return {"act_none": f"{100 * per.act_flushed.max():.2g} %", "act_step": str(step),
            "act_mass": f"{100 * per.act_flushed_mass.max():.2g} %",
            "w_none": f"{100 * per.weight_flushed.max():.2g} %",
            "w_mass": f"{100 * per.weight_flushed_mass.max():.2g} %", "best": f"2^{best:g}",
            "act_best": f"{100 * at_best.act_flushed[step]:.2g} %", "mass_kind": kind,
            "over_b": f"2^{min(over):g}" if over else "no scale tried",
            "err_step": str(err_step), "err_none": f"{e_none:.2g}", "err_best": f"{e_best:.2g}",
            "err_removed": f"{100 * max(0.0, 1 - e_best / e_none):.2g} %"}


def _dynamic_facts(task: str, runs: pd.DataFrame, traces: pd.DataFrame, steps: int,
                   growth_interval: int) -> dict[str, str]:
    t, d = traces[traces.task == task], runs[(runs.task == task) & (runs.config == DYNAMIC)]
    second = np.log2(t[t.step > steps // 2].loss_scale)
    skips = sorted(d.skipped_steps.unique())
    if d.skipped_steps.max() == 0:
        how = ("never overflowed: the scale only grew, one doubling per "
               f"{growth_interval} steps, and a longer run would reach the overflow point and "
               "then oscillate")
    else:
        how = ("grows until a doubling overflows, skips that one step and halves, then grows "
               f"again after {growth_interval} clean steps: a sawtooth just under the largest "
               "scale that fits")
    return {"dyn_skips": f"{skips[0]} to {skips[-1]}" if len(skips) > 1 else str(skips[0]),
            "dyn_steps": f"{steps:,}", "dyn_share": f"{100 * d.skipped_share.mean():.2g} %",
            "dyn_range": (f"at 2^{second.min():g}" if second.min() == second.max()
                          else f"between 2^{second.min():g} and 2^{second.max():g}"),
            "dyn_final": ", ".join(f"2^{math.log2(s):g}" for s in d.final_scale), "dyn_how": how}


def facts(runs: pd.DataFrame, under: pd.DataFrame, traces: pd.DataFrame,
          log2_scales: Sequence[int], steps: dict[str, int], growth_interval: int
          ) -> dict[str, str]:
    """The numbers the chapter's prose glues, as text, keyed `<task>_<name>` (every key of a
    task that was not run says '(not run)')."""
    out: dict[str, str] = {"top_scale": f"2^{max(log2_scales)}"}
    best = best_scales(under)
    ran = list(dict.fromkeys(runs.task))
    for task in TASK_NAMES:
        if task in ran:
            found = {**_loss_facts(task, runs, log2_scales),
                     **_underflow_facts(task, under, best[task]),
                     **_dynamic_facts(task, runs, traces, steps[task], growth_interval)}
        else:
            found = dict.fromkeys(_KEYS, "(not run)")
        out.update({f"{task}_{k}": v for k, v in found.items()})
    hurt = []
    for task in ran:
        r = runs[(runs.task == task) & runs.config.isin([NONE, DYNAMIC])]
        if r.seed.nunique() > 1 and stats.paired(r, "train_loss", "config", NONE,
                                                  DYNAMIC).low > 0:
            hurt.append(TASK_NAMES[task])
    out["small_scale_effect"] = (
        "Too small a scale, even none at all, costs no final train loss beyond noise here"
        if not hurt else
        f"Too small a scale costs final train loss on the {' and the '.join(hurt)}")
    return out


_KEYS = ["none", "dyn", "fp32", "maxdiff", "bf16diff", "none_diff", "dyn_diff", "first_over",
         "top_skip", "act_none", "act_step", "act_mass", "w_none", "w_mass", "best", "act_best",
         "mass_kind", "over_b", "err_step", "err_none", "err_best", "err_removed", "dyn_skips",
         "dyn_steps", "dyn_share", "dyn_range", "dyn_final", "dyn_how"]


def _x_of(lab: str, x_dyn: float) -> float:
    """Where a configuration sits on the x axis: log2 of its scale; 'dynamic' right of the sweep."""
    if lab in (NONE, DYNAMIC):
        return 0.0 if lab == NONE else x_dyn
    return float(lab.split("2^")[1])


def _scale_ticks(ax, log2_scales: Sequence[int], x_dyn: float | None = None) -> None:
    ticks = [0, *log2_scales] + ([x_dyn] if x_dyn else [])
    names = ["none\n($2^0$)" if x_dyn else "$2^0$", *[f"$2^{{{k}}}$" for k in log2_scales]]
    ax.set_xticks(ticks, names + (["dyn."] if x_dyn else []))


def plot_final_loss(runs: pd.DataFrame, log2_scales: Sequence[int], hardware: str = ""):
    """Final train and test loss against the 16-mixed loss scale, per task: dots are seeds,
    markers the mean with its 95 % interval; 32-true and bf16-mixed as reference bands."""
    import matplotlib.pyplot as plt

    from precisionlab.study import plotting

    ran = list(dict.fromkeys(runs.task))
    x_dyn = max(log2_scales) + 5
    refs = {"32-true": plotting.FORMAT_COLORS["fp32"], "bf16-mixed": plotting.FORMAT_COLORS["bf16"]}
    over_color, fp16 = plotting.PALETTE[3], plotting.FORMAT_COLORS["fp16"]
    metrics = [("train_loss", "final train loss\n(cross-entropy, nats)"),
               ("test_loss", "final test loss\n(cross-entropy, nats)")]
    fig, axes = plotting.figure(ncols=2, nrows=len(ran), width=9.5, height=3.2 * len(ran) + 0.9,
                                squeeze=False)
    for r, task in enumerate(ran):
        t = runs[runs.task == task]
        for c, (metric, ylabel) in enumerate(metrics):
            ax = axes[r][c]
            for name, color in refs.items():
                iv = stats.interval(t[t.precision == name][metric].to_numpy())
                lo, hi = (iv.mean, iv.mean) if iv.n < 2 else (iv.low, iv.high)
                ax.axhspan(lo, hi, color=color, alpha=0.18, lw=0)
                ax.axhline(iv.mean, color=color, lw=1.2, label=f"{name}: mean, 95 % interval band")
            for lab, g in t[t.precision == "16-mixed"].groupby("config", sort=False):
                x, iv = _x_of(lab, x_dyn), stats.interval(g[metric].to_numpy())
                over = g.skipped_steps.mean() > 0
                color = over_color if over else fp16
                ax.scatter(np.full(len(g), x), g[metric], s=12, color=color, alpha=0.6, zorder=3)
                err = [[0.0], [0.0]] if iv.n < 2 else [[iv.mean - iv.low], [iv.high - iv.mean]]
                ax.errorbar(x, iv.mean, yerr=err, fmt="X" if over else "o", ms=6, color=color,
                            capsize=3, zorder=4)
            ax.set_yscale("log")
            _scale_ticks(ax, log2_scales, x_dyn)
            ax.set_xlabel("16-mixed loss scale (dimensionless)")
            ax.set_ylabel(ylabel)
            ax.set_title(TASK_NAMES[task], fontsize=10)
    handles, labels = axes[0][0].get_legend_handles_labels()
    handles += [plt.Line2D([], [], marker="o", ls="", color=fp16),
                plt.Line2D([], [], marker="X", ls="", color=over_color)]
    labels += ["16-mixed: mean, 95 % interval bar, dots = seeds",
               "16-mixed with skipped (overflowed) steps"]
    plotting.sign(fig, hardware)
    fig.subplots_adjust(top=1 - 0.75 / fig.get_figheight())
    fig.legend(handles, labels, loc="upper center", ncol=2, fontsize=8)
    return fig


def plot_underflow(under: pd.DataFrame, log2_scales: Sequence[int], hardware: str = ""):
    """Shares flushed and the relative error against the loss scale, per checkpoint (colour),
    mean over seeds with a min-max band; crosses on the top edge where a seed overflowed."""
    import matplotlib.pyplot as plt

    from precisionlab.study import plotting

    ran = list(dict.fromkeys(under.task))
    quantities = [("act_flushed", "activation-gradient\nentries flushed (%)", 100),
                  ("weight_flushed", "weight-gradient\nentries flushed (%)", 100),
                  ("act_flushed_mass", "activation-gradient\nL1 norm flushed (%)", 100),
                  ("grad_rel_error", "weight-gradient relative\nerror vs fp32 (1)", 1)]
    fig, axes = plotting.figure(ncols=len(ran), nrows=len(quantities), width=4.6 * len(ran) + 0.6,
                                height=2.25 * len(quantities) + 0.8, squeeze=False, sharex=True)
    cmap = plt.get_cmap("viridis")
    short = {"mlp": "MLP", "transformer": "transformer"}
    ck_labels: dict[int, list[str]] = {}
    for c, task in enumerate(ran):
        t = under[under.task == task]
        steps = sorted(t.step.unique())
        for r, (q, ylabel, factor) in enumerate(quantities):
            ax = axes[r][c]
            for i, step in enumerate(steps):
                g = t[t.step == step]
                agg = g.groupby("log2_scale").agg(mean=(q, "mean"), lo=(q, "min"), hi=(q, "max"),
                                                  over=("overflow", "any"))
                ok, bad = agg[~agg.over], agg[agg.over]
                color = cmap(0.9 * i / max(1, len(steps) - 1))
                ax.plot(ok.index, factor * ok["mean"], marker="o", ms=3, color=color)
                ax.fill_between(ok.index, factor * ok.lo, factor * ok.hi, color=color, alpha=0.15,
                                lw=0)
                if r == 0:
                    ck_labels.setdefault(i, []).append(
                        f"{short[task]} step {step} (fp32 loss {g.loss.mean():.2g})")
                if len(bad):
                    ax.scatter(bad.index, np.full(len(bad), 0.97), marker="x", color=color, s=30,
                               zorder=4, transform=ax.get_xaxis_transform(), clip_on=False)
            if q == "grad_rel_error":
                ax.set_yscale("log")
            else:
                ax.set_yscale("symlog", linthresh=1e-3)
                ax.set_ylim(-1e-4, 300)
            ax.set_ylabel(ylabel, fontsize=9)
            if r == 0:
                ax.set_title(TASK_NAMES[task], fontsize=10)
        _scale_ticks(axes[-1][c], log2_scales)
        axes[-1][c].set_xlabel("loss scale (dimensionless)")
    n = max(1, len(ck_labels) - 1)
    handles = [plt.Line2D([], [], marker="o", ms=3, color=cmap(0.9 * i / n))
               for i in sorted(ck_labels)]
    handles.append(plt.Line2D([], [], marker="x", ls="", color="#555555"))
    names = ["; ".join(ck_labels[i]) for i in sorted(ck_labels)]
    names.append("overflow (inf/NaN) in at least one seed")
    plotting.sign(fig, hardware)
    fig.subplots_adjust(top=1 - (0.35 + 0.2 * len(handles)) / fig.get_figheight())
    fig.legend(handles, names, loc="upper center", ncol=1, fontsize=8)
    return fig


def plot_dynamic(traces: pd.DataFrame, hardware: str = ""):
    """The dynamic scaler's scale per step and seed, skipped steps as crosses."""
    from precisionlab.study import plotting

    ran = list(dict.fromkeys(traces.task))
    fig, axes = plotting.figure(ncols=len(ran), width=4.8 * len(ran) + 0.5, height=3.6,
                                squeeze=False)
    for c, task in enumerate(ran):
        ax, t = axes[0][c], traces[traces.task == task]
        for i, (seed, g) in enumerate(t.groupby("seed")):
            color = plotting.PALETTE[i % len(plotting.PALETTE)]
            y = np.log2(g.loss_scale) + 0.06 * i  # offset so seeds do not hide each other
            ax.step(g.step, y, where="post", color=color, lw=1.3, label=f"seed {seed}")
            sk = g.skipped.to_numpy()
            ax.scatter(g.step[sk], y[sk], marker="x", color=color, s=35, zorder=4,
                       label=f"seed {seed}: {int(sk.sum())} skipped")
        lo, hi = np.log2(t.loss_scale.min()), np.log2(t.loss_scale.max())
        ax.set_yticks(np.arange(lo, hi + 1), [f"$2^{{{k:g}}}$" for k in np.arange(lo, hi + 1)])
        ax.set_ylim(lo - 0.5, hi + 0.7)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss scale (dimensionless)")
        ax.set_title(f"{TASK_NAMES[task]}: dynamic scaler", fontsize=10)
        ax.legend(fontsize=7, loc="lower right", ncol=2)
    plotting.sign(fig, hardware)
    return fig
