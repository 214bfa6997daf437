"""The book's one figure style: colour-blind-safe palette, labelled axes, the hardware named;
and the helpers every report draws with: series that may turn non-finite, readable log axes."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from precisionlab.study import stats

# Okabe & Ito (2008): distinguishable under the common colour-vision deficiencies.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
           "#000000"]
FORMAT_COLORS = {
    "fp64": "#000000", "fp32": "#0072B2", "tf32": "#56B4E9", "fp16": "#E69F00",
    "bf16": "#009E73", "fp8_e4m3fn": "#D55E00", "fp8_e5m2": "#CC79A7", "int8": "#F0E442",
    "int4": "#999999",
}


def use_style() -> None:
    """Apply the house style (call once per chapter, after imports)."""
    mpl.rcParams.update({
        "figure.figsize": (7.0, 4.0),
        "figure.dpi": 110,
        "savefig.dpi": 110,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.prop_cycle": mpl.cycler(color=PALETTE),
        "legend.frameon": False,
        "font.size": 10,
    })


FOOT_POINTS = 7  # font size of the hardware line


def foot_lines(text: str, width: int) -> list[str]:
    """`text` broken at its '; ' separators into lines of at most `width` characters where the
    pieces allow (a piece longer than `width` keeps a line of its own)."""
    lines: list[str] = []
    for piece in text.split("; "):
        if lines and len(lines[-1]) + 2 + len(piece) < width:  # room for the ";" that ends it
            lines[-1] += "; " + piece
        else:
            lines.append(piece)
    return [line + (";" if i < len(lines) - 1 else "") for i, line in enumerate(lines)]


def sign(fig: Figure, hardware: str) -> Figure:
    """Name the hardware that made the figure, small, at its foot: broken into lines that fit
    the figure's width (one long line would widen the saved image and shrink the plot)."""
    chars = int(fig.get_figwidth() * 72 / (0.55 * FOOT_POINTS))  # average glyph ~0.55 em
    lines = foot_lines(f"Measured on: {hardware}", chars)
    fig.text(0.99, 0.005, "\n".join(lines), ha="right", va="bottom", fontsize=FOOT_POINTS,
             color="#555555")
    foot = len(lines) * 1.3 * FOOT_POINTS / 72 / fig.get_figheight()
    fig.tight_layout(rect=(0, foot + 0.01, 1, 1))
    return fig


def figure(ncols: int = 1, nrows: int = 1, width: float = 7.0, height: float = 4.0,
           **kwargs: object) -> tuple[Figure, object]:
    """A new figure in the house style."""
    use_style()
    return plt.subplots(nrows, ncols, figsize=(width, height), **kwargs)


def nonfinite_onset(frame: pd.DataFrame, value: str, step: str = "step",
                    seed: str = "seed") -> dict[Hashable, float]:
    """Per seed whose `value` is ever not finite (NaN, inf), the first such `step`; seeds that
    stay finite are left out. Where a run diverged, so a figure can say so instead of drawing."""
    bad = frame[~np.isfinite(frame[value].to_numpy(dtype=float))]
    return dict(bad.groupby(seed, sort=True)[step].min().items())


def diverged_text(onset: Mapping[Hashable, float], n_seeds: int) -> str:
    """'diverged at step 20' when every one of `n_seeds` seeds turned non-finite at the same
    step; else each step with its seeds ('diverged at step 20 (seed 0), 40 (seeds 1, 2)') and
    how many stayed finite. '' when none diverged."""
    if not onset:
        return ""
    by_step: dict[float, list[Hashable]] = {}
    for s, k in sorted(onset.items(), key=lambda kv: (kv[1], str(kv[0]))):
        by_step.setdefault(k, []).append(s)
    if len(by_step) == 1 and len(onset) >= n_seeds:
        return f"diverged at step {next(iter(by_step)):g}"
    parts = [f"{k:g} (seed{'s' if len(s) > 1 else ''} {', '.join(map(str, s))})"
             for k, s in by_step.items()]
    text = "diverged at step " + ", ".join(parts)
    if len(onset) < n_seeds:
        text += f"; {n_seeds - len(onset)} of {n_seeds} seeds finite"
    return text


def plot_steps(ax: Axes, frame: pd.DataFrame, value: str, label: str, *, band: bool = False,
               diverged: bool = False, step: str = "step", seed: str = "seed",
               **style: object) -> Line2D:
    """Draw `value` against `step`, the mean over seeds (and its 95 % interval band if `band`),
    only where a seed has a finite value: a step where none has one is a gap, never a marker,
    and a series with no finite value draws only its legend entry. The label says where seeds
    turned non-finite ('diverged at step k'); `diverged` marks it diverged by the caller's own
    rule even where every value is finite."""
    onset = nonfinite_onset(frame, value, step, seed)
    if onset:
        label = f"{label} ({diverged_text(onset, frame[seed].nunique())})"
    elif diverged:
        label = f"{label} (diverged)"
    ok = frame[np.isfinite(frame[value].to_numpy(dtype=float))]
    if not len(ok):
        (line,) = ax.plot([], [], label=label, **style)
        return line
    steps = np.sort(frame[step].unique())
    s = stats.summarize(ok, value, step).set_index(step).reindex(steps)
    (line,) = ax.plot(steps, s["mean"].to_numpy(dtype=float), label=label, **style)
    if band:
        ax.fill_between(steps, s.low.to_numpy(dtype=float), s.high.to_numpy(dtype=float),
                        color=line.get_color(), alpha=0.2, lw=0)
    return line


def plain(x: float, pos: int | None = None) -> str:
    """`x` as a plain decimal, no exponent (0.001, 0.8, 2, 1000): a tick formatter."""
    if x == 0:
        return "0"
    return np.format_float_positional(float(x), precision=6, fractional=False, trim="-")


class ReadableLogLocator(ticker.Locator):
    """Major ticks on a log axis, at least `min_ticks` of them inside the view however narrow
    it is: whole decades, else 1-2-5 per decade, else 1 to 9 per decade thinned so no two sit
    closer than a twelfth of the view (decades, 2 and 5 kept first), else evenly spaced round
    values (a view inside one decade, e.g. 0.9 to 1.2)."""

    def __init__(self, min_ticks: int = 4) -> None:
        self.min_ticks = min_ticks

    def __call__(self) -> np.ndarray:
        vmin, vmax = self.axis.get_view_interval()
        return self.tick_values(vmin, vmax)

    def tick_values(self, vmin: float, vmax: float) -> np.ndarray:
        lo, hi = sorted((float(vmin), float(vmax)))
        if not (lo > 0 and np.isfinite(hi)):
            return ticker.LogLocator().tick_values(max(lo, 1e-300), hi)

        def inside(t: np.ndarray) -> np.ndarray:
            return t[(t >= lo * (1 - 1e-9)) & (t <= hi * (1 + 1e-9))]

        for subs in ((1.0,), (1.0, 2.0, 5.0)):
            t = ticker.LogLocator(base=10.0, subs=subs, numticks=12).tick_values(lo, hi)
            if len(inside(t)) >= self.min_ticks:
                return t
        t = inside(ticker.LogLocator(base=10.0, subs=tuple(range(1, 10)),
                                     numticks=12).tick_values(lo, hi))
        gap = np.log10(hi / lo) / 12
        mantissa = np.round(t / 10.0 ** np.floor(np.log10(t) + 1e-9))
        rank = np.select([mantissa == 1, np.isin(mantissa, (2, 5)), mantissa == 3], [0, 1, 2], 3)
        kept: list[float] = []
        for x in t[np.argsort(rank, kind="stable")]:
            if all(abs(np.log10(x / k)) >= gap for k in kept):
                kept.append(float(x))
        if len(kept) >= self.min_ticks:
            return np.array(sorted(kept))
        t = ticker.MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
        return t[t > 0]


def readable_log(ax: Axes, axis: str = "y", min_ticks: int = 4) -> None:
    """Label a log or symlog axis of `ax` in plain decimals (0.8, 1, 2, not 8x10^-1 or 10^0),
    with no labels on minor ticks, and a base-10 log axis with at least `min_ticks` labelled
    values over a narrow range (another base keeps its own powers as ticks). Call after
    `set_yscale`/`set_xscale`, which resets the ticks."""
    a = ax.yaxis if axis == "y" else ax.xaxis
    scale = a.get_scale()
    if scale == "log":
        if a.get_transform().base == 10:
            a.set_major_locator(ReadableLogLocator(min_ticks))
    elif scale != "symlog":
        raise ValueError(f"axis: {axis!r} has scale {scale!r}, not log or symlog")
    a.set_major_formatter(ticker.FuncFormatter(plain))
    a.set_minor_formatter(ticker.NullFormatter())
