"""What a figure drew, read back for the report tests, and the interval they expect, by hand.

The expected numbers are computed here from first principles (hard-coded t quantiles, no call
into `precisionlab.study.stats`), so a report test compares the figure with an independent sum.
"""

from __future__ import annotations

import numpy as np

# Student's t, 97.5 % quantile, by degrees of freedom (2 or 3 values).
T975 = {1: 12.706204736174698, 2: 4.302652729911275}


def mean_interval(values) -> tuple[float, float, float]:
    """Mean and 95 % t-interval of two or three values."""
    x = np.asarray(values, dtype=float)
    half = T975[len(x) - 1] * x.std(ddof=1) / np.sqrt(len(x))
    return x.mean(), x.mean() - half, x.mean() + half


def band_of(collection) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, low, high) of a fill_between band, from its polygon's vertices."""
    v = np.concatenate([p.vertices for p in collection.get_paths()])
    xs = np.unique(v[:, 0])
    return (xs, np.array([v[v[:, 0] == x, 1].min() for x in xs]),
            np.array([v[v[:, 0] == x, 1].max() for x in xs]))


def xy(line) -> np.ndarray:
    """The (x, y) points of a Line2D, as floats."""
    return np.asarray(line.get_xydata(), dtype=float)
