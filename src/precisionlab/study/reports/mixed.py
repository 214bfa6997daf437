"""Chapter 02's figures and glued prose, from the tidy tables of
`precisionlab.study.experiments.mixed`: presentation only, no measurement.

Curves are means over seeds with their 95 % interval; a legend entry counts the runs whose
training loss went NaN (drawn at the values they had, not hidden). Every figure is signed with
the `hardware` line that measured it; the caller shows it (`plt.show()`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from precisionlab.amp.trace import summarize_dtypes
from precisionlab.formats import adam_underflow
from precisionlab.study import plotting, stats
from precisionlab.study.claims import Verdict, sig2
from precisionlab.study.designs import (
    MIXED,
    PURE,
    SPACING,
    device_independent,
    finals,
    fine_accuracy,
)
from precisionlab.study.rules.mixed import ACC_MARGIN


def band(ax: object, table: pd.DataFrame, y: str, by: str, scale: float = 1.0, x: str = "step",
         **kw: object) -> None:
    """Mean over seeds with its 95 % interval per group of `by`; the legend counts runs whose
    training loss went NaN (they are drawn, at the values they had)."""
    s = stats.summarize(table.dropna(subset=[y]), y, [by, x])
    bad = finals(table.assign(test_metric=0, test_loss=0), [by]).groupby(by, sort=False)
    for i, (key, g) in enumerate(s.groupby(by, sort=False)):
        n_bad, n = int(bad.diverged.sum()[key]), int(bad.size()[key])
        label = f"{key} ({n_bad}/{n} runs diverged)" if n_bad else key
        ax.plot(g[x], scale * g["mean"], label=label, color=plotting.PALETTE[i], **kw)
        ax.fill_between(g[x], scale * g.low, scale * g.high, color=plotting.PALETTE[i], alpha=0.2)


def trace_facts(traces: pd.DataFrame, cast_ops: pd.DataFrame) -> dict[str, str]:
    """The traced bf16-mixed step's op and cast counts, and the cast pairs seen."""
    return {"n_ops": str((traces.precision == "bf16-mixed").sum()),
            "n_casts": str((cast_ops.precision == "bf16-mixed").sum()),
            "cast_pairs": ", ".join(sorted(set(cast_ops.pair)))}


def plot_lr_curves(curves: pd.DataFrame, sgd_lr: float, hardware: str) -> Figure:
    """Training loss of SGD under AMP at `sgd_lr` against fp32 at lr and lr/2."""
    fig, ax = plotting.figure()
    band(ax, curves, "smooth", "run", lw=1.5)
    ax.set(yscale="log", xlabel="optimizer step", ylabel="training loss (nats; 20-step mean)",
           title=f"SGD on digits: AMP at lr = {sgd_lr} vs fp32 at lr and lr/2")
    ax.legend()
    return plotting.sign(fig, hardware)


def plot_precision_runs(runs: pd.DataFrame, hardware: str) -> Figure:
    """Test accuracy against step per precision, one panel per task."""
    fig, axes = plotting.figure(ncols=2, width=10, height=4)
    for ax, (task, g) in zip(axes, runs.groupby("task", sort=False), strict=True):
        band(ax, g, "test_metric", "precision", scale=100, lw=1.4)
        ax.set(xlabel="optimizer step", ylabel="test accuracy (%)", title=task, ylim=(0, 100))
    axes[0].legend(fontsize=8)
    return plotting.sign(fig, hardware)


def plot_pure_runs(pure: pd.DataFrame, hardware: str) -> Figure:
    """The share of weights that did not move under pure 16-bit training, SGD and Adam."""
    fig, axes = plotting.figure(ncols=2, width=10, height=4, sharey=True)
    for ax, (opt_name, g) in zip(axes, pure.groupby("optimizer", sort=False), strict=True):
        band(ax, g, "stalled", "precision", scale=100, lw=1.4)
        ax.set(xlabel="optimizer step", title=f"{opt_name.upper()} on digits")
    axes[0].set_ylabel("weights with a gradient that did not move (%)")
    for ax in axes:  # the Adam panel counts diverged runs
        ax.legend(fontsize=8)
    return plotting.sign(fig, hardware)


def plot_article_layer(mp14: pd.DataFrame, stall_lr: float, hardware: str) -> Figure:
    """The article's fixed fp16 layer against nn.Linear under AMP: loss and stalled weights."""
    fig, (ax1, ax2) = plotting.figure(ncols=2, width=10, height=3.8)
    band(ax1, mp14, "smooth", "layer")
    band(ax2, mp14, "stalled", "layer", scale=100)
    ax1.set(ylabel="training loss (nats, 10-step mean)",
            title=f"Softmax regression, SGD lr {stall_lr}")
    ax2.set_ylabel("weights with a gradient that did not move (%)")
    for ax in (ax1, ax2):
        ax.set_xlabel("optimizer step")
    ax1.legend(fontsize=8)
    return plotting.sign(fig, hardware)


def stall_facts(mp14_final: pd.DataFrame) -> dict[str, str]:
    """The share of stalled weights at the end, fixed fp16 layer and nn.Linear under AMP."""
    stall = mp14_final.groupby("layer").stalled.mean()
    return {"stall_fixed": f"{100 * stall['fixed fp16 layer (16-true)']:.0f} %",
            "stall_amp": f"{100 * stall['nn.Linear, 16-mixed']:.1f} %"}


def plot_resolution(resolution: pd.DataFrame, hardware: str) -> Figure:
    """Comparisons right against the gap between two close numbers, per variant, with the
    fp16 and bf16 spacing near 0.75 marked."""
    fig, ax = plotting.figure(width=7, height=4)
    for i, (name, d) in enumerate(resolution.groupby("variant", sort=False)):
        ax.plot(np.sqrt(d.gap_low * d.gap_high), 100 * d.accuracy, marker="o", label=name,
                color=plotting.PALETTE[i], linestyle="--" if "Island" in name else "-")
    for fmt, sp in SPACING.items():
        ax.axvline(sp, color="#888888", linewidth=0.8, linestyle=":")
        ax.text(sp * 1.1, 52, f"{fmt} spacing", fontsize=8, color="#555555", rotation=90)
    ax.set(xscale="log", ylim=(40, 102), ylabel="comparisons right (%)",
           xlabel="gap |a - b| between the two numbers (unitless; a, b near 0.75)",
           title="Which of two close numbers is larger? An exact a - b layer under autocast")
    ax.legend(fontsize=8, loc="center left")
    return plotting.sign(fig, hardware)


def resolution_facts(resolution: pd.DataFrame) -> dict[str, str]:
    """Accuracy on gaps below half bf16's spacing per variant, and that limit."""
    fine = fine_accuracy(resolution, fine_limit := SPACING["bf16"] / 2)
    return {f"res_{key}": f"{100 * share:.1f} %" for key, share in zip(
        ["fp32", "fp16", "bf16", "island"], fine, strict=True)} | {"res_limit": f"{fine_limit:.1e}"}


def plot_close_pairs(cp: pd.DataFrame, cp_tbl: pd.DataFrame, hardware: str) -> Figure:
    """The trained comparator's test accuracy per variant: mean with its 95 % interval, and
    one dot per seed."""
    fig, ax = plotting.figure(width=7, height=3.5)
    ax.errorbar(100 * cp_tbl["mean"], cp_tbl.variant, fmt="o", capsize=4,
                xerr=100 * (cp_tbl[["mean", "high"]].diff(axis=1)["high"]).fillna(0).to_numpy())
    ax.scatter(100 * cp.test_metric, cp.variant, s=12, color=plotting.PALETTE[1], label="one seed")
    ax.set(xlabel="test pairs ordered right (%)", title="Trained comparator on close pairs")
    ax.legend(fontsize=8)
    return plotting.sign(fig, hardware)


def close_pairs_facts(cp_tbl: pd.DataFrame,
                      keys: Sequence[str] = ("fp32", "fp16", "bf16", "island")) -> dict[str, str]:
    """The comparator's mean test accuracy per variant, as the prose quotes it."""
    return {f"cp_{k}": f"{100 * m:.1f} %" for k, m in zip(keys, cp_tbl["mean"], strict=True)}


def dtype_facts(tensor_table: pd.DataFrame) -> dict[str, str]:
    """The dtypes of bf16-mixed's activation gradient and weight gradient (`tensor_dtypes`)."""
    return {"act_grad_dtype": tensor_table.loc["activation gradient", "bf16-mixed"],
            "mixed_grad_dtype": tensor_table.loc["weight gradient (.grad)", "bf16-mixed"]}


def bench_facts(bench_width: int, bench_batch: int, bench_repeats: int,
                bench_steps: int) -> dict[str, str]:
    """The Trainer-overhead benchmark's setup, as the prose quotes it."""
    return {"bench_width_text": str(bench_width), "bench_batch_text": str(bench_batch),
            "bench_repeats_text": str(bench_repeats), "bench_steps_text": str(bench_steps)}


# ------------------------------------------------------------ tables and numbers for the prose ---

def update_summary(updates: pd.DataFrame) -> pd.DataFrame:
    """`one_step_updates` per step variant: mean and std of each measure, and the format's u."""
    cols = ["step_ratio", "update_rel_diff_vs_fp32", "grad_rel_err_vs_fp64",
            "grad_norm_ratio_vs_fp64"]
    view = updates.groupby("step", sort=False)[cols].agg(["mean", "std"])
    view.columns = [f"{a} ({b})" for a, b in view.columns]
    return view.assign(unit_roundoff=updates.groupby("step", sort=False).unit_roundoff.first())


def update_facts(updates: pd.DataFrame) -> dict[str, str]:
    """The one-step numbers the chapter's prose quotes (2 significant digits): step ratios and
    gradient errors per variant, and the range of AMP gradient norm ratios to fp64."""
    by = updates.groupby("step", sort=False).mean(numeric_only=True)
    facts = {}
    for key, step in [("bf16", "bf16-mixed, lr"), ("fp16", "16-mixed, lr"),
                      ("fp32", "32-true, lr"), ("half", "32-true, lr/2")]:
        facts[f"ratio_{key}"] = sig2(by.loc[step, "step_ratio"])
        facts[f"err_{key}"] = sig2(by.loc[step, "grad_rel_err_vs_fp64"])
    ratio = updates.grad_norm_ratio_vs_fp64.dropna()
    facts["ratio_range"] = f"{ratio.min():.4f} to {ratio.max():.4f}"
    return facts


def underflow_facts() -> dict[str, str]:
    """`adam_underflow` of fp16 and bf16 as the prose quotes it."""
    facts = {}
    for fmt in ("fp16", "bf16"):
        t = adam_underflow(fmt)
        facts[f"v_zero_{fmt}"] = sig2(t["v_zero_below"])
        facts[f"m_zero_{fmt}"] = sig2(t["m_zero_below"])
        facts[f"eps_zero_{fmt}"] = "it does" if t["eps_is_zero"] else "it does not"
    return facts


OVERHEAD_TARGET = 1.03  # the Trainer is meant to cost at most 3 % over the plain loop


def overhead_facts(overhead: pd.DataFrame, target: float = OVERHEAD_TARGET) -> dict[str, str]:
    """The Trainer's time ratio to the plain loop per precision, and whether it met `target`."""
    ratio = overhead[overhead.candidate == "Trainer"].set_index("precision")["ratio_to_plain loop"]
    facts = {"overhead_target": f"{target:g}"}
    for precision, key in [("32-true", "32"), ("bf16-mixed", "bf16")]:
        facts[f"overhead_{key}"] = f"{ratio[precision]:.3f}"
        facts[f"overhead_{key}_met"] = "met" if ratio[precision] <= target else "missed"
    return facts


def resolution_table(resolution: pd.DataFrame) -> pd.DataFrame:
    """`resolution_probe` as gap decade x variant, in percent of pairs ordered right."""
    table = resolution.pivot_table(index=["gap_low", "gap_high"], columns="variant",
                                   values="accuracy", sort=False)
    table.index = [f"{lo:.0e} to {hi:.0e}" for lo, hi in table.index]
    return (100 * table).round(1)


def autocast_pivot(probe: pd.DataFrame) -> pd.DataFrame:
    """`autocast_table` rows of one device as op x (autocast, input dtype): the output dtype."""
    return probe.pivot_table(index="op", columns=["autocast", "input"], values="output",
                             aggfunc="first", sort=False)


# ------------------------------------------------------------ MP-15, MP-16, MP-18, MP-20, MP-26 ---

def result_table(results: pd.DataFrame) -> pd.DataFrame:
    """`result_dtypes` rows with an fp32 input (the device-independent ones) as op x (autocast,
    computed / returned): what each op's arithmetic ran in and what it handed back."""
    part = device_independent(results)
    table = part.pivot_table(index="op", columns="autocast", values=["computed", "output"],
                             aggfunc="first", sort=False)
    table = table.swaplevel(axis=1).sort_index(axis=1, level=0, sort_remaining=False)
    return table.rename(columns={"output": "returned"}, level=1)


def result_facts(results: pd.DataFrame) -> dict[str, str]:
    """The CPU ops that compute in 16 bits and those that turn a 16-bit input into fp32."""
    cpu = results[(results.device == "cpu") & (results.autocast == "bf16")]
    lowered = cpu[(cpu.input == "fp32") & (cpu.computed == "bf16")].op
    upcast = cpu[(cpu.input == "bf16") & (cpu.output == "fp32")].op
    return {"mp15_lowered": ", ".join(lowered), "mp15_upcast": ", ".join(upcast) or "none"}


def flops_facts(flops: pd.DataFrame) -> dict[str, str]:
    """The traced step's aten ops and casts at 32-true and bf16-mixed, as the prose quotes them."""
    by = flops.set_index("precision")
    return {"mp16_ops_32": str(by.loc["32-true", "aten_ops"]),
            "mp16_ops_bf16": str(by.loc["bf16-mixed", "aten_ops"]),
            "mp16_casts_32": str(by.loc["32-true", "casts"]),
            "mp16_casts_bf16": str(by.loc["bf16-mixed", "casts"]),
            "mp16_mflop": f"{by.loc['32-true', 'step_flops'] / 1e6:.1f}"}


def plot_update_losses(pure: pd.DataFrame, hardware: str) -> Figure:
    """Per step, the share of wanted updates lost by the real AMP step and by the same updates
    applied in fp16 and cast back, SGD and Adam panels."""
    amp = pure[pure.precision.isin(MIXED) & ~pure.skipped.astype(bool)]
    long = pd.concat([
        amp.assign(update=amp.precision + ": real step (fp32)", lost=amp.stalled),
        amp.assign(update=amp.precision + ": applied in fp16, cast back",
                   lost=amp.lost_fp16_scheme)], ignore_index=True)
    fig, axes = plotting.figure(ncols=2, width=10, height=4, sharey=True)
    for ax, (opt_name, g) in zip(axes, long.groupby("optimizer", sort=False), strict=True):
        band(ax, g, "lost", "update", scale=100, lw=1.4)
        ax.set(xlabel="optimizer step", title=f"{opt_name.upper()} on digits, AMP runs")
    axes[0].set_ylabel("wanted weight updates lost (%)")
    axes[0].legend(fontsize=8)
    return plotting.sign(fig, hardware)


def update_loss_facts(losses: pd.DataFrame, pure_final: pd.DataFrame) -> dict[str, str]:
    """Mean share of updates lost per step over the AMP runs of `update_losses`, per optimizer
    (real step and fp16 scheme), and pure fp16 SGD's stalled share from `finals` of the pure
    runs."""
    by = losses.groupby("optimizer").mean(numeric_only=True)
    facts = {f"mp18_{kind}_{opt}": f"{100 * by.loc[opt, col]:.2g} %"
             for opt in by.index for kind, col in [("real", "stalled"),
                                                   ("fp16", "lost_fp16_scheme")]}
    sgd = pure_final[(pure_final.optimizer == "sgd") & (pure_final.precision == "16-true")]
    return facts | {"mp18_pure_sgd": f"{100 * sgd.stalled.mean():.2g} %"}


def plot_errors(updates: pd.DataFrame, hardware: str) -> Figure:
    """Relative error of the forward outputs and of the gradient against fp64, per precision:
    one dot per seed and the mean, on a log scale."""
    full = updates[updates.step.str.endswith(", lr")]
    order = ["32-true", "bf16-mixed", "16-mixed"]
    fig, axes = plotting.figure(ncols=2, width=10, height=3.8, sharey=True)
    for ax, (col, label) in zip(axes, [("out_rel_err_vs_fp64", "forward outputs (logits)"),
                                       ("grad_rel_err_vs_fp64", "gradient")], strict=True):
        for i, p in enumerate(order):
            v = full[full.precision == p][col]
            ax.scatter([i] * len(v), v, s=18, color=plotting.PALETTE[i], alpha=0.7)
            ax.scatter([i], [np.exp(np.log(v).mean())], marker="_", s=400, color="#000000")
        ax.set(xticks=range(len(order)), xticklabels=order, yscale="log", title=label,
               xlabel="precision policy")
    axes[0].set_ylabel("relative error against fp64 (unitless)")
    return plotting.sign(fig, hardware)


def error_facts(updates: pd.DataFrame) -> dict[str, str]:
    """Geometric-mean relative errors of the outputs and the gradient against fp64 per
    precision (2 significant digits), as the prose quotes them."""
    full = updates[updates.step.str.endswith(", lr")]
    facts = {}
    for key, col in [("out", "out_rel_err_vs_fp64"), ("grad", "grad_rel_err_vs_fp64")]:
        g = full.groupby("precision")[col].apply(lambda s: np.exp(np.log(s).mean()))
        facts |= {f"mp20_{key}_{k}": sig2(g[p]) for k, p in
                  [("fp32", "32-true"), ("bf16", "bf16-mixed"), ("fp16", "16-mixed")]}
    return facts


def pure_table(final: pd.DataFrame, times: pd.DataFrame) -> pd.DataFrame:
    """Per task and pure policy: test accuracy minus 32-true's and minus its AMP twin's
    (paired by seed, mean and 95 % interval, in pp), diverged runs, and the step time's ratio
    to 32-true from `policy_step_times`."""
    ratio = times.set_index("precision")["ratio_to_32-true"]
    rows = []
    for task, part in final.groupby("task", sort=False):
        for p, amp in PURE.items():
            vs32 = stats.paired(part, "test_metric", "precision", p, "32-true")
            vsamp = stats.paired(part, "test_metric", "precision", p, amp)
            rows.append({"task": task, "precision": p,
                         "acc - 32-true (pp)": vs32.text(scale=100),
                         "acc - AMP twin (pp)": vsamp.text(scale=100),
                         "diverged": int(part[part.precision == p].diverged.sum()),
                         "time/step vs 32-true": round(float(ratio[p]), 2)})
    return pd.DataFrame(rows)


def pure_facts(final: pd.DataFrame) -> dict[str, str]:
    """bf16-true's and 16-true's test accuracy minus 32-true's per task (mean and 95 % interval
    over seeds, pp), where they are higher or lower beyond the rules' ACC_MARGIN, and how many
    16-true runs diverged, as the prose quotes them."""
    facts, outcome = {}, {"higher": [], "lower": []}
    for task, part in final.groupby("task", sort=False):
        for p in PURE:
            c = stats.compare(part, "test_metric", "precision", p, "32-true", ACC_MARGIN)
            facts[f"mp26_acc_{task}_{p}"] = c.interval.text(scale=100, unit=" pp")
            outcome.get(c.outcome, []).append(f"{p} on {task}")
    for key, found in outcome.items():
        facts[f"mp26_{key}"] = f"for {', '.join(found)}" if found else "nowhere"
    runs = final[final.precision == "16-true"]
    facts["mp26_fp16_diverged"] = f"{int(runs.diverged.sum())} of {len(runs)}"
    facts["mp26_margin"] = f"{100 * ACC_MARGIN:g} pp"
    return facts


def speed_facts(times: pd.DataFrame) -> dict[str, str]:
    """The step-time ratios to 32-true of every timed policy, as the prose quotes them."""
    ratio = times.set_index("precision")["ratio_to_32-true"]
    return {f"mp26_time_{p}": f"{ratio[p]:.2f}" for p in ratio.index}


# ------------------------------------------------------------ printed texts and saved views ---

def trace_summary(traces: pd.DataFrame, precision: str = "bf16-mixed") -> str:
    """One precision's traced step as `summarize_dtypes` counts it, printed whole (every row, no
    wrapping), the text the chapter's checked cell prints."""
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        return summarize_dtypes(traces[traces.precision == precision]).to_string(index=False)


def cpu_autocast_text(probe: pd.DataFrame) -> str:
    """The CPU rows of `autocast_table` as `autocast_pivot` prints them (CUDA's op lists
    differ, so the checked output is the CPU's whatever the device)."""
    return autocast_pivot(probe[probe.device == "cpu"]).to_string()


LR_CURVE_COLUMNS = ["run", "seed", "step", "loss", "test_loss", "test_metric"]


def lr_curves_table(curves: pd.DataFrame) -> pd.DataFrame:
    """The columns of `lr_curves` the chapter saves (the smoothed loss is left out: it is
    recomputed from `loss`)."""
    return curves[LR_CURVE_COLUMNS]


def vanishing_text(values: Mapping[str, float], label: str = "1 - 1e-4") -> str:
    """`vanishing_update`'s exact result per format, one line each (repr, so every digit shows)."""
    return "\n".join(f"{label}, applied in {fmt}: {value!r}" for fmt, value in values.items())


def outcome_text(outcomes: Mapping[str, str]) -> str:
    """One 'label: outcome' line per entry, e.g. `article_layer_errors`' error or result."""
    return "\n".join(f"{label}: {outcome}" for label, outcome in outcomes.items())


def verdict_facts(found: Mapping[str, Verdict]) -> dict[str, str]:
    """Each recorded claim's verdict word under `v_<claim id>`, for the prose to quote."""
    return {f"v_{cid}": verdict.verdict for cid, verdict in found.items()}
