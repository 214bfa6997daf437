"""Chapter 8's figures, tables and glued sentences, from the tidy tables of
`precisionlab.study.experiments.speed`: presentation only, no measurement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator

from precisionlab import bench
from precisionlab.study import plotting, results
from precisionlab.study.claims import sig2, span
from precisionlab.study.designs import bytes_over_32

MiB = 2**20
FMT_COLOR = {f: plotting.FORMAT_COLORS[f] for f in bench.MATMUL_DTYPES}
FMT_COLOR["int8"] = "#8C6D00"  # the palette's yellow is unreadable as a line on white
FMT_LS = {"fp32": "-", "bf16": "--", "fp16": ":", "int8": "-."}  # roofs that coincide stay apart
PREC_COLOR = {
    "32-true": FMT_COLOR["fp32"],
    "bf16-mixed": FMT_COLOR["bf16"],
    "16-mixed": FMT_COLOR["fp16"],
}
PREC_MARK = {"32-true": "o", "bf16-mixed": "s", "16-mixed": "^"}
PREC_MS = {"32-true": 8, "bf16-mixed": 6.5, "16-mixed": 4.5}  # coinciding markers stay visible


def x_of(r: float) -> str:
    return f"{r:.2f}x"


def plain_log_y(ax) -> None:
    """Log y axis labelled 1, 2, 5, 10, ... (plain numbers, not powers of ten)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda val, _: f"{val:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda val, _: ""))


def fig_matmul(
    square: pd.DataFrame, formats: Sequence[str], sizes: Sequence[int], hardware: str
) -> Figure:
    """Throughput of square products per format against size, with interquartile bars."""
    fig, ax = plotting.figure(width=7, height=4.2)
    for fmt in formats:
        s = square[square.fmt == fmt]
        if s.empty:
            continue
        ax.errorbar(
            s.rows,
            s["median"],
            yerr=[s["median"] - s.q25, s.q75 - s["median"]],
            marker="o",
            ms=5,
            capsize=3,
            color=FMT_COLOR[fmt],
            label=fmt + (" (GOP/s)" if fmt == "int8" else " (GFLOP/s)"),
        )
    ax.set_xscale("log", base=2)
    plain_log_y(ax)
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.minorticks_off()
    ax.set_xlabel("matrix size n (n x n times n x n)")
    ax.set_ylabel("throughput (GFLOP/s; int8: GOP/s)")
    ax.legend(fontsize=8)
    plotting.sign(fig, hardware)
    return fig


def matmul_table(square: pd.DataFrame, formats: Sequence[str], peak: pd.Series) -> pd.DataFrame:
    """Median GFLOP/s (int8: GOP/s) per size and format, and each format's ratio to fp32."""
    tbl = square.pivot(index="rows", columns="fmt", values="median").reindex(
        columns=[f for f in formats if f in peak]
    )
    show = tbl.map(lambda x: f"{x:.0f}" if pd.notna(x) else "skipped")
    for fmt in tbl.columns:
        if fmt != "fp32":
            show[f"{fmt} / fp32"] = (tbl[fmt] / tbl["fp32"]).map(
                lambda x: f"{x:.2f}" if pd.notna(x) else ""
            )
    show.index.name = "n"
    show.columns.name = "GFLOP/s (int8: GOP/s)"
    return show


def matmul_texts(
    square: pd.DataFrame,
    mv: pd.DataFrame,
    peak: pd.Series,
    bandwidth: float,
    formats: Sequence[str],
    copy_mib: int,
    matvec_n: int,
) -> dict[str, str]:
    """The glued sentences of the matrix-product section."""
    out = {}
    n_top = max(square[square.fmt == "fp32"].rows)
    at_top = square[square.rows == n_top].set_index("fmt")["median"]
    ratio_top = {f: at_top[f] / at_top["fp32"] for f in at_top.index if f != "fp32"}
    {f: peak[f] / peak["fp32"] for f in peak.index if f != "fp32"}
    out["n_top"] = str(n_top)
    out["peak_list"] = "; ".join(
        f"{f} {peak[f]:.0f} {'GOP/s' if f == 'int8' else 'GFLOP/s'}" for f in formats if f in peak
    )
    out["ratio_top_list"] = (
        ", ".join(f"{f} {x_of(r)}" for f, r in ratio_top.items()) or "no other format"
    )
    out["bandwidth"] = f"{bandwidth:.1f} GB/s"
    out["copy_mib_text"] = str(copy_mib)
    ridge = peak["fp32"] / bandwidth
    ai_min = square.intensity.min()
    out["square_bound_text"] = (
        f"{ai_min:.0f} FLOP/byte or more at every size here, right of the ridge point where the "
        "fp32 roofs meet "
        f"({ridge:.0f} FLOP/byte): square products are compute-bound, and for them only faster "
        "arithmetic helps"
        if ai_min > ridge
        else f"from {ai_min:.0f} FLOP/byte at the smallest size here; the fp32 roofs meet at "
             f"{ridge:.0f} FLOP/byte, so the "
        "smallest products lie left of that ridge point, where bandwidth can limit them, and the "
        "larger ones right of it, "
        "where only faster arithmetic helps"
    )
    out["matvec_n_text"] = str(matvec_n)
    if len(mv):
        mvs = mv.set_index("fmt")
        out["mv_list"] = "; ".join(
            f"{f} {mvs.loc[f, 'median']:.1f} {'GOP/s' if f == 'int8' else 'GFLOP/s'} "
            f"({mvs.loc[f, 'gb_per_s']:.1f} GB/s of matrix and vectors)"
            for f in mvs.index
        )
        out["mv_ratio"] = (
            (
                ", ".join(
                    f"{f} {x_of(mvs.loc[f, 'median'] / mvs.loc['fp32', 'median'])}"
                    for f in mvs.index
                    if f != "fp32"
                )
                or "no other format"
            )
            if "fp32" in mvs.index
            else "not comparable (fp32 was skipped)"
        )
    else:
        out["mv_list"] = "none (every format was skipped)"
        out["mv_ratio"] = "not measured"
    return out


def fig_roofline(
    square: pd.DataFrame,
    mv: pd.DataFrame,
    peak: pd.Series,
    bandwidth: float,
    formats: Sequence[str],
    matvec_n: int,
    hardware: str,
) -> Figure:
    """Roofline from this machine's measurements: copy bandwidth and each format's peak."""
    fig, ax = plotting.figure(width=7.2, height=4.6)
    xs = np.logspace(-1.5, np.log10(max(square.intensity.max(), 10) * 3), 200)
    top = bandwidth * xs <= peak.max()
    ax.plot(
        xs[top],
        bandwidth * xs[top],
        color="#555555",
        lw=1.2,
        ls="--",
        label=f"memory roof: copy bandwidth ({bandwidth:.1f} GB/s) x I",
    )
    for fmt in formats:
        if fmt not in peak:
            continue
        roof = np.minimum(bandwidth * xs, peak[fmt])
        ax.plot(
            xs[bandwidth * xs >= peak[fmt]],
            roof[bandwidth * xs >= peak[fmt]],
            color=FMT_COLOR[fmt],
            lw=1.3,
            ls=FMT_LS[fmt],
        )
        s = square[square.fmt == fmt]
        ax.scatter(
            s.intensity,
            s["median"],
            color=FMT_COLOR[fmt],
            marker="o",
            s=28,
            zorder=3,
            label=f"{fmt}: square n x n (roof: its measured peak)",
        )
        if len(mv) and fmt in set(mv.fmt):
            m = mv[mv.fmt == fmt]
            ax.scatter(
                m.intensity,
                m["median"],
                color=FMT_COLOR[fmt],
                marker="^",
                s=50,
                edgecolor="black",
                lw=0.6,
                zorder=4,
            )
    ax.scatter(
        [],
        [],
        marker="^",
        color="#999999",
        edgecolor="black",
        lw=0.6,
        label=f"matrix-vector, n = {matvec_n}",
    )
    ax.set_xscale("log")
    plain_log_y(ax)
    ax.set_xlabel("arithmetic intensity I (operations per byte of memory traffic)")
    ax.set_ylabel("attained throughput (GFLOP/s; int8: GOP/s)")
    ax.legend(fontsize=7, loc="upper left")
    plotting.sign(fig, hardware)
    return fig


def kernel_texts(kernels: pd.DataFrame, threads: int, on_cuda: bool) -> dict[str, str]:
    """The glued sentences on kernels, instruction rates and thread scaling."""
    out = {}
    k = kernels.set_index("format")
    lines = []
    if not on_cuda:
        ipc32 = k.loc["fp32", "instructions / cycle"]
        if np.isnan(ipc32):
            fp32_text = "The clock is unknown here, so fp32's rate per cycle cannot be given."
        elif ipc32 >= 1.6:
            fp32_text = (
                f"On one thread, fp32 sustains {ipc32:.2f} FMA instructions per cycle at the "
                "reported clock. A core "
                "with two FMA pipes can start at most two per cycle (a value above 2 means the "
                "core runs above its "
                "reported clock), so the fp32 kernel is at or near its peak: there is little room "
                "for a "
                "low-precision format to look fast merely because fp32 is slow."
            )
        else:
            fp32_text = (
                f"On one thread, fp32 sustains {ipc32:.2f} FMA instructions per cycle at the "
                "reported clock, below "
                "the two a core with two FMA pipes can start: the fp32 kernel leaves headroom, "
                "and part of any "
                "low-precision gain can be that headroom rather than the narrower format."
            )
        out["fp32_text"] = fp32_text
        for f in k.index:
            if f == "fp32":
                continue
            r = k.loc[f, "peak / fp32 peak"]
            width = k.loc[f, "x fp32 FMA"]
            if np.isnan(width):
                lines.append(
                    f"{f} reached {x_of(r)} fp32's peak with no dedicated instruction on this CPU"
                )
            else:
                ipc = k.loc[f, "instructions / cycle"]
                lines.append(
                    f"{f} reached {x_of(r)} fp32's peak; its instruction does {width:g}x the work "
                    "of an FMA, but on "
                    f"one thread its kernel issues {ipc:.2f} "
                    f"{k.loc[f, 'widest instruction here'].split()[0]} per "
                    f"cycle against fp32's {ipc32:.2f} FMAs, {100 * ipc / ipc32:.0f} % of fp32's "
                    "instruction rate"
                )
        scal = k.loc["fp32", f"{threads} / 1 threads"] if threads > 1 else float("nan")
        if threads == 1:
            scaling_text = "With one thread there is nothing to compare."
        elif scal < 1 + 0.3 * (threads - 1):
            scaling_text = (
                f"{threads} threads gave only {x_of(scal)} the single-thread fp32 throughput: the "
                "threads share "
                "one core's vector units (a VM's vCPUs can be two hardware threads of one core), "
                "or another "
                "process holds a core."
            )
        else:
            scaling_text = (
                f"{threads} threads gave {x_of(scal)} the single-thread fp32 throughput, so each "
                "thread has a "
                "core of its own to a good approximation."
            )
        out["gain_lines"] = "; ".join(lines) + "." if lines else "only fp32 was measured."
        out["kernel_list"] = "; ".join(
            f"{f}: {k.loc[f, 'kernel PyTorch ran'] or 'no MKL or oneDNN kernel (ATen native)'}"
            for f in k.index
        )
        out["scaling_text"] = scaling_text
    else:
        out["fp32_text"] = "On a GPU the per-cycle analysis of CPU instructions does not apply."
        out["gain_lines"] = (
            "; ".join(
                f"{f} reached {x_of(k.loc[f, 'peak / fp32 peak'])} fp32's peak"
                for f in k.index
                if f != "fp32"
            )
            + "."
        )
        out["scaling_text"] = "On a GPU the CPU thread count plays no part."
        out["kernel_list"] = "cuBLAS kernels on the GPU, not traced here"
    return out


def fig_step(
    speed: pd.DataFrame,
    mixed: Sequence[str],
    mlp_widths: Sequence[int],
    tf_depths: Sequence[int],
    mlp_batch: int,
    tf_d_model: int,
    tf_batch: int,
    tf_context: int,
    bar: float,
    hardware: str,
) -> Figure:
    """Step speed-up over 32-true per model size: median over seeds, bars from slowest to fastest "
    "seed."""
    fig, axes = plotting.figure(ncols=2, width=10, height=4.2, sharey=True)
    for ax, family in zip(axes, ["MLP", "transformer"], strict=False):
        for p in mixed:
            s = speed[(speed.family == family) & (speed.precision == p)]
            if s.empty:
                continue
            ax.errorbar(
                s["size"],
                s.speedup,
                yerr=[s.speedup - s.lo, s.hi - s.speedup],
                marker=PREC_MARK[p],
                ms=PREC_MS[p],
                capsize=3,
                color=PREC_COLOR[p],
                label=p,
            )
        ax.axhline(1, color=PREC_COLOR["32-true"], lw=1.2, label="32-true (baseline)")
        ax.axhline(bar, color="#555555", lw=1, ls="--", label=f"{bar:g}x: the verdict rule's bar")
        sz = mlp_widths if family == "MLP" else tf_depths
        ax.set_xscale("log", base=2)
        ax.set_xticks(sz, [str(x) for x in sz])
        ax.minorticks_off()
    ax0, ax1 = axes
    ax0.set_xlabel(f"MLP hidden width w (64-w-w-10, batch {mlp_batch})")
    ax1.set_xlabel(f"transformer blocks (width {tf_d_model}, {tf_batch} x {tf_context} tokens)")
    ax0.set_ylabel("step speed-up over 32-true (x, higher is faster)")
    ax0.set_title("MLP")
    ax1.set_title("Character transformer")
    handles, labels = ax0.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=4, fontsize=8, bbox_to_anchor=(0.5, 1.0))
    plotting.sign(fig, hardware)
    fig.tight_layout(rect=(0, 0.03, 1, 0.9))
    return fig


def step_table(speed: pd.DataFrame, info: pd.DataFrame, mixed: Sequence[str]) -> pd.DataFrame:
    """Per model size: parameters, matmul GFLOP per step, 32-true's step time, and each mixed "
    "precision's speed-up [slowest, fastest seed]."""
    tab = speed.pivot_table(
        index=["family", "size"], columns="precision", values=["speedup", "lo", "hi"], sort=False
    )
    out = info.set_index(["family", "size"]).copy()
    out["params"] = out.params.map("{:,}".format)
    out["matmul GFLOP / step"] = (out.pop("matmul_flops") / 1e9).map("{:.3g}".format)
    base = speed[speed.precision == "32-true"].set_index(["family", "size"])
    out["32-true ms / step"] = (1000 * base.s_per_step).map("{:.1f}".format)
    out["32-true GFLOP/s"] = base.attained_gflops.map("{:.0f}".format)
    for p in mixed:
        if ("speedup", p) in tab:
            out[f"{p} speed-up"] = [
                f"{a:.2f} [{b:.2f}, {c:.2f}]" if pd.notna(a) else "skipped"
                for a, b, c in zip(tab["speedup", p], tab["lo", p], tab["hi", p], strict=False)
            ]
    return out


def step_texts(speed: pd.DataFrame, peak: pd.Series, mixed: Sequence[str]) -> dict[str, str]:
    """The glued sentences of the training-step section."""
    out = {}
    base = speed[speed.precision == "32-true"].set_index(["family", "size"])
    peak_ratio = {f: peak[f] / peak["fp32"] for f in peak.index if f != "fp32"}
    sp = speed[speed.precision != "32-true"]
    best = sp.loc[sp.speedup.idxmax()]
    worst = sp.loc[sp.speedup.idxmin()]
    label = lambda r: f"{'width' if r.family == 'MLP' else 'depth'} {r['size']} {r.family}"  # noqa: E731
    out["step_best"] = f"{x_of(best.speedup)} ({best.precision}, {label(best)})"
    out["step_worst"] = f"{x_of(worst.speedup)} ({worst.precision}, {label(worst)})"
    out["step_by_prec"] = "; ".join(
        f"{p}: {span(sp[sp.precision == p].speedup, lambda x: f'{x:.2f}')}x"
        for p in mixed
        if (sp.precision == p).any()
    )
    out["train_share"] = f"{100 * base.attained_gflops.max() / peak['fp32']:.0f} %"
    out["top_matmul_bf16"] = x_of(peak_ratio.get("bf16", float("nan")))
    out["top_matmul_fp16"] = x_of(peak_ratio.get("fp16", float("nan")))
    return out


def fig_memory(
    mem: pd.DataFrame,
    precisions: Sequence[str],
    mlp_widths: Sequence[int],
    tf_depths: Sequence[int],
    hardware: str,
) -> Figure:
    """Step memory by kind as a fraction of 32-true's total, per model size and precision."""
    PARTS = [
        ("weight_bytes", "weights (fp32)", "#0072B2"),
        ("grad_bytes", "gradients (fp32)", "#56B4E9"),
        ("optimizer_state_bytes", "Adam state (fp32)", "#999999"),
        ("activation_bytes", "saved activations", "#D55E00"),
    ]
    HATCH = {"32-true": "", "bf16-mixed": "//", "16-mixed": ".."}
    fig, axes = plotting.figure(
        ncols=2,
        width=11,
        height=4.4,
        sharey=True,
        gridspec_kw={"width_ratios": [len(mlp_widths), len(tf_depths)]},
    )
    for ax, family in zip(axes, ["MLP", "transformer"], strict=False):
        sub = mem[mem.family == family]
        sz = mlp_widths if family == "MLP" else tf_depths
        ticks = []
        for i, size in enumerate(sz):
            g = sub[sub["size"] == size].set_index("precision")
            ref = g.loc["32-true", "total_bytes"]
            for j, p in enumerate(precisions):
                x = i * (len(precisions) + 1) + j
                if p not in g.index:
                    continue
                bottom = 0.0
                for col, _name, color in PARTS:
                    h = g.loc[p, col] / ref
                    ax.bar(
                        x,
                        h,
                        bottom=bottom,
                        color=color,
                        hatch=HATCH[p],
                        edgecolor="white",
                        lw=0.5,
                        width=0.9,
                    )
                    bottom += h
            ticks.append((i * (len(precisions) + 1) + (len(precisions) - 1) / 2, str(size)))
        ax.set_xticks([t[0] for t in ticks], [t[1] for t in ticks])
        ax.axhline(1, color="#333333", lw=0.8)
    ax0, ax1 = axes
    ax0.set_xlabel("MLP hidden width w (bars: " + ", ".join(precisions) + ")")
    ax1.set_xlabel("transformer blocks")
    ax0.set_ylabel("step memory / 32-true total (fraction)")
    handles = [Patch(facecolor=c, label=n) for _, n, c in PARTS] + [
        Patch(facecolor="white", edgecolor="#333333", hatch=HATCH[p], label=p) for p in precisions
    ]
    fig.legend(handles=handles, loc="upper center", ncol=4, fontsize=8, bbox_to_anchor=(0.5, 1.0))
    plotting.sign(fig, hardware)
    fig.tight_layout(rect=(0, 0.03, 1, 0.86))
    return fig


def memory_table(mem: pd.DataFrame, on_cuda: bool) -> pd.DataFrame:
    """Counted bytes per model size and precision, as text, with the ratios to 32-true."""
    # Exact byte counts, of what autocast saves on this device (CUDA keeps softmax, norms in fp32).
    mem_ratio = []
    for (family, size), g in mem.groupby(["family", "size"], sort=False):
        g = g.set_index("precision")
        ref = g.loc["32-true"]
        for p in g.index:
            act = g.loc[p, "activation_bytes"]
            mem_ratio.append(
                {
                    "family": family,
                    "size": size,
                    "precision": p,
                    "weights+grads+Adam (MiB)": f"{g.loc[p, 'static_bytes'] / MiB:.4g}",
                    "saved activations (MiB)": f"{g.loc[p, 'activation_bytes'] / MiB:.4g}",
                    "activations / 32-true": f"{act / ref.activation_bytes:.3f}",
                    "total / 32-true": f"{g.loc[p, 'total_bytes'] / ref.total_bytes:.3f}",
                    **(
                        {"CUDA peak (MiB)": f"{g.loc[p, 'cuda_peak_bytes'] / MiB:.4g}"}
                        if on_cuda
                        else {}
                    ),
                }
            )
    mem_ratio = pd.DataFrame(mem_ratio)
    return mem_ratio


def memory_texts(mem: pd.DataFrame, cmp: pd.DataFrame) -> dict[str, str]:
    """The glued sentences of the memory section."""
    out = {}
    per_size = cmp.groupby(["family", "size"], sort=False).agg(
        act=("act", "max"), tot=("tot", "max")
    )
    _falls, rises = per_size[per_size.act < 1], per_size[per_size.act >= 1]
    out["mem_family_text"] = "; ".join(
        f"{family}: saved activations {span(c.act)}x and the whole step {span(c.tot)}x of `32-true`"
        for family, c in cmp.groupby("family", sort=False)
    )
    size_name = lambda family, size: f"width {size}" if family == "MLP" else f"{size} blocks"  # noqa: E731
    out["rise_text"] = (
        f"At {', '.join(f'{f} {size_name(f, z)}' for f, z in rises.index)} the saved activations "
        "*rose* "
        f"with mixed precision, to {span(rises.act)}x."
        if len(rises)
        else "At no model size did the saved activations rise."
    )
    share = mem[mem.precision == "32-true"].assign(s=lambda d: d.activation_bytes / d.total_bytes)
    out["act_share"] = f"{span(100 * share.s, lambda x: f'{x:.0f}')} %"
    return out


def fig_accum(
    acc: pd.DataFrame, accum_ks: Sequence[int], tf_batch: int, on_cuda: bool, hardware: str
) -> Figure:
    """Peak saved activations of an accumulated step per precision and k, against the fixed fp32 "
    "state."""
    fig, ax = plotting.figure(width=6.5, height=4.0)
    for p in acc.precision.unique():
        g = acc[acc.precision == p]
        ax.plot(
            g.k,
            g.activation_bytes / MiB,
            marker=PREC_MARK[p],
            ms=PREC_MS[p],
            color=PREC_COLOR[p],
            label=f"{p}: saved activations",
        )
        if on_cuda:
            ax.plot(
                g.k,
                g.cuda_peak_bytes / MiB,
                marker=PREC_MARK[p],
                ls="-.",
                color=PREC_COLOR[p],
                label=f"{p}: CUDA max allocated",
            )
    g0 = acc[acc.precision == "32-true"]
    ax.plot(
        g0.k,
        g0.activation_bytes.iloc[0] / g0.k / MiB,
        color="#000000",
        ls=":",
        lw=1.2,
        label="1/k of 32-true at k = 1",
    )
    ax.plot(
        g0.k,
        g0.static_bytes / MiB,
        color="#777777",
        ls="--",
        lw=1.5,
        label="weights + grads + Adam state (fp32)",
    )
    ax.set_xscale("log", base=2)
    plain_log_y(ax)
    ax.set_xticks(accum_ks, [str(k_) for k_ in accum_ks])
    ax.minorticks_off()
    ax.set_xlabel(f"accumulation steps k ({tf_batch} sequences per optimizer step)")
    ax.set_ylabel("memory (MiB)")
    ax.legend(fontsize=7)
    plotting.sign(fig, hardware)
    return fig


def accum_texts(acc: pd.DataFrame, accum_ks: Sequence[int], mixed: Sequence[str]) -> dict[str, str]:
    """The glued sentences of the accumulation section."""
    out = {}
    a = acc.set_index(["precision", "k"]).activation_bytes
    kmax = max(accum_ks)
    out["acc_32_ratio"] = sig2(a["32-true", kmax] / a["32-true", 1])
    out["kmax_text"] = str(kmax)
    low = [p for p in mixed if (p, kmax) in a.index]
    out["acc_mixed_ratio"] = (
        "; ".join(f"{p}: {sig2(a[p, kmax] / a['32-true', 1])}" for p in low) or "not measured"
    )
    return out


def overhead_texts(overhead: pd.DataFrame, bar: float) -> dict[str, str]:
    """The glued sentences on the Trainer's overhead."""
    out = {}
    trainer_ratio = overhead[overhead.candidate == "Trainer"].set_index("precision")[
        "ratio_to_plain loop"
    ]
    out["overhead_text"] = "; ".join(
        f"{trainer_ratio[p]:.3f} at `{p}`" for p in trainer_ratio.index
    )
    diff = float(trainer_ratio.max() - trainer_ratio.min())
    out["overhead_diff_text"] = (
        f"The Trainer's overhead differs between the two precisions by {100 * diff:.0f} % of a "
        "step, which is how far "
        "its bookkeeping could shift the precision ratios above"
        + (
            f"; the verdict's bar of {bar:g}x lies far beyond that."
            if diff < 0.2
            else ": enough to matter, so read the step ratios with that margin."
        )
    )
    return out


def cell(x: object) -> str:
    """A kernel-table entry as text: strings as they are, '-' for NaN, numbers to 2-3 digits."""
    if isinstance(x, str):
        return x
    return "-" if pd.isna(x) else (f"{x:.0f}" if abs(x) >= 10 else f"{x:.2f}")


LOW_PRECISION_FLAGS = ("avx512_bf16", "avx512_fp16", "avx512_vnni", "avx_vnni", "amx_bf16",
                       "amx_int8")


def machine_texts(machine: pd.DataFrame, threads: int) -> tuple[pd.Series, dict[str, bool],
                                                                 dict[str, str]]:
    """From `bench.describe_machine`: its facts by item, the CPU flags, and the glued sentences."""
    facts = machine.set_index("item").value
    flags = {item[5:]: val == "yes" for item, val in facts.items() if item.startswith("flag ")}
    have = [f for f in LOW_PRECISION_FLAGS if flags.get(f)]
    lack = [f for f in LOW_PRECISION_FLAGS if f != "avx_vnni" and not flags.get(f)]
    clock = facts["clock (MHz)"]
    return facts, flags, {
        "cpu_model": facts["CPU model"], "n_threads": str(threads),
        "isa_have": ", ".join(have) or "none of the low-precision extensions",
        "isa_lack": ", ".join(lack) or "none of them",
        "clock_mhz": f"{float(clock):.0f}" if clock != "?" else "unknown"}


# ResNet-50 v1.5 training for PyTorch as published by NVIDIA (DeepLearningExamples), not measured
PUBLISHED_GPU = pd.DataFrame([
    {"gpu": "A100 80GB", "baseline": "TF32", "baseline_img_s": 938, "amp_img_s": 2470},
    {"gpu": "V100 16GB", "baseline": "FP32", "baseline_img_s": 367, "amp_img_s": 1200},
])


def published_texts(on_cuda: bool) -> dict[str, str]:
    """The published GPU speed-ups, and whether this run's figures come from a GPU."""
    speedup = PUBLISHED_GPU.amp_img_s / PUBLISHED_GPU.baseline_img_s
    return {"pub_a100": x_of(speedup[0]), "pub_v100": x_of(speedup[1]),
            "device_text": "this run used the GPU named in the machine table, so the figures above "
            "are GPU measurements." if on_cuda else "this run had no GPU, so every figure above "
            "is a CPU measurement."}


def setup_texts(mlp_batch: int, mlp_widths: Sequence[int], tf_depths: Sequence[int],
                tf_d_model: int, tf_context: int, tf_batch: int, step_repeats: int,
                time_steps: int, n_seeds: int) -> dict[str, str]:
    """The glued description of the timed models and of the timing protocol."""
    return {"mlp_batch_text": str(mlp_batch),
            "mlp_widths_text": "{" + ", ".join(map(str, mlp_widths)) + "}",
            "tf_depths_text": ", ".join(map(str, tf_depths)),
            "tf_shape_text": f"width {tf_d_model}, {tf_context} characters of context, batches of "
                             f"{tf_batch} sequences",
            "step_repeats_text": str(step_repeats), "time_steps_text": str(time_steps),
            "n_seeds": str(n_seeds)}


def skipped_lines(skipped: pd.DataFrame) -> str:
    """What the too-slow guard left out of the matmul (columns fmt, rows, ...) or step timings
    (columns precision, family, ...), and why."""
    if "fmt" in skipped.columns:
        return ("Not timed:\n" + "\n".join(f"  {r.fmt} at {r.rows}x{r.inner}x{r.cols}: {r.reason}"
                                           for r in skipped.itertuples())
                if len(skipped) else "Every format was timed at every size.")
    return ("Not timed: " + "; ".join(
        f"{r.precision} {r.family} {r.size} (seed {r.seed}): {r.reason}"
        for r in skipped.itertuples()) if len(skipped)
        else "Every precision was timed at every size.")


# MP-17 and MP-21 --------------------------------------------------------------------------------
MP17_PARTS = (("static_bytes", "weights + grads + Adam state", "#0072B2"),
              ("activation_bytes", "saved activations", "#D55E00"),
              ("total_bytes", "whole step", "#333333"))


def mp17_ratios(mem: pd.DataFrame) -> pd.DataFrame:
    """Per model size and 16-bit precision: each kind of counted bytes over 32-true's."""
    return bytes_over_32(mem, [col for col, _, _ in MP17_PARTS])


def fig_mp17(mem: pd.DataFrame, hardware: str) -> Figure:
    """MP-17: per 16-bit precision, model state, saved activations and the whole step as a
    fraction of 32-true's bytes (median over model sizes, bars from the smallest to the largest)."""
    ratios = mp17_ratios(mem)
    precs = list(dict.fromkeys(ratios.precision))
    fig, ax = plotting.figure(width=7.5, height=4.2)
    width = 0.8 / len(MP17_PARTS)
    for j, (col, name, color) in enumerate(MP17_PARTS):
        g = ratios.groupby("precision", sort=False)[col]
        med, lo, hi = (g.median()[precs], g.min()[precs], g.max()[precs])
        x = np.arange(len(precs)) + (j - (len(MP17_PARTS) - 1) / 2) * width
        ax.bar(x, med, width=width * 0.95, color=color, label=name,
               yerr=[med - lo, hi - med], capsize=3, ecolor="#777777")
    ax.axhline(1, color="#333333", lw=0.8, ls="--")
    ax.axhline(0.5, color="#999999", lw=0.8, ls=":")
    ax.set_xticks(np.arange(len(precs)), precs)
    ax.set_xlabel("precision (mixed: fp32 weights and optimizer; true: all 16-bit)")
    ax.set_ylabel("counted bytes / 32-true bytes (ratio)")
    n = ratios.groupby(["family", "size"]).ngroups
    ax.set_title(f"Memory of one Adam step, {n} model sizes (bars: median, whiskers: range)")
    ax.legend(fontsize=8, loc="upper right")
    return plotting.sign(fig, hardware)


def mp17_texts(mem: pd.DataFrame, dataset: pd.DataFrame) -> dict[str, str]:
    """The glued sentences of the MP-17 section."""
    r = mp17_ratios(mem)
    by = r.groupby("precision", sort=False)
    mixed = [p for p in by.groups if p.endswith("-mixed")]
    pure = [p for p in by.groups if p.endswith("-true")]

    def rng(precs: Sequence[str], col: str) -> str:
        vals = r[r.precision.isin(precs)][col]
        return f"{span(vals)}x" if len(vals) else "not counted"

    ds = dataset.groupby("precision", sort=False)
    examples = sorted(dataset.examples.unique())
    same = bool(ds.total_bytes.nunique().eq(1).all())
    return {
        "mp17_mixed_static": rng(mixed, "static_bytes"),
        "mp17_mixed_act": rng(mixed, "activation_bytes"),
        "mp17_mixed_total": rng(mixed, "total_bytes"),
        "mp17_pure_static": rng(pure, "static_bytes"),
        "mp17_pure_act": rng(pure, "activation_bytes"),
        "mp17_pure_total": rng(pure, "total_bytes"),
        "mp17_examples": " and ".join(map(str, examples)),
        "mp17_dataset_same": ("identical" if same else "different"),
        "mp17_dataset_kib": f"{dataset.dataset_bytes.max() / 1024:.0f} KiB",
    }


def mp21_table(runs: pd.DataFrame, speed: pd.DataFrame, support: dict) -> pd.DataFrame:
    """MP-21: per mixed precision, whether it ran on the CPU with a finite loss, its final loss,
    whether this CPU has native instructions for its 16-bit format, and its step speed over
    32-true from MP-7's timings (range over model sizes)."""
    rows = []
    for r in runs.itertuples():
        sp = speed[speed.precision == r.precision].speedup.dropna()
        fmt = "bf16" if r.precision.startswith("bf16") else "fp16"
        rows.append({"precision": r.precision, "ran on the CPU": "yes" if r.ran else "no",
                     "losses finite": "yes" if r.finite else "no",
                     "final loss": f"{r.final_loss:.3f}" if r.ran else r.error,
                     "native 16-bit kernels here": (f"{fmt}: yes" if support["native"][fmt]
                                                    else f"{fmt}: no"),
                     "step speed / 32-true (MP-7)": f"{span(sp)}x" if len(sp) else "not timed"})
    return pd.DataFrame(rows)


def mp21_texts(runs: pd.DataFrame, speed: pd.DataFrame, support: dict,
               cpu_steps: int) -> dict[str, str]:
    """The glued sentences of the MP-21 section."""
    ok = runs[runs.ran & runs.finite].precision.tolist()
    sp = speed[speed.precision.isin(runs.precision)].speedup.dropna()
    return {"mp21_cpu_steps": str(cpu_steps),
            "mp21_ran": ", ".join(ok) or "none of the mixed precisions",
            "mp21_capability": str(support["capability"]),
            "mp21_support": support["words"],
            "mp21_speed": f"{span(sp)}x" if len(sp) else "not timed"}


def mp17_facts(mem: pd.DataFrame, dataset: pd.DataFrame) -> list[str]:
    """MP-17's facts that are exact on every machine (printed in a checked cell): model-state
    bytes per 16-bit precision over 32-true's, whether the step's bytes stay the same on both
    dataset sizes, and the dataset's bytes per precision over 32-true's."""
    static = mp17_ratios(mem).groupby("precision", sort=False).static_bytes
    lines = [f"{p}: weights + grads + Adam state = {span(r)}x 32-true's" for p, r in static]
    same = bool(dataset.groupby("precision").total_bytes.nunique().eq(1).all())
    examples = " and ".join(map(str, sorted(dataset.examples.unique())))
    lines.append(f"step bytes identical on {examples} training examples, every precision: {same}")
    ds = dataset.groupby("precision", sort=False).dataset_bytes.max()
    lines.append("dataset bytes / 32-true's: " + ", ".join(
        f"{p} {sig2(b / ds['32-true'])}" for p, b in ds.items()))
    return lines


def matmul_peaks(square: pd.DataFrame) -> pd.Series:
    """Each format's measured matmul peak: the largest median throughput over the sizes."""
    return square.groupby("fmt")["median"].max()


def memory_check_lines(mem: pd.DataFrame, n_models: int, precisions: Sequence[str]) -> list[str]:
    """The exact facts of the step-memory table (printed in a checked cell): how many (model
    size, precision) pairs were counted, and whether the fp32 model state is the same bytes for
    every precision at every size."""
    static_same = bool(mem.groupby(["family", "size"]).static_bytes.nunique().eq(1).all())
    return [f"step memory measured for {len(mem)} of {n_models * len(precisions)} "
            "(model size, precision) pairs",
            f"weights + grads + Adam state (fp32) identical for {', '.join(precisions)} at every "
            f"size: {static_same}"]


def save_tables(chapter: str, tables: Mapping[str, pd.DataFrame],
                names: Mapping[str, str] | None = None) -> None:
    """Save several tables of the chapter at once: each under its key, or, given `names` (saved
    name -> key of `tables`), each named table under its saved name, in that order."""
    pairs = names.items() if names is not None else ((k, k) for k in tables)
    for name, key in pairs:
        results.save_table(tables[key], chapter, name)


def matmul_summary(mm: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame,
                                                          pd.DataFrame, float, pd.Series]:
    """From `matmul_grid`'s tables: square and matvec throughput, what was skipped, the median
    copy bandwidth (GB/s) and each format's matmul peak, the inputs of the section's report."""
    square = mm["square"]
    return (square, mm["matvec"], mm["skipped"], float(mm["copy"].gb_per_s.median()),
            matmul_peaks(square))


def mp17_memory(mem: pd.DataFrame, pure: pd.DataFrame) -> pd.DataFrame:
    """The step-memory table of MP-17: the mixed precisions' rows followed by the pure 16-bit
    ones, renumbered."""
    return pd.concat([mem, pure], ignore_index=True)


def bench_texts(width: int, batch: int, repeats: int, steps: int) -> dict[str, str]:
    """The glued settings of the Trainer-overhead benchmark."""
    return {"bench_width_text": str(width), "bench_batch_text": str(batch),
            "bench_repeats_text": str(repeats), "bench_steps_text": str(steps)}


OVERHEAD_COLUMNS = ["precision", "candidate", "ms_per_step", "iqr_over_median",
                    "ratio_to_plain loop"]


def overhead_table(overhead: pd.DataFrame) -> pd.DataFrame:
    """The shown columns of the Trainer-overhead table."""
    return overhead[OVERHEAD_COLUMNS]
