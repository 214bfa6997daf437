"""Chapter 07's figures, display table and glued prose, from the tidy tables of
`precisionlab.study.experiments.size`: presentation only, no measurement.

Figures are signed with the `hardware` line that measured them; the caller shows them.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from precisionlab.study import plotting
from precisionlab.study.designs import SIM_INT8, TORCHAO_EAGER


def stored_table(summary: pd.DataFrame, accuracy: pd.DataFrame) -> pd.DataFrame:
    """The size-and-accuracy table: file kB, bytes over fp32, accuracy (%) and its paired
    change from fp32 in pp with the 95 % interval (`summary`, `accuracy` as in `stored_texts`)."""
    table = summary.assign(
        file_kB=summary.file_bytes / 1e3, accuracy_pct=100 * accuracy["mean"],
        change_pp=[f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]" for m, lo, hi in zip(
            summary.change_pp, summary.change_low_pp, summary.change_high_pp, strict=True)])
    return table[["file_kB", "bytes_vs_fp32", "accuracy_pct", "change_pp"]].round(3)


def plot_stored(summary: pd.DataFrame, accuracy: pd.DataFrame, hidden: Sequence[int],
                hardware: str) -> Figure:
    """Test accuracy (mean and 95 % interval over seeds, NaN runs counted in the legend)
    against the saved file size, one point per stored format."""
    fig, ax = plotting.figure(width=7, height=4)
    for i, (name, row) in enumerate(accuracy.iterrows()):
        err = [[100 * (row["mean"] - row.low)], [100 * (row.high - row["mean"])]]
        label = f"{name} ({int(row.nan_runs)} NaN runs)" if row.nan_runs else name
        ax.errorbar(summary.file_bytes[name] / 1e3, 100 * row["mean"], yerr=np.nan_to_num(err),
                    fmt="o", capsize=4, color=plotting.PALETTE[i % len(plotting.PALETTE)],
                    label=label)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda val, _: f"{val:g}"))
    ax.xaxis.set_minor_formatter(
        mticker.FuncFormatter(lambda val, _: f"{val:g}" if str(val)[0] in "1235" else ""))
    ax.set_xlabel("saved state_dict size (kB, log scale)")
    ax.set_ylabel("test accuracy (%), mean and 95 % interval")
    ax.set_title(f"MLP {'-'.join(map(str, [40, *hidden, 10]))} on MNIST-1D, stored in six formats")
    ax.legend(fontsize=8, loc="lower right")
    return plotting.sign(fig, hardware)


def plot_latency(latency: pd.DataFrame, widths: Sequence[int], batches: Sequence[int],
                 hardware: str) -> Figure:
    """Speed-up over fp32 eager against MLP width, one panel per batch size (log-log)."""
    fig, axes = plotting.figure(ncols=len(batches), width=4.2 * len(batches), height=4,
                                sharey=True)
    axes = np.atleast_1d(axes)
    names = list(dict.fromkeys(latency.candidate))
    for ax, batch in zip(axes, batches, strict=True):
        for i, name in enumerate(names):
            d = latency[(latency.batch == batch) & (latency.candidate == name)]
            ax.plot(d.width, d.speedup_vs_fp32, marker="o", label=name,
                    color=plotting.PALETTE[i % len(plotting.PALETTE)],
                    linestyle="--" if name == "fp32" else "-")
        ax.axhline(2, color="#999999", linewidth=0.8, linestyle=":")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.set_xlabel("MLP hidden width (units)")
        ax.set_title(f"batch {batch}")
    axes[0].set_ylabel("speed-up over fp32 eager (x, log scale)")
    axes[-1].legend(fontsize=8)
    return plotting.sign(fig, hardware)



def stored_texts(summary: pd.DataFrame, accuracy: pd.DataFrame, backend: str) -> dict[str, str]:
    """Glue names -> text for the size-and-accuracy section (`summary`: `accuracy_changes`
    indexed by format; `accuracy`: `stats.summarize` of accuracy by format, same index)."""
    s, backend_fmt = summary, f"int8 ({backend} kernels)"
    ch = s.change_pp.drop("fp32")
    noisy = [f for f in ch.index if s.beyond_noise[f]]
    return {
        "kB_fp32": f"{s.file_bytes['fp32'] / 1e3:.0f} kB",
        "ratio_bf16": f"{s.bytes_vs_fp32['bf16']:.2f}",
        "ratio_int8": f"{s.bytes_vs_fp32['int8']:.3f}",
        "ratio_int4": f"{s.bytes_vs_fp32['int4']:.3f}",
        "ratio_backend": f"{s.bytes_vs_fp32[backend_fmt]:.3f}",
        "int8_vs_bf16": f"{s.file_bytes['bf16'] / s.file_bytes['int8']:.2f}",
        "int8_vs_fp32": f"{s.file_bytes['fp32'] / s.file_bytes['int8']:.2f}",
        "acc_fp32": f"{100 * accuracy['mean']['fp32']:.1f} %",
        "acc_change_16": f"{ch[['bf16', 'fp16']].abs().max():.2f}",
        "acc_change_8": f"{ch[['int8', backend_fmt]].abs().max():.2f}",
        "acc_change_4": f"{ch['int4']:+.2f}",
        "acc_noise": (f"The change is beyond noise (95 % interval excludes 0) for "
                      f"{', '.join(noisy)}"
                      if noisy else "No change is beyond noise: every 95 % interval includes 0"),
    }


def latency_texts(latency: pd.DataFrame, sizes: pd.DataFrame, batches: Sequence[int], int8: str,
                  int8_timed: bool) -> dict[str, str]:
    """Glue names -> text for the speed section, at the widest width timed and over all."""
    big = int(latency.width.max())
    lat_big = latency[latency.width == big].set_index(["batch", "candidate"]).speedup_vs_fp32
    bf = latency[latency.candidate == "bf16"].speedup_vs_fp32
    size_big = sizes[sizes.width == big].set_index("format").bytes_vs_fp32
    texts = {"big": str(big), "bf16_range": f"{bf.min():.2f} to {bf.max():.2f}",
             "bf16_speed": " and ".join(f"{lat_big[(b, 'bf16')]:.2f}x at batch {b}"
                                        for b in batches),
             "size_big_int8": f"{size_big.get('int8 (ours)', float('nan')):.4f}"}
    if not int8_timed:
        return texts | dict.fromkeys(("int8_speed", "sim_speed", "torchao_speed", "int8_range"),
                                     "not timed on CUDA")
    ta = latency[latency.candidate == TORCHAO_EAGER].speedup_vs_fp32
    i8 = latency[latency.candidate == int8].speedup_vs_fp32
    sim = latency[latency.candidate == SIM_INT8].speedup_vs_fp32
    return texts | {
        "int8_speed": " and ".join(f"{lat_big[(b, int8)]:.2f}x at batch {b}" for b in batches),
        "sim_speed": f"{sim.max():.2f}",
        "torchao_speed": f"{ta.min():.2f} to {ta.max():.2f}" if len(ta) else "not timed",
        "int8_range": f"{i8.min():.2f} to {i8.max():.2f}"}


def widest_lines(latency: pd.DataFrame, sizes: pd.DataFrame, int8: str, int8_timed: bool,
                 claimed: float) -> list[str]:
    """At the widest MLP: int8's file bytes over fp32's, and its speed-up at batch 64 (or the
    largest batch timed) beside the `claimed` gain."""
    big = int(latency.width.max())
    batches = sorted(latency.batch.unique())
    batch = 64 if 64 in batches else batches[-1]
    ratio = sizes[sizes.width == big].set_index("format").bytes_vs_fp32.get("int8 (ours)")
    lines = [f"int8 file bytes / fp32 at width {big}: {ratio:.4f} (one-byte floor 0.25)"]
    if int8_timed:
        s = latency.set_index(["width", "batch", "candidate"]).speedup_vs_fp32[(big, batch, int8)]
        lines.append(f"{int8} speed-up over fp32 at batch {batch}, width {big}: {s:.2f}x "
                     f"({'at least' if s >= claimed else 'below'} the claim's {claimed:g}x)")
    return lines


def counts_table(counts: pd.DataFrame) -> str:
    """Q-5's exact counts as fixed text (the same on every machine): per format, the weights and
    biases, what `model.parameters()` sees, the stored elements and bytes, and their dtypes."""
    c = counts.set_index("format")
    table = pd.DataFrame({
        "weights+biases": c.parameters, "model.parameters()": c.parameters_api,
        "stored elements": c.stored_elements, "stored bytes": c.stored_bytes,
        "bytes / fp32": [f"{b / c.stored_bytes['fp32']:.4f}" for b in c.stored_bytes],
        "stored dtypes": c.stored_dtypes})
    return table.to_string()


def counts_texts(counts: pd.DataFrame) -> dict[str, str]:
    """Glue names -> text for the Q-5 section."""
    c = counts.set_index("format")
    base = int(c.parameters["fp32"])
    others = c.drop("fp32")
    ao = [f for f in c.index if "torch.ao" in f or "torchao" in f]
    return {
        "q5_params": str(base),
        "q5_same": ("every one of them" if others.parameters.eq(base).all()
                    else ", ".join(f for f in others.index if others.parameters[f] == base)),
        "q5_bytes": ", ".join(f"{f} {c.stored_bytes[f] / c.stored_bytes['fp32']:.3f}"
                              for f in others.index),
        "q5_int4_elements": (str(int(c.stored_elements["int4"])) if "int4" in c.index
                             else "not stored"),
        "q5_api_ours": str(int(c.parameters_api.get("int8", 0))),
        "q5_api_ao": str(int(c.parameters_api[ao[0]])) if ao else "not built",
    }
