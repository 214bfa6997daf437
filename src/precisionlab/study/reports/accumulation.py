"""Chapter 04's tables, figures and glued prose, from the tidy tables of
`precisionlab.study.experiments.accumulation`: presentation only, no measurement.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from precisionlab.study import stats


def _bars(table: pd.DataFrame, value: str, by: str) -> pd.DataFrame:
    """Per `by`: the geometric mean of `value` over seeds (index) and its 95 % interval as error
    bar lengths (`stats.summarize` on log10 values, for a log axis), columns mean, lo, hi; with
    one seed, or a value <= 0, the arithmetic summary and zero-length bars where undefined."""
    positive = bool((table[value] > 0).all())
    t = table.assign(v=np.log10(table[value]) if positive else table[value])
    s = stats.summarize(t, "v", by).set_index(by).sort_index()
    back = (lambda x: 10.0**x) if positive else (lambda x: x)
    mean = back(s["mean"])
    low, high = back(s["low"]).fillna(mean), back(s["high"]).fillna(mean)
    return pd.DataFrame({"mean": mean, "lo": mean - low, "hi": high - mean})


def _med_range(s: pd.Series) -> str:
    return f"{s.median():.2g} [{s.min():.2g}, {s.max():.2g}]"


def distance_table(ga1: pd.DataFrame, precisions: Sequence[str]) -> pd.DataFrame:
    """GA-1's table: median [min, max] over seeds per precision, comparison and k."""
    runs = ga1[ga1.comparison.isin(["accumulation", "smaller batch"])]
    view = (runs.groupby(["precision", "comparison", "k"]).rel_diff.agg(_med_range)
            .unstack("k").rename(columns=lambda k: f"k = {k}"))
    yard = (ga1[ga1.comparison.isin(["1-ulp nudge", "next precision up"])]
            .groupby(["precision", "comparison"]).rel_diff.agg(_med_range))
    view["k = 1 (yardstick)"] = ""
    return pd.concat([view, pd.DataFrame({"k = 1 (yardstick)": yard})]).fillna("").loc[
        list(precisions)]


def cost_table(ga2: pd.DataFrame, time: pd.DataFrame) -> pd.DataFrame:
    """GA-2's table: counted FLOPs and bytes per optimizer step, and the median time ratio."""
    mib = 2**20
    ratio = time.groupby(["precision", "k"]).time_ratio.median()
    show = pd.DataFrame({
        "precision": ga2.precision, "k": ga2.k, "micro_batch": ga2.micro_batch,
        "matmul GFLOP / step": (ga2.matmul_flops / 1e9).map("{:.4f}".format),
        "saved activations, peak (MiB)": (ga2.activation_bytes / mib).map("{:.2f}".format),
        "weights + grads + opt. state (MiB)": (ga2.static_bytes / mib).map("{:.2f}".format),
        "time / step vs k = 1": [f"{ratio[p, k]:.2f}" for p, k in zip(ga2.precision, ga2.k,
                                                                       strict=True)]})
    if "cuda_peak_bytes" in ga2:
        show["CUDA peak (MiB)"] = (ga2.cuda_peak_bytes / mib).map("{:.1f}".format)
    return show.set_index(["precision", "k"])


def error_table(ga3: pd.DataFrame, parts: pd.DataFrame, precisions: Sequence[str]
                ) -> pd.DataFrame:
    """GA-3's table: median [min, max] error per precision and k, the accumulators alone, and
    the share of nonzero parts an fp16 accumulator flushes."""
    t1 = ga3.groupby(["precision", "k"]).rel_error.agg(_med_range).unstack("k")
    t2 = parts.groupby(["accumulator", "k"]).rel_error.agg(_med_range).unstack("k")
    t2.index = [f"accumulator alone: {a}" for a in t2.index]
    t3 = parts[parts.accumulator == "fp16"].groupby("k").flushed_parts.agg(
        lambda s: f"{100 * s.median():.2g} %")
    table = pd.concat([t1.loc[list(precisions)],
                       t2.loc[[f"accumulator alone: {a}" for a in ["fp32", "fp16", "bf16"]]],
                       t3.to_frame().T.rename(
                           index={"flushed_parts": "fp16: share of nonzero parts flushed to 0"})])
    table.columns = [f"k = {k}" for k in table.columns]
    return table


def error_ratios(ga3: pd.DataFrame, parts: pd.DataFrame) -> pd.DataFrame:
    """Per setting (each precision, each accumulator alone): the error at the largest k over the
    error at k = 1, paired by seed, as a factor with its 95 % interval (from the log-ratios), and
    the seeds whose error fell. Columns setting, kind, ratio, low, high, n, fell."""
    rows = []
    for table, column, kind in [(ga3, "precision", "whole computation"),
                                (parts, "accumulator", "accumulator alone")]:
        for setting in dict.fromkeys(table[column]):
            t = table[table[column] == setting]
            k1, kmax = t.k.min(), t.k.max()
            t = t[t.k.isin([k1, kmax])].assign(log_error=np.log(t.rel_error))
            d = stats.paired_differences(t, "log_error", "k", kmax, k1)
            iv = stats.interval(d)
            rows.append({"setting": setting, "kind": kind, "k1": int(k1), "kmax": int(kmax),
                         "ratio": math.exp(iv.mean), "low": math.exp(iv.low),
                         "high": math.exp(iv.high), "n": iv.n, "fell": int((d < 0).sum())})
    return pd.DataFrame(rows)


def ratio_table(ga3: pd.DataFrame, parts: pd.DataFrame) -> pd.DataFrame:
    """GA-4's table: `error_ratios` for display, a factor below 1 meaning accumulation cut the
    error."""
    r = error_ratios(ga3, parts)
    kmax, k1 = int(r.kmax.max()), int(r.k1.min())

    def fmt(x: float) -> str:
        return "?" if math.isnan(x) else f"{x:.3g}"

    return pd.DataFrame({
        "what is summed": r.kind, "setting": r.setting,
        f"error at k = {kmax} / error at k = {k1} (paired by seed)": [
            f"{fmt(a)} [{fmt(lo)}, {fmt(hi)}]" for a, lo, hi in zip(r.ratio, r.low, r.high,
                                                                    strict=True)],
        "seeds where the error fell": [f"{f} of {n}" for f, n in zip(r.fell, r.n, strict=True)],
    }).set_index(["what is summed", "setting"])


def facts(ga1: pd.DataFrame, ga2: pd.DataFrame, time: pd.DataFrame, ga3: pd.DataFrame,
          parts: pd.DataFrame, n_params: int) -> dict[str, str]:
    """The numbers the chapter's prose glues, as text."""
    from precisionlab.study.claims import sig2

    out: dict[str, str] = {}
    med = ga1.groupby(["precision", "comparison", "k"]).rel_diff.median()
    precisions = list(dict.fromkeys(ga1.precision))
    acc = {p: med[p]["accumulation"] for p in precisions}
    small = {p: med[p]["smaller batch"] for p in precisions}
    rounding = {p: max(med[p]["1-ulp nudge"].max(), med[p]["next precision up"].max())
                for p in precisions}
    out["ga1_acc_32"] = sig2(acc["32-true"].max()) if "32-true" in acc else "not run"
    out["ga1_acc_low"] = ", ".join(f"{sig2(acc[p].max())} ({p})" for p in precisions
                                   if p != "32-true") or "none"
    out["ga1_acc_over_round"] = sig2(max(acc[p].max() / rounding[p] for p in precisions))
    out["ga1_sep"] = sig2(min((small[p] / acc[p]).min() for p in precisions))
    out["ga1_small"] = sig2(min(small[p].min() for p in precisions))
    mib, kmax = 2**20, int(ga2.k.max())
    first = ga2[ga2.precision == ga2.precision.iloc[0]].set_index("k")
    out["ga2_gflop"] = f"{first.matmul_flops[1] / 1e9:.3g}"
    out["ga2_act1"] = f"{first.activation_bytes[1] / mib:.1f} MiB"
    out["ga2_static"] = f"{first.static_bytes[1] / mib:.2f} MiB"
    out["ga2_act_ratio"] = ", ".join(
        f"{g.set_index('k').activation_bytes[kmax] / g.set_index('k').activation_bytes[1]:.3g} "
        f"({p})" for p, g in ga2.groupby("precision", sort=False))
    out["ga2_params"] = f"{n_params:,}"
    ratio = time.groupby(["precision", "k"]).time_ratio.median()
    out["ga2_time"] = ", ".join(f"{ratio[p, kmax]:.2f} ({p})" for p in dict.fromkeys(ga2.precision))
    split = ratio[ratio.index.get_level_values("k") > 1]
    out["ga2_time_min"], out["ga2_time_max"] = f"{split.min():.2f}", f"{split.max():.2f}"
    gmed = ga3.groupby(["precision", "k"]).rel_error.median()
    gk = int(ga3.k.max())
    grad_precisions = list(dict.fromkeys(ga3.precision))
    out["ga3_growth"] = "; ".join(f"{p}: {gmed[p][gk] / gmed[p][1]:.3g}" for p in grad_precisions)
    pmed = parts.groupby(["accumulator", "k"]).rel_error.median()
    for name, acc_name in [("acc32", "fp32"), ("acc16", "fp16"), ("accbf", "bf16")]:
        out[f"ga3_{name}"] = f"{pmed[acc_name][gk]:.2g}"
    out["ga3_acc16_1"], out["ga3_accbf_1"] = f"{pmed['fp16'][1]:.2g}", f"{pmed['bf16'][1]:.2g}"
    flushed = parts[(parts.accumulator == "fp16") & (parts.k == gk)].flushed_parts.median()
    out["ga3_flushed"] = f"{100 * flushed:.2g} %"
    out["ga3_16true_1"] = f"{gmed['16-true'][1]:.2g}" if "16-true" in grad_precisions else "not run"
    mixed = [p for p in grad_precisions if p.endswith("mixed")]
    out["ga3_mixed_err"] = ", ".join(f"{gmed[p][1]:.2g} ({p})" for p in mixed) or "not run"
    r = error_ratios(ga3, parts).set_index("setting")
    whole = r[r.kind == "whole computation"]
    alone = r[r.kind == "accumulator alone"]
    out["ga4_whole"] = ", ".join(f"{x:.3g} ({p})" for p, x in whole.ratio.items())
    out["ga4_alone"] = ", ".join(f"{x:.3g} ({a})" for a, x in alone.ratio.items())
    out["ga4_mixed"] = ", ".join(f"{whole.ratio[p]:.3g} ({p})" for p in mixed) or "not run"
    out["ga4_mixed_fell"] = ", ".join(f"{whole.fell[p]} of {whole.n[p]} ({p})"
                                      for p in mixed) or "no"
    return out


def plot_distances(ga1: pd.DataFrame, precisions: Sequence[str], ks: Sequence[int], steps: int,
                   hardware: str = ""):
    """GA-1's figure: distance from k = 1 against k, per precision, with the yardsticks."""
    from precisionlab.study import plotting

    comp = {"accumulation": dict(color=plotting.PALETTE[0], marker="o",
                                 label="k micro-batches of B/k (accumulation)"),
            "smaller batch": dict(color=plotting.PALETTE[3], marker="s",
                                  label="one batch of B/k, no accumulation")}
    yard = {"1-ulp nudge": dict(color=plotting.PALETTE[2], ls="--",
                                label="yardstick: initial weights 1 ulp up"),
            "next precision up": dict(color=plotting.PALETTE[4], ls=":",
                                      label="yardstick: one precision up")}
    fig, axes = plotting.figure(ncols=len(precisions), width=3.4 * len(precisions) + 0.6,
                                height=4.3, sharey=True, squeeze=False)
    for ax, p in zip(axes[0], precisions, strict=True):
        sub = ga1[ga1.precision == p]
        for c, style in comp.items():
            g = _bars(sub[sub.comparison == c], "rel_diff", "k")
            ax.errorbar(g.index, g["mean"], yerr=[g.lo, g.hi], capsize=3, ms=5, lw=1.3, **style)
        for c, style in yard.items():
            g = _bars(sub[sub.comparison == c], "rel_diff", "k").iloc[0]
            ax.axhspan(g["mean"] - g.lo, g["mean"] + g.hi, color=style["color"], alpha=0.15, lw=0)
            ax.axhline(g["mean"], color=style["color"], ls=style["ls"], lw=1.3,
                       label=style["label"])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(list(ks)[1:], [str(k) for k in list(ks)[1:]])
        ax.set_title(p)
        ax.set_xlabel("k (micro-batches, or batch divided by k)")
    axes[0][0].set_ylabel(f"||θ − θ(k=1)|| / ||θ(k=1)|| after {steps} steps\n(dimensionless)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    order = [labels.index(st["label"]) for st in [*comp.values(), *yard.values()]]
    fig.legend([handles[i] for i in order], [labels[i] for i in order], loc="upper center",
               ncol=2, fontsize=8, bbox_to_anchor=(0.5, 1.0))
    plotting.sign(fig, hardware)
    fig.tight_layout(rect=(0, 0.03, 1, 0.88))
    return fig


def plot_costs(ga2: pd.DataFrame, time: pd.DataFrame, ks: Sequence[int], hardware: str = ""):
    """GA-2's figure: counted FLOPs, memory and time ratio per optimizer step against k."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator

    from precisionlab.study import plotting

    mib = 2**20
    mark = {"32-true": ("o", 9), "bf16-mixed": ("s", 6.5), "16-mixed": ("^", 4.5)}
    precisions = list(dict.fromkeys(ga2.precision))
    fig, (ax_f, ax_m, ax_t) = plotting.figure(ncols=3, width=11.5, height=4.2)
    for i, p in enumerate(precisions):
        g, c, (mk, ms) = ga2[ga2.precision == p], plotting.PALETTE[i], mark[p]
        ax_f.plot(g.k, g.matmul_flops / 1e9, marker=mk, ms=ms, color=c)
        ax_f.plot(g.k, g.matmul_flops / g.k / 1e9, marker=mk, ms=ms, ls=":", color=c)
        ax_m.plot(g.k, g.activation_bytes / mib, marker=mk, ms=ms, color=c)
        if "cuda_peak_bytes" in g:
            ax_m.plot(g.k, g.cuda_peak_bytes / mib, marker=mk, ms=ms, ls="-.", color=c)
        q = time[time.precision == p].groupby("k").time_ratio.quantile([0.25, 0.5, 0.75]).unstack()
        ax_t.errorbar(q.index, q[0.5], yerr=[q[0.5] - q[0.25], q[0.75] - q[0.5]], marker=mk,
                      ms=ms, capsize=3, color=c)
    first = ga2[ga2.precision == precisions[0]]
    ax_m.plot(first.k, first.activation_bytes.iloc[0] / first.k / mib, color="#000000", lw=1.2,
              ls=":", zorder=5)
    ax_m.plot(first.k, first.static_bytes / mib, color="#777777", lw=1.5, ls="--")
    for ax in (ax_f, ax_m, ax_t):
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(ks), [str(k) for k in ks])
        ax.set_xlabel("accumulation steps k")
    for ax in (ax_f, ax_m):
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda val, _: f"{val:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda val, _: ""))
    ax_f.set_ylabel("matmul GFLOP (forward + backward)")
    ax_m.set_ylabel("memory (MiB)")
    ax_t.set_ylabel("time per optimizer step / time at k = 1")
    ax_t.axhline(1, color="#999999", lw=1)
    ax_f.set_title("Compute (counted)")
    ax_m.set_title("Memory")
    ax_t.set_title("Time (median, IQR bars)")
    prec = [Line2D([], [], color=plotting.PALETTE[i], marker=mark[p][0], ls="-", label=p)
            for i, p in enumerate(precisions)]
    grey = dict(color="#777777")
    ax_f.legend(handles=prec + [Line2D([], [], ls="-", **grey, label="per optimizer step"),
                                Line2D([], [], ls=":", **grey, label="per micro-batch")],
                fontsize=7)
    extra = [Line2D([], [], ls="-", **grey, label="saved activations, peak"),
             Line2D([], [], ls=":", lw=1.2, color="#000000",
                    label=f"1/k of k = 1 ({precisions[0]})"),
             Line2D([], [], ls="--", lw=1.5, **grey,
                    label=f"weights + grads + optimizer state ({precisions[0]})")]
    if "cuda_peak_bytes" in ga2:
        extra.append(Line2D([], [], ls="-.", **grey, label="CUDA max allocated"))
    ax_m.legend(handles=prec + extra, fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 0.1))
    ax_t.legend(handles=prec, fontsize=7)
    plotting.sign(fig, hardware)
    return fig


def plot_errors(ga3: pd.DataFrame, parts: pd.DataFrame, ks: Sequence[int], grad_batch: int,
                hardware: str = ""):
    """GA-3's figure: gradient error against k per precision, and per accumulator alone."""
    from precisionlab.study import plotting

    colors = {"32-true": "fp32", "16-mixed": "fp16", "bf16-mixed": "bf16", "16-true": "fp16",
              "bf16-true": "bf16"}
    fig, (ax1, ax2) = plotting.figure(ncols=2, width=10, height=4.3, sharey=True)
    for p in dict.fromkeys(ga3.precision):
        g = _bars(ga3[ga3.precision == p], "rel_error", "k")
        acc = "fp32" if p == "32-true" or p.endswith("mixed") else colors[p]
        ax1.errorbar(g.index, g["mean"], yerr=[g.lo, g.hi],
                     marker="o", ms=4, capsize=3, color=plotting.FORMAT_COLORS[colors[p]],
                     ls="--" if p.endswith("mixed") else "-", label=f"{p} (.grad in {acc})")
    k_arr = np.array(list(ks), dtype=float)
    for name in ["fp32", "fp16", "bf16"]:
        g = _bars(parts[parts.accumulator == name], "rel_error", "k")
        c = plotting.FORMAT_COLORS[name]
        ax2.errorbar(g.index, g["mean"], yerr=[g.lo, g.hi],
                     marker="o", ms=4, capsize=3, color=c, label=f"{name} accumulator")
        ax2.plot(k_arr, g["mean"].iloc[0] * np.sqrt(k_arr), color=c, ls=":", lw=1)
    ax2.plot([], [], color="#777777", ls=":", lw=1, label="√k growth from k = 1 (guide)")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(list(ks), [str(k) for k in ks])
        ax.set_xlabel(f"k (one batch of {grad_batch} split into k micro-batches)")
        ax.legend(fontsize=7)
    ax1.set_ylabel("||g_k − g_exact|| / ||g_exact||  (dimensionless)")
    ax1.set_title("Whole computation at each precision")
    ax2.set_title("The accumulator alone (exact fp64 parts)")
    plotting.sign(fig, hardware)
    return fig
