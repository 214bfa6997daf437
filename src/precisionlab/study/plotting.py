"""The book's one figure style: colour-blind-safe palette, labelled axes, the hardware named."""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

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
