"""Chapter 14's figure, tables and glued prose numbers, from the tables of
`experiments.llm_quantization`: presentation only, no measurement. Intervals are 95 % Student-t
over the held-out windows (every configuration sees the same windows, so they pair by window).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from precisionlab.study import plotting, stats
from precisionlab.study.claims import sig2
from precisionlab.study.rules import llm_quantization as rules


def quality_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per configuration, in the table's order: mean and 95 % interval over windows of the
    perplexity ratio to fp32 minus 1 (%), of KL (nats/token) and of delta-p (percentage points)."""
    t = table.assign(ppl_change=100 * (table["ppl_ratio"] - 1), dp_pp=100 * table["delta_p"])
    parts = []
    for value in ("ppl_change", "kl", "dp_pp"):
        s = stats.summarize(t, value, "config").set_index("config")
        parts.append(s[["mean", "low", "high"]].add_prefix(f"{value}_"))
    out = pd.concat(parts, axis=1).reset_index()
    out["n"] = stats.summarize(t, "kl", "config")["n"].to_numpy()
    return out


def plot_quality(table: pd.DataFrame, hardware: str) -> Figure:
    """Two panels, one row per configuration: perplexity change against fp32 (%) and KL
    divergence from fp32 (nats/token, log scale), means with 95 % interval bars over windows."""
    s = quality_summary(table)
    fig, (ax1, ax2) = plotting.figure(ncols=2, width=9.0, height=0.32 * len(s) + 1.6,
                                      sharey=True)
    y = np.arange(len(s))
    for ax, value, label in ((ax1, "ppl_change", "perplexity change vs fp32 (%)"),
                             (ax2, "kl", "KL(fp32 || quantized) (nats/token)")):
        mean = s[f"{value}_mean"].to_numpy()
        lo = np.nan_to_num(mean - s[f"{value}_low"].to_numpy())
        hi = np.nan_to_num(s[f"{value}_high"].to_numpy() - mean)
        if value == "kl":  # log axis: keep bars positive
            lo = np.minimum(lo, mean * 0.999)
        ax.errorbar(mean, y, xerr=[lo, hi], fmt="o", color="#1f4e79", capsize=3)
        ax.set_xlabel(label)
    for i, kl in enumerate(s["kl_mean"]):
        if kl <= 0:  # a log axis cannot show 0: say it in words (the model did not change)
            ax2.annotate("KL = 0 (identical output)", xy=(0.02, i), xycoords=("axes fraction",
                         "data"), va="center", fontsize=8, color="#1f4e79")
    ax1.axvline(0, color="#888888", lw=0.8)
    ax1.set_xscale("symlog", linthresh=1.0)
    ax2.set_xscale("log")
    ax1.set_yticks(y, s["config"])
    ax1.invert_yaxis()
    ax1.set_ylabel("configuration (SmolLM2 decoder Linears)")
    return plotting.sign(fig, hardware)


def quality_table(table: pd.DataFrame) -> pd.DataFrame:
    """Display table: per configuration, 'mean [low, high]' of each metric and the relative
    weight change (where the weights are stored apart)."""
    s = quality_summary(table)
    change = table.groupby("config", sort=False)["weight_change"].first()

    def fmt(prefix: str, digits: int) -> pd.Series:
        return s.apply(lambda r: f"{r[f'{prefix}_mean']:.{digits}g} "
                       f"[{r[f'{prefix}_low']:.{digits}g}, {r[f'{prefix}_high']:.{digits}g}]",
                       axis=1)

    return pd.DataFrame({
        "configuration": s["config"],
        "perplexity change (%)": fmt("ppl_change", 2),
        "KL (nats/token)": fmt("kl", 2),
        "delta-p (pp)": fmt("dp_pp", 2),
        "weight change (rel.)": [("-" if np.isnan(change[c]) else f"{change[c]:.2g}")
                                 for c in s["config"]],
        "windows": s["n"],
    })


def inventory_table(inv: pd.DataFrame) -> pd.DataFrame:
    """Display table of the MiniLM inventory: module, computes in, count, parameter share (%)."""
    return pd.DataFrame({"module": inv["module"], "computes in": inv["computes_in"],
                         "count": inv["count"], "parameters": inv["parameters"],
                         "share of parameters (%)": (100 * inv["parameter_share"]).round(1)})


def fidelity_table(fidelity: pd.DataFrame) -> pd.DataFrame:
    """Display table of Q-6's fidelity, one row per int8 recipe in the table's order: 1 - cosine
    to fp32 (mean [95 % t interval] over sentences), the lowest cosine, and the share of sentences
    whose nearest neighbour is kept (% [95 % Wilson interval])."""
    rows = []
    for recipe, part in fidelity.groupby("recipe", sort=False):
        loss = stats.interval(1.0 - part["cosine"].to_numpy(dtype=float))
        kept, n = int(part["nn_agree"].sum()), len(part)
        low, high = stats.wilson(kept, n)
        rows.append({"recipe": recipe,
                     "1 - cosine to fp32": f"{loss.mean:.2g} [{loss.low:.2g}, {loss.high:.2g}]",
                     "lowest cosine": f"{part['cosine'].min():.4f}",
                     "nearest neighbour kept (%)": f"{100 * kept / n:.1f} [{100 * low:.1f}, "
                                                   f"{100 * high:.1f}]",
                     "sentences": n})
    return pd.DataFrame(rows)


def facts(table: pd.DataFrame, grid: pd.DataFrame, inv: pd.DataFrame, flops: dict[str, int],
          sizes: dict[str, int], fidelity: pd.DataFrame) -> dict[str, str]:
    """The numbers the prose glues, as text (Q-6's fidelity per recipe of `rules.JUDGED` and
    `rules.CONTRAST`, sizes 'fp32' and 'int8' for the judged recipe)."""
    s = quality_summary(table).set_index("config")
    out: dict[str, str] = {}
    for config, key in (("W4 asym g32", "asym32"), ("W4 sym g32", "sym32"),
                        ("W4 sym g192", "sym192"), ("W4 Q4_1-grid g32", "grid32"),
                        ("W8 per-channel", "w8"), ("W8A8 per-tensor static", "static"),
                        ("W8A8 per-tensor dynamic", "dyn"), ("W8A8 per-token", "token"),
                        ("LLM.int8 |x|>6", "split"), ("SmoothQuant a=0.5", "sq05")):
        if config in s.index:
            out[f"kl_{key}"] = sig2(s.loc[config, "kl_mean"])
            out[f"ppl_{key}"] = f"{s.loc[config, 'ppl_change_mean']:+.2g} %"
        else:  # a profile that leaves the configuration out
            out[f"kl_{key}"] = out[f"ppl_{key}"] = "(not run)"
    out["ppl_fp32"] = f"{table.groupby('window')['ppl_ref'].first().mean():.2f}"
    linear = grid[grid["kind"].str.endswith("proj")]
    out["grid_max_distinct"] = str(int(linear["max_distinct"].max()))
    share = (linear["share_le16"] * linear["blocks"]).sum() / linear["blocks"].sum()
    out["grid_share"] = f"{100 * share:.4g} %"
    out["grid_blocks"] = f"{int(linear['blocks'].sum()):,}"
    integer = inv[inv["integer"]]
    out["q6_int_modules"] = str(int(integer["count"].sum()))
    out["q6_int_param_share"] = f"{100 * integer['parameter_share'].sum():.0f} %"
    out["q6_flop_share"] = f"{100 * flops['integer'] / flops['total']:.1f} %"
    out["q6_size_fp32"] = f"{sizes['fp32'] / 2**20:.1f} MiB"
    out["q6_size_int8"] = f"{sizes['int8'] / 2**20:.1f} MiB"
    out["q6_size_ratio"] = f"{sizes['fp32'] / sizes['int8']:.2f}"
    for recipe, key in ((rules.JUDGED, "q6"), (rules.CONTRAST, "q6_def")):
        part = fidelity[fidelity["recipe"] == recipe]
        if part.empty:  # a table without the contrast
            for name in ("cos_min", "cos_mean", "nn_agree", "nn_interval"):
                out[f"{key}_{name}"] = "(not run)"
            continue
        kept, n = int(part["nn_agree"].sum()), len(part)
        low, high = stats.wilson(kept, n)
        out[f"{key}_cos_min"] = f"{part['cosine'].min():.4f}"
        out[f"{key}_cos_mean"] = f"{part['cosine'].mean():.4f}"
        out[f"{key}_nn_agree"] = f"{100 * kept / n:.0f} %"
        out[f"{key}_nn_interval"] = f"{100 * low:.0f}-{100 * high:.0f} %"
        out["q6_sentences"] = str(n)
    return out
