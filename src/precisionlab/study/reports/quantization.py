"""The quantization chapters' tables, figures and glued prose (05 post-training, 06
quantization-aware training), from the tidy tables of `precisionlab.study.experiments.quantization`:
presentation only, no measurement. Figures show means with 95 % intervals over seeds, with
lines only between measured neighbours.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import pandas as pd
from torch import nn

from precisionlab.study.designs import GRANULARITIES, MODES, SCHEMES, int_weights
from precisionlab.study.designs import QUANT_TASK_NAMES as TASK_NAMES

if TYPE_CHECKING:  # a type hint only: the experiments' in-memory models (torch), not a table
    from precisionlab.study.experiments.quantization import Trained

# --- chapter 5: tables, prose numbers and figures -------------------------------------------

def spread(s: pd.Series, scale: float = 100.0, digits: int = 1) -> str:
    """'mean ± std' of a series over seeds (std 0 for one seed)."""
    std = s.std(ddof=1) if len(s) > 1 else 0.0
    return f"{scale * s.mean():.{digits}f} ± {scale * std:.{digits}f}"


def _pp(x: float) -> str:
    return f"{x + 0.0:.1f}".replace("-0.0", "0.0")


def bits_summary(bits_table: pd.DataFrame) -> pd.DataFrame:
    """Accuracy lost per model, mode, weight granularity and grid (rows) and width (columns):
    'mean ± std' over seeds, in percentage points."""
    t = (bits_table.groupby(["model", "mode", "granularity", "weights", "bits"], sort=False)
         .drop_pp.agg(lambda s: f"{_pp(s.mean())} ± {_pp(s.std(ddof=1) if len(s) > 1 else 0)}")
         .unstack("bits"))
    t = t[sorted(bits_table.bits.unique(), reverse=True)]
    t.columns = [f"int{b}" for b in t.columns]
    t.index = t.index.set_levels([[TASK_NAMES.get(m, m) for m in t.index.levels[0]],
                                  *t.index.levels[1:]])
    t.index.names = ["model", "quantized", "weight granularity", "weight grid"]
    return t


def calibrator_label(name: str) -> str:
    return {"minmax": "min-max", "mse": "MSE", "entropy": "entropy"}.get(name, f"{name[1:]} %ile")


def calibrator_summary(cal_table: pd.DataFrame, models: Sequence[str]) -> pd.DataFrame:
    """Per calibrator: accuracy lost, loss increase and share clipped, by model and width."""
    d = cal_table[cal_table.default_size]
    view = d.groupby(["calibrator", "model", "act_bits"], sort=False).agg(
        lost=("drop_pp", "mean"), lost_std=("drop_pp", "std"), loss=("loss_increase", "mean"),
        clipped=("clipped", "mean"))
    t = pd.DataFrame({
        "accuracy lost (pp)": [f"{_pp(r.lost)} ± {_pp(0 if pd.isna(r.lost_std) else r.lost_std)}"
                               for r in view.itertuples()],
        "loss increase (nats)": view["loss"].map("{:+.3f}".format).to_numpy(),
        "activations clipped (%)": (100 * view.clipped).map("{:.2g}".format).to_numpy()},
        index=view.index).unstack(["model", "act_bits"])
    t = t.reindex(columns=sorted(t.columns, key=lambda c: (list(models).index(c[1]), -c[2], c[0])))
    t.columns = [f"{TASK_NAMES[m].split(' on ')[0]}, int{b}: {what}" for what, m, b in t.columns]
    t.index = [calibrator_label(c) for c in t.index]
    return t.T


def zeros_summary(zeros: pd.DataFrame, fp32: pd.DataFrame) -> pd.DataFrame:
    """Exact zeros (mean over seeds) of the fp32 weights and of each width, per model."""
    t = zeros.groupby(["model", "bits"]).zero_fraction.mean().unstack("bits")
    t = t[sorted(t.columns, reverse=True)]
    t.columns = [f"int{b}" for b in t.columns]
    t.insert(0, "fp32", fp32.groupby("model").float_zero_fraction.mean())
    return t


def low_rank_summary(lr_table: pd.DataFrame, bits_table: pd.DataFrame,
                     fp32: pd.DataFrame) -> pd.DataFrame:
    """Low rank against integer weights (weight-only per-channel symmetric) at equal bytes."""
    ints = int_weights(bits_table)
    rows = []
    for (m, b), lr in lr_table.groupby(["model", "budget_bits"], sort=False):
        q = ints[(ints.model == m) & (ints.bits == b)]
        f = fp32[fp32.model == m]
        rows.append({"model": TASK_NAMES[m], "byte budget": f"int{b}",
                     "low rank: bytes": f"{lr.weight_bytes.mean():,.0f}",
                     "low rank: ranks per layer": lr.ranks.iloc[0],
                     "low rank: stored format": lr.factor_dtypes.iloc[0].replace("torch.", ""),
                     "low rank: accuracy (%)": spread(lr.test_accuracy),
                     "integer weights: bytes": f"{q.weight_bytes.mean():,.0f}",
                     "integer weights: accuracy (%)": spread(q.test_accuracy),
                     "fp32: bytes": f"{4 * f.weights.iloc[0]:,}",
                     "fp32: accuracy (%)": spread(f.test_accuracy)})
    return pd.DataFrame(rows).set_index(["model", "byte budget"]).T


def _joined(ax: object, pos: Sequence[float], mean: Sequence[float], low: Sequence[float],
            high: Sequence[float], step: float = 1.0, **style: object) -> None:
    """Markers with interval bars; lines only between measured neighbours (positions `step`
    apart), never across an x value that was not measured."""
    import numpy as np

    pos, mean = np.asarray(pos, float), np.asarray(mean, float)
    err = np.nan_to_num(np.vstack([mean - np.asarray(low, float),
                                   np.asarray(high, float) - mean]))
    ls, label = style.pop("ls", "-"), style.pop("label", None)
    line = ax.errorbar(pos, mean, yerr=err, ls="none", capsize=2, **style)
    color = line[0].get_color()
    ax.plot([], [], ls=ls, color=color, marker=style.get("marker"), label=label)  # legend entry
    order = np.argsort(pos)
    for a, b in zip(order[:-1], order[1:], strict=True):
        if abs(abs(pos[b] - pos[a]) - step) < 1e-9:
            ax.plot(pos[[a, b]], mean[[a, b]], ls=ls, color=color, lw=1.3)


def _ci(table: pd.DataFrame, value: str, by: str | list[str], scale: float = 100.0
        ) -> pd.DataFrame:
    """`stats.summarize` scaled: mean, low, high (95 % t-interval over seeds), n, nan_runs."""
    from precisionlab.study import stats

    s = stats.summarize(table, value, by)
    s[["mean", "low", "high"]] *= scale
    return s


def plot_bits(bits_table: pd.DataFrame, fp32: pd.DataFrame, hardware: str) -> object:
    """Accuracy against bit width per model (rows) and mode (columns): mean over seeds with
    95 % intervals, one line per weight granularity and grid."""
    from precisionlab.study import plotting

    models = list(dict.fromkeys(bits_table.model))
    widths = sorted(bits_table.bits.unique(), reverse=True)
    xs = {b: i for i, b in enumerate(widths)}
    colors = {"per_tensor": plotting.PALETTE[3], "per_channel": plotting.PALETTE[0],
              "per_group": plotting.PALETTE[2]}
    fig, axes = plotting.figure(ncols=2, nrows=len(models), width=10.5,
                                height=3.4 * len(models) + 0.6, squeeze=False, sharex=True)
    for r, m in enumerate(models):
        f = 100 * fp32[fp32.model == m].test_accuracy
        for c, mode in enumerate(MODES):
            ax = axes[r][c]
            ax.axhspan(f.min(), f.max(), color="0.85", zorder=0, label="fp32, seed range")
            ax.axhline(f.mean(), color="0.3", lw=1, ls=":", zorder=1, label="fp32, mean")
            d = bits_table[(bits_table.model == m) & (bits_table["mode"] == mode)]
            for k, ((g, w), part) in enumerate(d.groupby(["granularity", "weights"], sort=False)):
                s = _ci(part, "test_accuracy", "bits")
                sym = w == "symmetric"
                _joined(ax, [xs[b] + (k - 2.5) * 0.06 for b in s.bits], s["mean"], s.low, s.high,
                        color=colors[g], ls="-" if sym else "--", marker="o" if sym else "s",
                        ms=4, label=f"{g.replace('_', ' ')}, {w}")
            ax.set_xticks(list(xs.values()), [str(b) for b in xs])
            ax.set_title(f"{TASK_NAMES[m]}: {mode.replace('+', ' and ')}", fontsize=10)
            ax.set_ylabel("test accuracy (%)" if m == "mlp" else "next-character accuracy (%)")
            if r == len(models) - 1:
                ax.set_xlabel("bits per weight" + ("" if mode == "weight-only"
                                                   else " and per activation"))
    axes[0][0].legend(fontsize=7, loc="lower right")
    return plotting.sign(fig, hardware)


def plot_calibrators(cal_table: pd.DataFrame, calibrators: Sequence[str], low_bits: int,
                     size_models: Sequence[str], hardware: str) -> object:
    """Left: accuracy lost per calibrator (default calibration set); right: against the size of
    the calibration set, at `low_bits`. Means over seeds with 95 % intervals."""
    import numpy as np

    from precisionlab.study import plotting

    fig, axes = plotting.figure(ncols=1 + len(size_models), width=5.2 * (1 + len(size_models)),
                                height=4.0, squeeze=False)
    ax = axes[0][0]
    default = cal_table[cal_table.default_size]
    series = list(default.groupby(["model", "act_bits"], sort=False).groups)
    for k, (m, b) in enumerate(sorted(series, key=lambda mb: (mb[0], -mb[1]))):
        d = default[(default.model == m) & (default.act_bits == b)]
        s = _ci(d, "drop_pp", "calibrator", 1).set_index("calibrator").reindex(calibrators)
        x = np.arange(len(calibrators)) + (k - (len(series) - 1) / 2) * 0.15
        ax.errorbar(x, s["mean"], yerr=np.nan_to_num([s["mean"] - s.low, s.high - s["mean"]]),
                    ls="none", marker="osD^"[k % 4], ms=5, capsize=2, color=plotting.PALETTE[k],
                    label=f"{TASK_NAMES[m].split(' on ')[0]}, int{b} activations")
    ax.axhline(0, color="0.3", lw=1, ls=":")
    ax.set_xticks(np.arange(len(calibrators)), [calibrator_label(c) for c in calibrators],
                  rotation=30)
    ax.set_ylabel("accuracy lost vs fp32 (percentage points)")
    ax.set_xlabel("activation calibrator")
    ax.set_title("int8 per-channel weights, calibrated activations", fontsize=10)
    ax.legend(fontsize=7)
    for c, m in enumerate(size_models):
        ax = axes[0][c + 1]
        d = cal_table[(cal_table.model == m) & (cal_table.act_bits == low_bits)]
        sizes = sorted(d.calib_examples.unique())
        for k, name in enumerate(calibrators):
            s = _ci(d[d.calibrator == name], "drop_pp", "calib_examples", 1)
            _joined(ax, [sizes.index(n) for n in s.calib_examples], s["mean"], s.low, s.high,
                    marker="osD^vPX"[k % 7], ms=4, label=calibrator_label(name),
                    color=[p for p in plotting.PALETTE if p != "#F0E442"][k % 7])
        ax.set_xticks(range(len(sizes)), [str(n) for n in sizes])
        ax.axhline(0, color="0.3", lw=1, ls=":")
        ax.set_xlabel("calibration set (examples)")
        ax.set_ylabel("accuracy lost vs fp32 (percentage points)")
        ax.set_title(f"{TASK_NAMES[m]}: int{low_bits} activations", fontsize=10)
        ax.legend(fontsize=7, ncol=2)
    return plotting.sign(fig, hardware)


def plot_low_rank(lr_table: pd.DataFrame, bits_table: pd.DataFrame, fp32: pd.DataFrame,
                  hardware: str) -> object:
    """Accuracy against the bytes of the Linear weights: integer weights at each width, low
    rank at the int-b budgets, fp32; means over seeds with 95 % intervals."""
    import math

    import numpy as np

    from precisionlab.study import plotting

    models = list(dict.fromkeys(lr_table.model))
    ints = int_weights(bits_table)
    fig, axes = plotting.figure(ncols=len(models), width=5.0 * len(models) + 0.5, height=3.8,
                                squeeze=False)
    for ax, m in zip(axes[0], models, strict=True):
        f = _ci(fp32[fp32.model == m], "test_accuracy", "model").iloc[0]
        fp_kib = 4 * fp32[fp32.model == m].weights.iloc[0] / 1024
        ax.errorbar([fp_kib], [f["mean"]], yerr=np.nan_to_num([[f["mean"] - f.low],
                                                               [f.high - f["mean"]]]),
                    marker="*", ms=10, color="0.2", ls="none", capsize=2, label="fp32")
        kib = {}
        for name, t, key, style in (
                ("int$b$ weights, per channel", ints[ints.model == m], "bits",
                 dict(marker="o", ms=5, color=plotting.PALETTE[0])),
                ("low rank, float32 factors", lr_table[lr_table.model == m], "budget_bits",
                 dict(marker="D", ms=6, color=plotting.PALETTE[3]))):
            s = _ci(t, "test_accuracy", key).set_index(key)
            kib[key] = t.groupby(key).weight_bytes.mean() / 1024
            ax.errorbar(kib[key].loc[s.index], s["mean"], ls="none", capsize=2, label=name,
                        yerr=np.nan_to_num([s["mean"] - s.low, s.high - s["mean"]]), **style)
            labels: list[tuple[list[str], float, float]] = []  # same bytes and accuracy: one
            for b, row in s.sort_index(ascending=False).iterrows():
                name = f"int{b}" if key == "bits" else f"at int{b} bytes"
                if labels and labels[-1][1] == kib[key][b] and abs(labels[-1][2] - row["mean"]) < 1:
                    labels[-1][0].append(name)
                else:
                    labels.append(([name], kib[key][b], row["mean"]))
            for names, x, y in labels:
                ax.annotate(", ".join(names), (x, y), textcoords="offset points",
                            xytext=(6, -3) if key == "bits" else (-7, -3), fontsize=7,
                            ha="left" if key == "bits" else "right", color=style["color"])
        lo = min(v.min() for v in kib.values())
        ticks = [2.0**k for k in range(math.floor(math.log2(lo)), math.ceil(math.log2(fp_kib)) + 1)]
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_xlim(lo / 1.6, fp_kib * 1.3)
        ax.set_xlabel("bytes of the Linear weights (KiB, log scale)")
        ax.set_ylabel("test accuracy (%)" if m == "mlp" else "next-character accuracy (%)")
        ax.set_title(TASK_NAMES[m], fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
    return plotting.sign(fig, hardware)


def ptq_texts(p: dict[str, object], fp32: pd.DataFrame, bits_table: pd.DataFrame,
              cal_table: pd.DataFrame, zeros: pd.DataFrame, lr_table: pd.DataFrame,
              trained: Trained) -> dict[str, str]:
    """Chapter 5's measured numbers as the short texts its prose glues in (name -> text);
    '(not run)' for a model the parameters left out."""
    models = list(p["models"])
    t: dict[str, str] = {}
    hidden, bits = p["mlp_hidden"], sorted(p["bits"], reverse=True)
    t |= {"group_size": str(p["group_size"]),
          "mlp_shape": " × ".join(str(h) for h in [40, *hidden, 10]),
          "mlp_steps": f"{p['mlp_steps']:,}", "mlp_batch": str(p["mlp_batch"]),
          "mlp_train": f"{p['mlp_samples'] * 8 // 10:,}",
          "tf_shape": f"{p['tf_layers']} blocks of width {p['tf_d_model']}, "
                      f"{p['tf_context']}-character context",
          "tf_steps": f"{p['tf_steps']:,}", "tf_batch": str(p["tf_batch"]),
          "tf_test": f"{p['tf_test']:,}", "tf_positions": f"{p['tf_test'] * p['tf_context']:,}",
          "n_seeds": str(len(p["seeds"])), "mlp_layers": f"{len(hidden) + 1} layers",
          "tf_layers_n": f"{6 * p['tf_layers'] + 1}", "bits_list": ", ".join(map(str, bits)),
          "sweep_calibrator": {"minmax": "min-max", "mse": "MSE", "entropy": "entropy"}.get(
              p["sweep_calibrator"], f"the {p['sweep_calibrator'][1:]}th percentile"),
          "mlp_calib": f"{p['mlp_calib']:,}", "tf_calib": f"{p['tf_calib']:,}",
          "low_act_bits": str(p["low_act_bits"]), "low_levels": str(2 ** p["low_act_bits"]),
          "mlp_head_shape": f"{hidden[-1]} × 10"}
    for m in TASK_NAMES:
        f = fp32[fp32.model == m]
        t[f"{m}_fp32"] = f"{spread(f.test_accuracy)} %" if len(f) else "(not run)"
        t[f"{m}_fp32_loss"] = spread(f.test_loss, 1, 3) if len(f) else "(not run)"
        t[f"{m}_fp32_std"] = (f"{100 * f.test_accuracy.std(ddof=1):.2g}" if len(f) > 1
                              else "(one seed)")
    t |= _bits_texts(bits_table, trained, models, bits)
    t |= _calibrator_texts(p, cal_table, models)
    t |= _zero_lowrank_texts(fp32, bits_table, zeros, lr_table, models, p["lowrank_bits"])
    return t


def _bits_texts(bits_table: pd.DataFrame, trained: Trained, models: list[str],
                bits: list[int]) -> dict[str, str]:
    t: dict[str, str] = {}
    agg = (bits_table.groupby(["model", "mode", "granularity", "weights", "bits"])
           .agg(lost=("drop_pp", "mean"), lost_max=("drop_pp", "max"),
                bpw=("bits_per_weight", "mean")))
    lowest, b4 = min(bits), 4 if 4 in bits else sorted(bits)[len(bits) // 2]
    for m in TASK_NAMES:
        if m not in models:
            for key in ("int8_worst", "int8_worst_where", "int4_tensor", "int4_channel",
                        "int4_group", "low_best", "low_best_where", "low_tensor", "wa4",
                        "fallback"):
                t[f"{m}_{key}"] = "(not run)"
            continue
        a = agg.loc[m]
        i8 = a.xs(8, level="bits")
        worst = i8.lost_max.idxmax()
        t[f"{m}_int8_worst"] = f"{i8.lost_max.max():.2g}"
        t[f"{m}_int8_worst_where"] = f"{worst[0]}, {worst[1].replace('_', ' ')}, {worst[2]}"
        for g in GRANULARITIES:
            lost = a.loc[("weight-only", g, "symmetric", b4), "lost"]
            t[f"{m}_int4_{g.split('_')[1]}"] = f"{lost:.2g}"
        low = a.xs(lowest, level="bits").loc["weight-only"]
        t[f"{m}_low_best"] = f"{low.lost.min():.2g}"
        best = low.lost.idxmin()
        t[f"{m}_low_best_where"] = f"{best[0].replace('_', ' ')}, {best[1]}"
        t[f"{m}_low_tensor"] = f"{low.loc[('per_tensor', 'symmetric'), 'lost']:.2g}"
        wa4 = a.loc[("weight+activation", "per_channel", "symmetric", b4), "lost"]
        t[f"{m}_wa4"] = f"{wa4:.2g}"
        d = bits_table[(bits_table.model == m) & (bits_table.granularity == "per_group")]
        fb = d.fallback.iloc[0] if len(d) else ""
        model = next(mod for (name, _), (mod, _) in trained.items() if name == m)
        widths = {n: mod.weight[0].numel() for n, mod in model.named_modules()
                  if isinstance(mod, nn.Linear)}
        t[f"{m}_fallback"] = ("none" if not fb else ", ".join(
            f"layer `{n}` ({widths[n]} inputs)" for n in fb.split(",")))
    bpw = agg.xs((b4, "weight-only"), level=("bits", "mode")).bpw
    t |= {"b4": str(b4), "lowest": str(lowest),
          "bpw_channel": f"{bpw.loc[(models[-1], 'per_channel', 'symmetric')]:.2f}",
          "bpw_group": f"{bpw.loc[(models[-1], 'per_group', 'symmetric')]:.2f}",
          "bpw_group_asym": f"{bpw.loc[(models[-1], 'per_group', 'asymmetric')]:.2f}",
          "bpw_model": {"mlp": "MLP", "transformer": "transformer"}[models[-1]]}
    return t


def _calibrator_texts(p: dict[str, object], cal_table: pd.DataFrame,
                      models: list[str]) -> dict[str, str]:
    t: dict[str, str] = {}
    low_bits, size_models, sizes = p["low_act_bits"], p["calib_size_models"], p["calib_sizes"]
    t["size_models"] = (" and ".join(TASK_NAMES[m] for m in size_models)
                        or "no model (calib_size_models is empty)")
    s = sorted(sizes)
    t["calib_sizes_text"] = (", ".join(map(str, s[:-1])) + f" and {s[-1]}" if len(s) > 1
                             else str(s[0]))
    d = cal_table[cal_table.default_size]
    m8 = d[d.act_bits == 8].groupby(["model", "calibrator"]).drop_pp.mean()
    t["cal8_max"] = f"{m8.abs().max():.2g}"
    ranks = []
    for m in models:
        low = d[(d.model == m) & (d.act_bits == low_bits)].groupby("calibrator").drop_pp.mean()
        if "p99.9" in low.index:
            r = int((low < low["p99.9"]).sum()) + 1
            ranks.append(f"{ {1: '1st', 2: '2nd', 3: '3rd'}.get(r, f'{r}th')} of {len(low)} on "
                         f"the {TASK_NAMES[m].split(' on ')[0]}")
    t["p999_sentence"] = ("The 99.9th percentile, which clips too much for ResNet-50 at 8 bits, "
                          f"ranks {' and '.join(ranks)} here at {low_bits} bits." if ranks else "")
    for m in TASK_NAMES:
        if m not in models:
            for key in ("cal_minmax", "cal_best", "cal_best_name", "cal_worst", "cal_worst_name",
                        "cal_p9999"):
                t[f"{m}_{key}"] = "(not run)"
            continue
        low = d[(d.model == m) & (d.act_bits == low_bits)].groupby("calibrator").drop_pp.mean()
        t |= {f"{m}_cal_minmax": f"{low.get('minmax', float('nan')):.2g}",
              f"{m}_cal_p9999": f"{low.get('p99.99', float('nan')):.2g}",
              f"{m}_cal_best": f"{low.min():.2g}",
              f"{m}_cal_best_name": calibrator_label(low.idxmin()),
              f"{m}_cal_worst": f"{low.max():.2g}",
              f"{m}_cal_worst_name": calibrator_label(low.idxmax())}
    clip = d[d.act_bits == low_bits].groupby(["model", "calibrator"]).clipped.mean()
    t["clip_range"] = ", ".join(f"{calibrator_label(c)} {100 * clip.loc[(models[-1], c)]:.2g} %"
                                for c in p["calibrators"])
    t["clip_model"] = TASK_NAMES[models[-1]]
    if size_models:
        m = size_models[0]
        s = (cal_table[(cal_table.model == m) & (cal_table.act_bits == low_bits)]
             .groupby(["calibrator", "calib_examples"]).drop_pp.mean())
        lo, hi = min(sizes), max(sizes)
        t |= {"size_task": TASK_NAMES[m], "size_lo": str(lo), "size_hi": str(hi),
              "size_trend": "; ".join(f"{calibrator_label(c)} {s.loc[(c, lo)]:.2g} → "
                                      f"{s.loc[(c, hi)]:.2g} pp" for c in p["calibrators"])}
        grew = [calibrator_label(c) for c in p["calibrators"]
                if s.loc[(c, hi)] > s.loc[(c, lo)] + 1]
        t["size_grew"] = ", ".join(grew) if grew else "none of the calibrators"
    else:
        t |= dict.fromkeys(("size_task", "size_lo", "size_hi", "size_trend", "size_grew"),
                           "(not run)")
    return t


def _zero_lowrank_texts(fp32: pd.DataFrame, bits_table: pd.DataFrame, zeros: pd.DataFrame,
                        lr_table: pd.DataFrame, models: list[str],
                        lowrank_bits: Sequence[int]) -> dict[str, str]:
    t: dict[str, str] = {}
    zt = zeros.groupby(["model", "bits"]).zero_fraction.mean()
    lowest = int(zeros.bits.min())
    for m in TASK_NAMES:
        t[f"{m}_z8"] = f"{100 * zt.loc[(m, 8)]:.2g} %" if m in models else "(not run)"
        t[f"{m}_zlow"] = f"{100 * zt.loc[(m, lowest)]:.2g} %" if m in models else "(not run)"
    t["z_fp32"] = f"{100 * fp32.float_zero_fraction.max():.2g} %"
    bytes8 = zeros[zeros.bits == 8].weight_bytes.sum()
    t["int8_ratio"] = f"{fp32.weights.sum() * 4 / bytes8:.2g}"
    ints = int_weights(bits_table)
    below = 0
    for m in TASK_NAMES:
        for b in (8, 4):
            lr = lr_table[(lr_table.model == m) & (lr_table.budget_bits == b)]
            q = ints[(ints.model == m) & (ints.bits == b)]
            ok = len(lr) and len(q)
            t[f"{m}_lr{b}"] = f"{100 * lr.test_accuracy.mean():.2g} %" if ok else "(not run)"
            t[f"{m}_q{b}"] = f"{100 * q.test_accuracy.mean():.2g} %" if ok else "(not run)"
            t[f"{m}_lr{b}_ranks"] = lr.ranks.iloc[0].replace(",", ", ") if ok else "(not run)"
    pairs = [(lr_table[(lr_table.model == m) & (lr_table.budget_bits == b)].test_accuracy.mean(),
              ints[(ints.model == m) & (ints.bits == b)].test_accuracy.mean())
             for m in models for b in lowrank_bits]
    below = sum(lr < q for lr, q in pairs)
    t["lr_cmp"] = (f"below the integer-weight models in all {len(pairs)} comparisons"
                   if below == len(pairs)
                   else f"below the integer-weight models in {below} of {len(pairs)} comparisons")
    t["lr_lowrank_enough"] = "not" if below == len(pairs) else "not always"
    return t


# --- chapter 6: tables, prose numbers and figures -------------------------------------------

def mean_span(s: pd.Series, scale: float = 100, decimals: int = 1) -> str:
    """'mean (min to max)' over seeds."""
    s = s * scale
    return f"{s.mean():.{decimals}f} ({s.min():.{decimals}f} to {s.max():.{decimals}f})"


def acc_text(s: pd.Series) -> str:
    """An accuracy for the prose: '80.1 % (80.0 to 80.2)'."""
    return f"{100 * s.mean():.1f} % ({100 * s.min():.1f} to {100 * s.max():.1f})"


def join_and(items: Iterable[object]) -> str:
    """'4', '4 and 3', '4, 3 and 2'."""
    items = [str(i) for i in items]
    return " and ".join(items) if len(items) < 3 else ", ".join(items[:-1]) + " and " + items[-1]


def _beyond_noise(values: pd.Series) -> bool:
    from precisionlab.study import stats

    return len(values) > 0 and stats.interval(values.to_numpy()).beyond_noise


def qat_summary(ptq_table: pd.DataFrame, last: pd.DataFrame) -> pd.DataFrame:
    """Per width and scheme: PTQ accuracy and loss, QAT accuracy after the last step, and the
    share recovered against fp32 and against the control, shown only where the gap it divides
    by is beyond noise (its paired 95 % interval excludes 0)."""
    rows = []
    for b in sorted(ptq_table.bits.unique(), reverse=True):
        for scheme in SCHEMES:
            p = ptq_table[(ptq_table.scheme == scheme) & (ptq_table.bits == b)]
            q = last[(last.method == "QAT") & (last.scheme == scheme) & (last.bits == b)]
            gap_f = _beyond_noise(q.fp32_accuracy - q.ptq_accuracy)
            gap_c = _beyond_noise(q.control_accuracy - q.ptq_accuracy)
            rows.append({
                "bits": b, "quantized": {"weight+activation": "weights and activations",
                                         "weight-only": "weights only"}[scheme],
                "PTQ accuracy (%)": mean_span(p.test_accuracy),
                "PTQ loss vs fp32 (points)": mean_span(p.fp32_accuracy - p.test_accuracy,
                                                       decimals=2),
                "QAT accuracy after the last step (%)": mean_span(q.test_accuracy) if len(q)
                else "-",
                "recovered vs fp32": mean_span(q.recovered_vs_fp32, 1, 2) if gap_f else "-",
                "recovered vs control": mean_span(q.recovered_vs_control, 1, 2) if gap_c else "-",
                "stored bytes": f"{int(p.stored_bytes.iloc[0]):,}"})
    return pd.DataFrame(rows)


def recovery_table(curves: pd.DataFrame, checkpoints: Sequence[int], widths: Sequence[int]
                   ) -> pd.DataFrame:
    """QAT accuracy and share recovered against the control at each checkpoint, for `widths`."""
    rec = curves[(curves.method != "fp32 control") & curves.step.isin(checkpoints)
                 & curves.bits.isin(widths)]
    if rec.empty:
        return pd.DataFrame({"note": ["no width loses accuracy beyond noise"]})
    cells = (rec.groupby(["method", "scheme", "bits", "step"])
             .agg(acc=("test_accuracy", mean_span),
                  rc=("recovered_vs_control", lambda s: mean_span(s, 1, 2)))
             .rename(columns={"acc": "QAT accuracy (%)", "rc": "recovered vs control"})
             .stack().rename("value").reset_index().rename(columns={"level_4": "measure"}))
    t = cells.pivot_table(index=["method", "scheme", "bits", "measure"], columns="step",
                          values="value", aggfunc="first", sort=False)
    t = t.sort_index(level=["method", "scheme", "bits", "measure"],
                     ascending=[True, True, False, True])
    t.columns = [f"{c} steps" for c in t.columns]
    t.index.names = ["method", "quantized", "bits", ""]
    return t


def ranges_table(last: pd.DataFrame, moving_bits: Sequence[int], act_momentum: float,
                 moving_momentum: float) -> pd.DataFrame:
    """QAT with fixed calibrated input ranges against moving ones, after the last step."""
    side = last[(last.scheme == "weight+activation") & last.bits.isin(moving_bits)
                & (last.method != "fp32 control")]
    if side.empty:
        return pd.DataFrame({"note": ["side experiment skipped (moving_bits is empty)"]})
    t = (side.groupby(["bits", "method"]).agg(
        acc=("test_accuracy", mean_span),
        rc=("recovered_vs_control", lambda s: mean_span(s, 1, 2))).reset_index())
    t["method"] = t.method.map({
        "QAT": "calibrated ranges, fixed" if act_momentum == 0
        else f"moving ranges (momentum {act_momentum:g})",
        "QAT, moving ranges": f"moving ranges (momentum {moving_momentum:g})"})
    t.columns = ["bits", "QAT input ranges", "accuracy after the last step (%)",
                 "recovered vs control"]
    return t.sort_values(["bits", "QAT input ranges"], ascending=[False, True])


def plot_qat_bits(ptq_table: pd.DataFrame, last: pd.DataFrame, fp32: pd.DataFrame,
                  steps: int, hardware: str) -> object:
    """Accuracy against bit width, PTQ and QAT, weights and activations or weights only: means
    with 95 % intervals over seeds; lines join only widths measured side by side."""
    from precisionlab.study import plotting

    pal, wa = plotting.PALETTE, "weight+activation"
    style = {  # (method, scheme): colour, line style, marker, label
        ("PTQ", wa): (pal[3], "-", "o", "PTQ, weights and activations"),
        ("QAT", wa): (pal[0], "-", "s", "QAT, weights and activations"),
        ("PTQ", "weight-only"): (pal[3], "--", "^", "PTQ, weights only"),
        ("QAT", "weight-only"): (pal[2], "--", "s", "QAT, weights only")}
    fig, ax = plotting.figure(width=9.5, height=4.6)  # as wide as the hardware line below
    xs = {b: i for i, b in enumerate(sorted(ptq_table.bits.unique(), reverse=True))}
    f = 100 * fp32.test_accuracy
    c = 100 * last[last.method == "fp32 control"].test_accuracy
    ax.axhspan(f.min(), f.max(), color="#777777", alpha=0.2, lw=0)
    ax.axhline(f.mean(), color="#777777", lw=1.2, label="fp32 model (mean, min-max band)")
    ax.axhspan(c.min(), c.max(), color="#000000", alpha=0.12, lw=0)
    ax.axhline(c.mean(), color="#000000", lw=1, ls=":",
               label=f"fp32 control, fine-tuned {steps} steps")
    ax.axhline(10, color="#999999", lw=0.8, ls="-.", label="chance (10 classes)")
    for (method, scheme), (color, ls, marker, label) in style.items():
        t = (ptq_table[ptq_table.scheme == scheme] if method == "PTQ"
             else last[(last.method == "QAT") & (last.scheme == scheme)])
        if t.empty:
            continue
        s = _ci(t, "test_accuracy", "bits")
        shift = {"PTQ": -0.06, "QAT": 0.06}[method]
        _joined(ax, [xs[b] + shift for b in s.bits], s["mean"], s.low, s.high, color=color,
                ls=ls, marker=marker, ms=5,
                label=label + (f" ({steps} steps)" if method == "QAT" else ""))
    ax.set_xticks(list(xs.values()), [f"{b}" for b in xs])
    ax.set_xlabel("integer bit width (bits)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("MLP on MNIST-1D: integer models, mean and 95 % interval over seeds", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    return plotting.sign(fig, hardware)


def plot_qat_steps(curves: pd.DataFrame, ptq_table: pd.DataFrame, fp32: pd.DataFrame,
                   qat_bits: Sequence[int], weight_only_bits: Sequence[int],
                   moving_momentum: float, hardware: str) -> object:
    """Accuracy against fine-tuning steps, one panel per QAT width: mean over seeds with the
    seed range shaded, the PTQ start, the fp32 model and the fp32 control."""
    import math

    from precisionlab.study import plotting

    bits = list(qat_bits)
    ncols = min(3, len(bits))
    nrows = math.ceil((len(bits) + 1) / ncols) if len(bits) > 1 else 1
    fig, axes = plotting.figure(ncols=ncols, nrows=nrows, width=3.5 * ncols + 0.5,
                                height=2.9 * nrows + 0.4, squeeze=False)
    flat = [ax for row in axes for ax in row]
    lines = [("QAT", "weight+activation", plotting.PALETTE[0], "-", "QAT, weights and activations"),
             ("QAT", "weight-only", plotting.PALETTE[2], "--", "QAT, weights only"),
             ("QAT, moving ranges", "weight+activation", plotting.PALETTE[4], "-.",
              f"QAT, weights and activations, moving input ranges (momentum {moving_momentum:g})"),
             ("fp32 control", "none", "#000000", ":", "fp32 control (same fine-tuning)")]
    for ax, b in zip(flat, bits, strict=False):
        for method, scheme, color, ls, label in lines:
            t = curves[(curves.method == method) & (curves.scheme == scheme)
                       & ((curves.bits == b) | (method == "fp32 control"))]
            if len(t):
                g = t.assign(pct=100 * t.test_accuracy).groupby("step").pct.agg(
                    ["mean", "min", "max"])
                ax.fill_between(g.index, g["min"], g["max"], color=color, alpha=0.18, lw=0)
                ax.plot(g.index, g["mean"], color=color, ls=ls, lw=1.5, marker=".", ms=4,
                        label=label)
        for scheme, ls, label in (("weight+activation", "-", "PTQ, weights and activations"),
                                  ("weight-only", "--", "PTQ, weights only")):
            if scheme == "weight-only" and b not in weight_only_bits:
                continue
            p = ptq_table[(ptq_table.scheme == scheme) & (ptq_table.bits == b)].test_accuracy
            ax.axhline(100 * p.mean(), color=plotting.PALETTE[3], ls=ls, lw=1, label=label)
        ax.axhline(100 * fp32.test_accuracy.mean(), color="#777777", lw=1.2,
                   label="fp32 model (before fine-tuning)")
        ax.set_title(f"{b} bits", fontsize=10)
        ax.set_xlabel("fine-tuning steps (Adam steps)")
        ax.set_ylabel("test accuracy (%)")
    found: dict[str, object] = {}
    for ax in flat[:len(bits)]:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            found.setdefault(label, h)
    for ax in flat[len(bits):]:
        ax.axis("off")
    if len(flat) > len(bits):
        flat[-1].legend(list(found.values()), list(found), loc="center", fontsize=7.5)
    else:
        fig.legend(list(found.values()), list(found), loc="lower center", fontsize=7.5, ncol=2)
    return plotting.sign(fig, hardware)


def qat_texts(p: dict[str, object], fp32: pd.DataFrame, ptq_table: pd.DataFrame,
              curves: pd.DataFrame, trained: Trained, verdict: str) -> dict[str, str]:
    """Chapter 6's measured numbers as the short texts its prose glues in (name -> text), and
    a summary of the Q-3 `verdict`."""
    from precisionlab.study import stats
    from precisionlab.study.rules.quantization import Q3_MARGIN

    steps, checkpoints = p["checkpoints"][-1], p["checkpoints"]
    last = curves[curves.step == steps]
    _, split = next(iter(trained.values()))
    observer = {"mse": "mean-squared-error", "minmax": "min-max", "percentile": "percentile",
                "entropy": "entropy (KL)"}[p["act_observer"]]
    t = {"range_rule": (
            "They then stay fixed during QAT (momentum 0, as torch.ao's disable_observer does), "
            "so only the weights learn." if p["act_momentum"] == 0 else
            f"During QAT they follow a moving average of each batch's min and max (momentum "
            f"{p['act_momentum']:g}), as torch.ao's default QAT observers do."),
         "mlp_shape": " × ".join(map(str, p["hidden"])), "base_steps": f"{p['base_steps']:,}",
         "batch_size": str(p["batch_size"]), "n_seeds": str(len(p["seeds"])),
         "n_cal": f"{p['n_calibration']:,}", "act_observer": observer,
         "finetune_lr": f"{p['finetune_lr']:g}", "finetune_steps": f"{steps:,}",
         "acc_fp32": acc_text(fp32.test_accuracy), "n_train": f"{len(split.x_train):,}",
         "n_test": f"{len(split.x_test):,}",
         "qat_bits_list": ", ".join(map(str, p["qat_bits"])) + " bits",
         "wo_bits_list": (", ".join(map(str, p["weight_only_qat_bits"])) + " bits"
                          if p["weight_only_qat_bits"] else "no bit width (skipped in this run)"),
         "eval_every": str(_gcd(checkpoints)),
         "moving_momentum": f"{p['moving_momentum']:g}",
         "moving_bits_list": (", ".join(map(str, p["moving_bits"])) + " bits"
                              if p["moving_bits"] else "no bit width (skipped in this run)")}
    for b in (8, 6, 4, 3, 2):
        for scheme, tag in (("weight+activation", "wa"), ("weight-only", "w")):
            q = ptq_table[(ptq_table.scheme == scheme) & (ptq_table.bits == b)]
            a = last[(last.method == "QAT") & (last.scheme == scheme) & (last.bits == b)]
            t[f"{tag}{b}_acc"] = acc_text(q.test_accuracy) if len(q) else "(not run)"
            t[f"{tag}{b}_lost"] = (f"{100 * (q.fp32_accuracy - q.test_accuracy).mean():.2g} points"
                                   if len(q) else "(not run)")
            t[f"{tag}{b}_qat"] = acc_text(a.test_accuracy) if len(a) else "(not run)"
            t[f"{tag}{b}_rf"] = f"{a.recovered_vs_fp32.mean():.2g}" if len(a) else "(not run)"
            t[f"{tag}{b}_rc"] = f"{a.recovered_vs_control.mean():.2g}" if len(a) else "(not run)"
    wa8 = ptq_table[(ptq_table.scheme == "weight+activation") & (ptq_table.bits == 8)]
    t["int8_interval"] = stats.interval((wa8.test_accuracy - wa8.fp32_accuracy).to_numpy()).text(
        100, " points")
    lost = (ptq_table.assign(lost=ptq_table.fp32_accuracy - ptq_table.test_accuracy)
            .groupby(["scheme", "bits"]).lost.mean())
    low = costly_widths(ptq_table)
    w_less = [b for b in low if lost.get(("weight-only", b), float("inf"))
              < lost[("weight+activation", b)]]
    t["w_less"] = ("Quantizing the weights alone costs less at every width where the full scheme "
                   "loses accuracy beyond noise" if low and w_less == low else
                   "Quantizing the weights alone does not always cost less than quantizing "
                   "activations too" if low else "No width loses accuracy beyond noise")
    ctrl_last = last[last.method == "fp32 control"].set_index("seed").test_accuracy
    t["ctrl_acc"] = acc_text(ctrl_last)
    t["ctrl_gain"] = (f"{100 * (ctrl_last - fp32.set_index('seed').test_accuracy).mean():+.2g} "
                      "points")
    share = last[last.method == "QAT"].groupby(["scheme", "bits"]).recovered_vs_control.mean()
    pairs = [b for b in low if ("weight-only", b) in share.index
             and ("weight+activation", b) in share.index]
    t["w_vs_wa"] = (
        "At every width where both ran, QAT recovers a larger share with the weights alone "
        "quantized: training adapts the weights to their grid better than it adapts the "
        "network to inputs rounded to a few levels." if pairs and all(
            share[("weight-only", b)] > share[("weight+activation", b)] for b in pairs)
        else "Weight-only QAT does not recover a larger share at every width.")
    by_bytes = ptq_table[ptq_table.scheme == "weight-only"].groupby("bits").stored_bytes.first()
    t["fp32_bytes"] = f"{int(fp32.fp32_bytes.iloc[0]):,}"
    t["int8_bytes"] = f"{int(by_bytes[8]):,}" if 8 in by_bytes else "(not run)"
    t["int4_bytes"] = f"{int(by_bytes[4]):,}" if 4 in by_bytes else "(not run)"
    wa2 = ptq_table[(ptq_table.scheme == "weight+activation") & (ptq_table.bits == 2)]
    t["wa2_guess"] = (", close to guessing among 10 classes"
                      if len(wa2) and wa2.test_accuracy.mean() < 0.2 else "")
    w4 = last[(last.method == "QAT") & (last.scheme == "weight-only") & (last.bits == 4)]
    r = w4.recovered_vs_fp32.mean() if len(w4) else float("nan")
    more = ", more than all of it," if r > 1 else ""
    t["w4_rf_phrase"] = f"{r:.2g} times what PTQ lost{more}" if len(w4) else "(not run)"
    top = f"{max(low)} bits" if low else "-"
    t["margin"] = f"{100 * Q3_MARGIN:g} accuracy point"
    t["verdict_summary"] = {
        "supported": "INT8 itself costs this task accuracy beyond noise and beyond the margin, "
                     "and fewer bits cost more, so the claim's low-bit half and its warning "
                     "about INT8 both find support here.",
        "nuanced": (f"On this task INT8 costs no accuracy beyond the margin that the seeds "
                    f"can show, while every width from {top} down loses accuracy beyond noise. "
                    "The claim's warning about INT8 finds no support here; its low-bit half "
                    "holds, and QAT buys part of the low-bit loss back (the verdict line gives "
                    "the intervals)." if low else "No width loses accuracy beyond noise, but "
                    "the seeds cannot show every width equivalent to fp32 either."),
        "refuted": "Every bit width tested is equivalent to fp32 within the margin: no width "
                   "trades accuracy on this task."}[verdict]
    return t | _step_texts(curves, p["qat_bits"], checkpoints) | _range_texts(
        last, p["moving_bits"])


def _gcd(values: Sequence[int]) -> int:
    import math

    return math.gcd(*values)


def costly_widths(ptq_table: pd.DataFrame) -> list[int]:
    """Widths whose weight+activation PTQ loses accuracy beyond noise and beyond Q-3's margin
    (the same words as `rules.quantization.q3`)."""
    from precisionlab.study.rules.quantization import Q3_MARGIN, paired_vs

    wa = ptq_table[ptq_table.scheme == "weight+activation"]
    return [int(b) for b, part in sorted(wa.groupby("bits"), key=lambda kv: -kv[0])
            if paired_vs(part, "test_accuracy", "fp32_accuracy", Q3_MARGIN).outcome == "lower"]


def _step_texts(curves: pd.DataFrame, qat_bits: Sequence[int], checkpoints: Sequence[int]
                ) -> dict[str, str]:
    t: dict[str, str] = {}
    wa = curves[(curves.method == "QAT") & (curves.scheme == "weight+activation")]
    by_step = wa.groupby(["bits", "step"]).test_accuracy.mean()
    ctrl = curves[curves.method == "fp32 control"].groupby("step").test_accuracy.mean()
    if 8 in qat_bits:
        dev = (by_step.loc[8] - ctrl).abs()
        t["qat8_vs_ctrl"] = (f"stays within {100 * dev[dev.index > 0].max():.2g} points of the "
                             "control at every evaluation")
    else:
        t["qat8_vs_ctrl"] = "(8 bits not run)"
    end, half = checkpoints[-1], checkpoints[-1] // 2
    late = [b for b in qat_bits if b <= 4]
    if late and half in by_step.loc[late[0]].index:
        t["late_gain"] = ", ".join(f"{100 * (by_step.loc[b, end] - by_step.loc[b, half]):+.2g} "
                                   f"points at {b} bits" for b in late)
        t["late_ctrl"] = f"{100 * (ctrl.loc[end] - ctrl.loc[half]):+.2g} points"
    else:
        t["late_gain"], t["late_ctrl"] = "(no run at 4 bits or below)", "-"
    t["half_step"], t["last_step"] = str(half), str(end)
    return t


def _range_texts(last: pd.DataFrame, moving_bits: Sequence[int]) -> dict[str, str]:
    better = []
    for b in moving_bits:
        fixed = last[(last.method == "QAT") & (last.scheme == "weight+activation")
                     & (last.bits == b)].test_accuracy.mean()
        moving = last[(last.method == "QAT, moving ranges") & (last.bits == b)].test_accuracy.mean()
        better.append((b, fixed, moving))
    parts = []
    if fixed_wins := [b for b, a, m in better if a > m]:
        parts.append(f"The fixed calibrated ranges end higher at {join_and(fixed_wins)} bits")
    if moving_wins := [b for b, a, m in better if m > a]:
        parts.append(f"the moving ranges end higher at {join_and(moving_wins)} bits")
    text = "; ".join(parts) + "." if parts else "The side experiment was skipped."
    gaps = ", ".join(f"{100 * (a - m):+.2g} points at {b} bits" for b, a, m in better)
    return {"ranges_result": text[0].upper() + text[1:], "ranges_gaps": gaps or "-"}
