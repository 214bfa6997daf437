"""Figures, tables and glued texts of chapter 13 (inference precision on pretrained models)."""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from precisionlab.study import plotting, stats
from precisionlab.study.claims import sig2
from precisionlab.study.designs import INT8
from precisionlab.study.rules.inference import REF, is_mixed

FP16_MAX = 65504.0  # largest finite fp16 value
BF16_MAX = 3.3895313892515355e38  # largest finite bf16 value (same exponent range as fp32)


def causal_table(parity: pd.DataFrame) -> pd.DataFrame:
    """Per precision, over every predicted token (window means weighted by their tokens, never
    a mean of perplexities): perplexity, and against 32-true on the same windows the nll change,
    KL and delta-p, each with a 95 % bootstrap interval over windows (`stats.weighted_interval`)."""
    rows = []
    ref = parity[parity.precision == REF].set_index("window")
    for p in dict.fromkeys(parity.precision):
        part = parity[parity.precision == p].set_index("window").loc[ref.index]
        w = part.tokens.to_numpy(dtype=float)
        nll = stats.weighted_interval(part.nll, w)
        change = stats.weighted_interval(part.nll - ref.nll, w)
        ppl = stats.Interval(math.exp(nll.mean), math.exp(nll.low), math.exp(nll.high), nll.n)
        rows.append({"precision": p, "perplexity": ppl.text(),
                     "nll change (nats)": change.text(),
                     f"KL from {REF} (nats)": stats.weighted_interval(part.kl, w).text(),
                     "delta-p": stats.weighted_interval(part.delta_p, w).text(),
                     "predicted tokens": int(w.sum()),
                     "all logits finite": bool(part.finite.all())})
    return pd.DataFrame(rows)


def encoder_table(parity: pd.DataFrame) -> pd.DataFrame:
    """Per precision: mean cosine to 32-true (interval over sentences), least cosine and the share
    of sentences whose nearest neighbour is unchanged."""
    rows = []
    for p in dict.fromkeys(parity.precision):
        part = parity[parity.precision == p]
        rows.append({"precision": p, "1 - cosine": stats.interval(1 - part.cosine).text(),
                     "least cosine": f"{part.cosine.min():.6f}",
                     "nearest neighbour unchanged": f"{int(part.nn_agree.sum())}/{len(part)}"})
    return pd.DataFrame(rows)


def fidelity(causal: pd.DataFrame, encoder: pd.DataFrame, lm: str = "smollm2",
             enc: str = "minilm") -> pd.DataFrame:
    """One row per model and precision: mean KL (causal LM) or mean cosine (encoder)."""
    a = causal.groupby("precision", sort=False).kl.mean().reset_index().assign(model=lm)
    b = encoder.groupby("precision", sort=False).cosine.mean().reset_index().assign(model=enc)
    return pd.concat([a, b], ignore_index=True)[["model", "precision", "kl", "cosine"]]


def speed_table(speed: pd.DataFrame, fid: pd.DataFrame) -> pd.DataFrame:
    """Speed-ups with their 95 % intervals (`experiments.inference.latency_summary`) beside
    fidelity, for display."""
    t = speed.merge(fid, on=["model", "precision"], how="left")
    return pd.DataFrame({"model": t.model, "precision": t.precision,
                         "median (ms)": (t.median_s * 1e3).map(lambda x: f"{x:.1f}"),
                         "IQR / median": t.iqr_over_median.map(lambda x: f"{x:.2f}"),
                         f"speed-up over {REF}": t.speedup.map(lambda x: f"{x:.2f}x"),
                         "95 % interval": [f"[{lo:.2f}, {hi:.2f}]" for lo, hi in
                                           zip(t.speedup_low, t.speedup_high, strict=True)],
                         "rounds": t["rounds"],
                         "mean KL (nats)": t.kl.map(lambda x: "" if pd.isna(x) else f"{x:.2g}"),
                         "mean cosine": t.cosine.map(
                             lambda x: "" if pd.isna(x) else f"{x:.6f}")})


def plot_speed(speed: pd.DataFrame, hardware: str) -> Figure:
    """Speed-up over 32-true per precision with its 95 % interval over timed rounds, one panel
    per model; the mixed precisions (autocast), which decide LLM-6, in their own colour."""
    models = list(dict.fromkeys(speed.model))
    fig, axes = plotting.figure(ncols=len(models), width=3.6 * len(models) + 2.0, squeeze=False)
    colours = {f"reference ({REF})": "#999999",
               "*-mixed (autocast): mixed precision, decides": plotting.PALETTE[0],
               "other recipes, reported only": plotting.PALETTE[1]}
    ref, mixed, other = colours.values()
    for ax, model in zip(axes[0], models, strict=True):
        part = speed[speed.model == model].reset_index(drop=True)
        y = list(range(len(part)))
        ax.barh(y, part.speedup, color=[ref if p == REF else mixed if is_mixed(p) else other
                                        for p in part.precision])
        # NaN bounds (a single round) draw no interval: the bar stands alone.
        err = [(part.speedup - part.speedup_low).fillna(0),
               (part.speedup_high - part.speedup).fillna(0)]
        ax.errorbar(part.speedup, y, xerr=err, fmt="none", ecolor="black", capsize=3, lw=1)
        ax.set_yticks(y, part.precision)
        ax.invert_yaxis()  # the table's order, top down
        ax.axvline(1.0, color="black", lw=0.8)
        ax.set_xlabel(f"speed-up over {REF} (x, 95 % interval)")
        ax.set_ylabel("precision")
        ax.set_title(model)
    axes[0][-1].legend(handles=[Patch(color=c, label=k) for k, c in colours.items()],
                       loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    return plotting.sign(fig, hardware)


def plot_outliers(layers: dict[str, pd.DataFrame], hardware: str) -> Figure:
    """Per layer: the largest |x| of the residual stream, and its ratio to the median channel's
    largest |x|, for each model; fp16's largest finite value marked."""
    fig, (ax1, ax2) = plotting.figure(ncols=2, width=9.0)
    for model, t in layers.items():
        ax1.plot(t.layer, t.max_abs, marker="o", label=model)
        ax2.plot(t.layer, t.ratio, marker="o", label=model)
    ax1.axhline(FP16_MAX, color="red", ls=":", label="fp16 max (65504)")
    ax1.set_yscale("log")
    ax1.set_xlabel("block (0 = first)")
    ax1.set_ylabel("max |x| of block output (units of x)")
    ax2.set_yscale("log")
    ax2.set_xlabel("block (0 = first)")
    ax2.set_ylabel("top channel max / median channel max (ratio)")
    ax1.legend()
    return plotting.sign(fig, hardware)


def plot_channels(channels: pd.DataFrame, layer: int, model: str, hardware: str) -> Figure:
    """Each channel's largest |x| at one layer: a few channels tower over the rest."""
    fig, ax = plotting.figure(width=8.0, height=3.5)
    part = channels[channels.layer == layer]
    ax.bar(part.channel, part.max_abs, width=1.0, color="#4c72b0")
    ax.set_yscale("log")
    ax.set_xlabel(f"channel of {model}'s residual stream after block {layer}")
    ax.set_ylabel("max |x| over tokens (units of x)")
    return plotting.sign(fig, hardware)


def outlier_facts(layers: pd.DataFrame, prefix: str) -> dict[str, str]:
    """Glue texts about one model's outliers."""
    top = layers.loc[layers.max_abs.idxmax()]
    return {f"{prefix}_max": f"{top.max_abs:,.0f}", f"{prefix}_layer": str(int(top.layer)),
            f"{prefix}_channel": str(int(top.channel)), f"{prefix}_ratio": f"{top.ratio:,.0f}",
            f"{prefix}_ratio_max": f"{layers.ratio.max():,.0f}",
            f"{prefix}_fp16_share": f"{top.max_abs / FP16_MAX:.2g}",
            f"{prefix}_x2_over_fp16": f"{top.max_abs ** 2 / FP16_MAX:,.0f}"}


def memory_facts(kv: int, per_unit: float, recipes: pd.DataFrame) -> dict[str, str]:
    """Glue texts about memory."""
    tot = recipes.set_index("recipe").total
    return {"kv_smol_bf16": f"{kv:,}", "act_per_unit": sig2(per_unit),
            "adam_fp32": str(int(tot["32-true"])),
            "adam_mixed": str(int(tot["bf16-mixed (16-bit weights + fp32 master)"])),
            "adam_pure": str(int(tot["bf16-true"]))}


def int8_text(speed: pd.DataFrame, fid: pd.DataFrame) -> str:
    """The sentence on dynamic int8: its speed-up on each model (`speed`, from
    `experiments.inference.latency_summary`) against what it does to the answers
    (`fid`, from `fidelity`), or that it was not timed on this device."""
    i8 = speed[speed.precision == INT8].set_index("model").speedup
    if i8.empty:
        return "not timed on this device"
    f8 = fid[fid.precision == INT8].set_index("model")
    return (f"{i8['smollm2']:.2g}x as fast as 32-true on SmolLM2 but moves its next-token "
            f"distribution by a mean KL of {f8.kl['smollm2']:.2g} nats (one activation scale per "
            f"tensor meets the outliers shown below), and {i8['minilm']:.2g}x on MiniLM at a mean "
            f"cosine of {f8.cosine['minilm']:.4f}: faster, but not the same answers")


def rmsnorm_facts(rms: pd.DataFrame) -> dict[str, str]:
    """Glue texts about RMSNorm's statistic in each format (`experiments.inference.rms_norm_in`):
    mean x^2 in fp32 and fp16, what fp16 does to the normalized vector, and bf16's error."""
    r = rms.set_index("format")
    if r.finite["fp16"]:
        fp16 = "stays finite"
    else:
        fp16 = ("1/sqrt of it is 0: the normalized vector "
                + ("becomes all zeros" if r.output_all_zero["fp16"] else "is lost")
                + f" (largest error {r.max_abs_error['fp16']:.3g})")
    return {"mean_x2_fp32": f"{r.mean_x2['fp32']:,.0f}", "mean_x2_fp16": f"{r.mean_x2['fp16']}",
            "fp16_finite": fp16, "bf16_err": f"{r.max_abs_error['bf16']:.2g}"}


def autocast_mb(acts: pd.DataFrame) -> str:
    """The largest saved bytes of the mixed (autocast) precisions in `acts`, in MB, or 'no'
    without one."""
    auto = acts[acts.precision.map(is_mixed)]
    return f"{auto.saved_bytes.max() / 1e6:.0f}" if len(auto) else "no"
