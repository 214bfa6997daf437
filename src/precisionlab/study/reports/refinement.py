"""Chapter 10's tables, figures and glued prose, from the tidy tables of
`precisionlab.study.experiments.refinement`: presentation only, no measurement.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from precisionlab.study import stats
from precisionlab.study.claims import sig2

U32, U64 = 2.0**-24, 2.0**-53  # unit roundoffs of fp32 and fp64
STYLE = {"fp32 LU": dict(color="#0072B2", marker="s", ls="--", label="fp32 solve (LU in fp32)"),
         "fp64 LU": dict(color="#000000", marker="o", ls="--", label="fp64 solve (LU in fp64)"),
         "refinement": dict(color="#D55E00", marker="^", ls="-",
                            label="refinement (fp32 LU + fp64 residuals)")}


def kappa_text(kappa: float) -> str:
    """A condition number for a table or the prose: 10, 1e7, 1.7e7."""
    return f"{kappa:.2g}".replace("e+0", "e").replace("e+", "e")


def log_summary(runs: pd.DataFrame, value: str = "forward_error") -> pd.DataFrame:
    """Per (method, kappa): `stats.summarize` of log10(`value`) over seeds (a non-finite error
    becomes NaN and is counted in nan_runs), with the geometric mean and its interval back on
    the error's own scale (gmean, low, high)."""
    err = runs[value]
    logs = runs.assign(log=np.log10(err.where(np.isfinite(err) & (err > 0))))
    s = stats.summarize(logs, "log", ["method", "kappa"])
    return s.assign(gmean=10 ** s["mean"], low=10 ** s["low"], high=10 ** s["high"])


def _kappa_axis(ax, kappas) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("condition number κ(A) (2-norm, dimensionless)")
    ax.axvline(1 / U32, color="#777777", lw=1, ls=":")
    ax.text(1 / U32, 1.0, " 1/u(fp32)", transform=ax.get_xaxis_transform(), ha="left", va="top",
            fontsize=8, color="#555555")
    ax.set_xlim(min(kappas) / 2, max(kappas) * 2)


def plot_errors(runs: pd.DataFrame, hardware: str = ""):
    """MP-22's figure: forward error (left) and normwise backward error (right) against kappa,
    per method: geometric mean over seeds with 95 % interval bars; dotted guides kappa u and u.
    A run whose error is not finite is drawn as an x at the top edge."""
    from precisionlab.study import plotting

    kappas = sorted(runs.kappa.unique())
    k = np.array(kappas)
    fig, (ax_f, ax_b) = plotting.figure(ncols=2, width=11.0, height=4.4)
    for ax, value in ((ax_f, "forward_error"), (ax_b, "backward_error")):
        s = log_summary(runs, value)
        for method, style in STYLE.items():
            g = s[s.method == method].sort_values("kappa")
            if g.empty:
                continue
            yerr = [(g.gmean - g.low).fillna(0), (g.high - g.gmean).fillna(0)]
            ax.errorbar(g.kappa, g.gmean, yerr=yerr, capsize=3, ms=5, lw=1.4, **style)
            bad = g[g.nan_runs > 0]
            if not bad.empty:
                ax.plot(bad.kappa, [1.0] * len(bad), "x", color=style["color"], ms=8,
                        transform=ax.get_xaxis_transform(), clip_on=False)
        _kappa_axis(ax, kappas)
    ax_f.plot(k, k * U32, ":", color=STYLE["fp32 LU"]["color"], lw=1, label="κ · u(fp32)")
    ax_f.plot(k, k * U64, ":", color=STYLE["fp64 LU"]["color"], lw=1, label="κ · u(fp64)")
    ax_b.axhline(U32, ls=":", color=STYLE["fp32 LU"]["color"], lw=1, label="u(fp32)")
    ax_b.axhline(U64, ls=":", color=STYLE["fp64 LU"]["color"], lw=1, label="u(fp64)")
    ax_f.set_ylabel("relative forward error (dimensionless)")
    ax_b.set_ylabel("normwise backward error (dimensionless)")
    ax_f.set_title("Forward error ‖x − x_true‖∞ / ‖x_true‖∞", fontsize=10)
    ax_b.set_title("Backward error ‖b − Ax‖∞ / (‖A‖∞‖x‖∞ + ‖b‖∞)", fontsize=10)
    handles, labels = ax_f.get_legend_handles_labels()
    methods = [labels.index(st["label"]) for st in STYLE.values() if st["label"] in labels]
    guides = [i for i in range(len(labels)) if i not in methods]
    fig.legend([handles[i] for i in methods], [labels[i] for i in methods], loc="upper center",
               ncol=3, fontsize=8, bbox_to_anchor=(0.5, 1.0))
    ax_f.legend([handles[i] for i in guides], [labels[i] for i in guides], fontsize=7,
                loc="lower right")
    ax_b.legend(handles=[h for h, lab in zip(*ax_b.get_legend_handles_labels(), strict=True)
                         if lab.startswith("u(")], fontsize=7, loc="center left")
    plotting.sign(fig, hardware)
    fig.tight_layout(rect=(0, 0.03, 1, 0.92))
    return fig


def plot_history(history: pd.DataFrame, seed: int, hardware: str = ""):
    """The refinement's forward error at each iterate, one line per kappa, for one seed: the
    fp32 solve's error at step 0, then one fp64-residual correction per step."""
    import matplotlib as mpl

    from precisionlab.study import plotting

    h = history[history.seed == seed]
    kappas = sorted(h.kappa.unique())
    cmap = mpl.colormaps["viridis"]
    fig, ax = plotting.figure(width=8.5, height=4.2)
    for i, kappa in enumerate(kappas):
        g = h[h.kappa == kappa].sort_values("iteration")
        color = cmap(0.85 * i / max(len(kappas) - 1, 1))  # viridis' last yellows are too pale
        above = kappa * U32 >= 1
        ax.plot(g.iteration, g.forward_error.where(np.isfinite(g.forward_error)),
                marker="o", ms=3.5, lw=1.3, color=color, ls="--" if above else "-",
                label=f"κ = {kappa_text(kappa)}")
    ax.set_yscale("log")
    ax.set_xlabel("refinement step (corrections applied; 0 = the fp32 solve)")
    ax.set_ylabel("relative forward error (dimensionless)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=7, ncol=2, title=f"seed {seed}; dashed: κ ≥ 1/u(fp32)", title_fontsize=7,
              loc="center left", bbox_to_anchor=(1.0, 0.5))
    return plotting.sign(fig, hardware)


def _range(s: pd.Series, fmt: str = "{:.0f}") -> str:
    """'4 [3, 5]': median [min, max] over seeds; '–' if there is no value."""
    s = s.dropna()
    if s.empty:
        return "–"
    return f"{fmt.format(s.median())} [{fmt.format(s.min())}, {fmt.format(s.max())}]"


def iteration_table(runs: pd.DataFrame) -> pd.DataFrame:
    """MP-22's table, one row per kappa: geometric-mean forward error of each method, the worst
    seed's ratio of refinement to the fp64 solve, refinement's iterations to convergence and
    corrections applied (median [min, max] over seeds) and how its runs ended."""
    err = runs.pivot_table(index=["kappa", "seed"], columns="method", values="forward_error")
    ratio = (err["refinement"] / err["fp64 LU"]).groupby(level="kappa").max()
    ir = runs[runs.method == "refinement"]
    rows = []
    for kappa, g in ir.groupby("kappa"):
        gm = {m: 10 ** np.log10(err.loc[kappa][m]).mean() for m in ("fp32 LU", "fp64 LU",
                                                                     "refinement")}
        status = g.status.value_counts()
        rows.append({
            "κ(A)": kappa_text(kappa), "κ · u(fp32)": f"{kappa * U32:.2g}",
            "forward error: fp32 LU": f"{gm['fp32 LU']:.1e}",
            "fp64 LU": f"{gm['fp64 LU']:.1e}", "refinement": f"{gm['refinement']:.1e}",
            "refinement / fp64 (worst seed)": f"{ratio[kappa]:.2g}",
            "iterations to converge": _range(g.iterations),
            "corrections applied": _range(g.steps),
            "ended": ", ".join(f"{c} {s}" for s, c in status.items())})
    return pd.DataFrame(rows).set_index("κ(A)")


def converged_steps(runs: pd.DataFrame) -> int:
    """The most corrections any converged refinement applied (0 if none converged): the step
    count the cost comparison charges refinement with."""
    ok = runs[(runs.method == "refinement") & (runs.status == "converged")]
    return int(ok.steps.max()) if len(ok) else 0


def cost_table(times: pd.DataFrame, counts: dict[int, dict[str, float]]) -> pd.DataFrame:
    """Time per solve at each size n (median of the interleaved repeats, ratio to the fp64
    solve measured in the same run) beside the counted share of refinement's arithmetic done in
    fp64; `counts` maps n to `experiments.refinement.flop_counts(n, steps)`."""
    from precisionlab import bench

    rows = []
    for n, g in times.groupby("n"):
        r = bench.ratios(g, "fp64 LU")
        rows.append({"n": n, "fp64 solve (ms)": f"{1e3 * r.median_s['fp64 LU']:.3g}",
                     "fp32 solve / fp64": f"{r['ratio_to_fp64 LU']['fp32 LU']:.2f}",
                     "refinement / fp64": f"{r['ratio_to_fp64 LU']['refinement']:.2f}",
                     "arithmetic in fp64 (counted, refinement)":
                         f"{100 * counts[n]['fp64_share']:.2g} %"})
    return pd.DataFrame(rows).set_index("n")


def facts(runs: pd.DataFrame, times: pd.DataFrame | None, n: int,
          counts: dict[int, dict[str, float]]) -> dict[str, str]:
    """The numbers the chapter's prose glues, as text."""
    out: dict[str, str] = {}
    err = runs.pivot_table(index=["kappa", "seed"], columns="method", values="forward_error")
    gm = np.log10(err).groupby(level="kappa").mean().rpow(10)
    ir = runs[runs.method == "refinement"]
    conv = (ir.status == "converged").groupby(ir.kappa).all()
    ok = [k for k, v in conv.items() if v]
    bad = [k for k, v in conv.items() if not v]
    kmin = min(gm.index)
    out["ir_err_low"] = f"{gm['refinement'][kmin]:.1g}"
    out["fp64_err_low"] = f"{gm['fp64 LU'][kmin]:.1g}"
    out["fp32_err_low"] = f"{gm['fp32 LU'][kmin]:.1g}"
    out["kappa_low"] = kappa_text(kmin)
    out["ok_max"] = kappa_text(max(ok)) if ok else "none"
    iters = ir[ir.kappa.isin(ok)].iterations
    out["iters_min"] = f"{iters.min():.0f}" if len(iters) else "–"
    out["iters_max"] = f"{iters.max():.0f}" if len(iters) else "–"
    if bad:
        kb = min(bad)
        out["stop_text"] = (
            f"From κ = {kappa_text(kb)} on it did not: there the fp32 solve errs by "
            f"{gm['fp32 LU'][kb]:.1g}, the refinement by {gm['refinement'][kb]:.1g}, while the "
            f"fp64 solve still gets {gm['fp64 LU'][kb]:.1g}.")
    else:
        out["stop_text"] = ("No refinement failed on this grid: rerun with larger log10_kappas "
                            "to see where it stops.")
    c = counts[n]
    out["lu_mflop"] = sig2(c["lu"] / 1e6)
    out["step_mflop"] = sig2(4 * n**2 / 1e6)
    out["steps_per_lu"] = sig2(c["lu"] / (4 * n**2))
    out["fp64_share"] = f"{100 * c['fp64_share']:.2g} %"
    if times is not None and not times.empty:
        from precisionlab import bench

        big = int(times.n.max())
        r = bench.ratios(times[times.n == big], "fp64 LU")["ratio_to_fp64 LU"]
        out["bench_n"] = str(big)
        out["t32"] = f"{r['fp32 LU']:.2f}"
        out["tir"] = f"{r['refinement']:.2f}"
    return out


def constants() -> str:
    """The exact unit roundoffs the chapter rests on (the same on every machine)."""
    return (f"u(fp32) = 2^-24 = {U32:.8g}; 1/u(fp32) = {2**24} (= {kappa_text(1 / U32)})\n"
            f"u(fp64) = 2^-53 = {U64:.8g}; 1/u(fp64) = {2**53}\n"
            f"fp32 digits: {-math.log10(U32):.2f}; fp64 digits: {-math.log10(U64):.2f}")
