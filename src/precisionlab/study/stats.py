"""The study's statistics: paired-by-seed differences, 95 % intervals, one noise rule.

Runs that share a seed share their data split, initialization and batch order, so the study
compares them pair by pair: the difference per seed, its mean and a Student-t interval. One rule
decides "beyond noise" everywhere in the book: the 95 % interval of the paired differences
excludes 0. A claim of "no loss" is tested as equivalence: the whole interval lies inside the
margin the claim declares (two one-sided tests at 2.5 % each, a conservative TOST).

Every comparison also states its power: the smallest true difference the design would find
beyond noise 80 % of the time (`detectable_effect`, from the observed spread and n), with the
spread never taken below the metric's resolution (one test example, one token). An equivalence
the design could not have told from a difference as large as its margin is "underpowered".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

LEVEL = 0.95
POWER = 0.80  # the conventional power at which a design's detectable effect is stated


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided `level` t-interval over `n` values (NaN bounds when n < 2:
    one seed says nothing about noise, and NaN is neither beyond noise nor within a margin)."""

    mean: float
    low: float
    high: float
    n: int
    level: float = LEVEL
    sd: float = math.nan  # the values' standard deviation (ddof=1), for the design's power

    @property
    def beyond_noise(self) -> bool:
        """The study's one noise rule: the interval excludes 0."""
        return self.low > 0 or self.high < 0

    def within(self, margin: float) -> bool:
        """Equivalence: the whole interval lies strictly inside (-margin, +margin)."""
        return -margin < self.low and self.high < margin

    def text(self, scale: float = 1.0, unit: str = "") -> str:
        """'+0.12 [-0.30, +0.54] pp (n=3)': the mean and interval, times `scale`."""
        def fmt(x: float) -> str:
            return "?" if math.isnan(x) else f"{x * scale:+.2g}"
        return f"{fmt(self.mean)} [{fmt(self.low)}, {fmt(self.high)}]{unit} (n={self.n})"


def interval(values: np.ndarray | pd.Series | list[float], level: float = LEVEL) -> Interval:
    """Mean and Student-t interval of `values` (NaN values count: a diverged run is not
    dropped silently, it makes the interval NaN)."""
    from scipy import stats as sps

    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("values: need at least one value")
    if not 0 < level < 1:
        raise ValueError(f"level: must be in (0, 1); got {level!r}")
    mean = float(x.mean())
    if x.size < 2:
        return Interval(mean, math.nan, math.nan, 1, level)
    sd = float(x.std(ddof=1))
    half = float(sps.t.ppf(0.5 + level / 2, x.size - 1) * sd / math.sqrt(x.size))
    return Interval(mean, mean - half, mean + half, int(x.size), level, sd)


def wilson(kept: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The Wilson score interval of a proportion kept / n: unlike the Wald interval it stays in
    [0, 1] and keeps its coverage near 0 and 1, where agreement shares sit."""
    from scipy import stats as sps

    if n < 1 or not 0 <= kept <= n:
        raise ValueError(f"kept, n: need 0 <= kept <= n and n >= 1; got {kept}, {n}")
    z = float(sps.norm.ppf(0.5 + level / 2))
    p = kept / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def weighted_interval(values: np.ndarray | pd.Series | list[float],
                      weights: np.ndarray | pd.Series | list[float], level: float = LEVEL,
                      resamples: int = 2000, seed: int = 0) -> Interval:
    """The `weights`-weighted mean of `values` over units (e.g. a mean NLL per text window,
    weighted by the window's predicted tokens, so every token counts once, as llama.cpp does)
    and its percentile bootstrap interval, resampling units (`scipy.stats.bootstrap`, paired).
    NaN values make the interval NaN, as in `interval`."""
    from scipy import stats as sps

    x, w = np.asarray(values, dtype=float), np.asarray(weights, dtype=float)
    if x.size == 0 or x.shape != w.shape:
        raise ValueError(f"values, weights: need the same nonzero length; got {x.size}, {w.size}")
    if not (np.isfinite(w).all() and (w > 0).all()):
        raise ValueError("weights: must all be finite and > 0")
    mean = float((x * w).sum() / w.sum())
    if x.size < 2 or not np.isfinite(x).all():
        nan = math.nan
        return Interval(mean, nan, nan, int(x.size), level)

    def stat(v: np.ndarray, u: np.ndarray, axis: int = -1) -> np.ndarray:
        return (v * u).sum(axis=axis) / u.sum(axis=axis)

    res = sps.bootstrap((x, w), stat, paired=True, vectorized=True, n_resamples=resamples,
                        confidence_level=level, method="percentile",
                        rng=np.random.default_rng(seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    sd = float(res.standard_error) * math.sqrt(x.size)  # so that sd / sqrt(n) is the s.e.
    return Interval(mean, low, high, int(x.size), level, sd)


def detectable_effect(sd: float, n: int, level: float = LEVEL, power: float = POWER) -> float:
    """The smallest true mean difference that a two-sided paired t-test at `1 - level` finds
    beyond noise with probability `power`, for `n` pairs whose differences spread by `sd`
    (noncentral t with n - 1 degrees of freedom, as G*Power and statsmodels' TTestPower)."""
    from scipy import optimize
    from scipy import stats as sps

    if not 0 < power < 1:
        raise ValueError(f"power: must be in (0, 1); got {power!r}")
    if not 0 < level < 1:
        raise ValueError(f"level: must be in (0, 1); got {level!r}")
    if n < 2 or math.isnan(sd):
        return math.nan
    if sd == 0:
        return 0.0
    df = n - 1
    crit = float(sps.t.ppf(0.5 + level / 2, df))

    def shortfall(nc: float) -> float:  # the far tail's mass is NaN in scipy once negligible
        far = float(sps.nct.cdf(-crit, df, nc))
        return float(sps.nct.sf(crit, df, nc)) + (0.0 if math.isnan(far) else far) - power

    hi = crit + 4.0
    while shortfall(hi) < 0:  # tiny df: the noncentral t's heavy tails need a wider bracket
        hi *= 2
    nc = optimize.brentq(shortfall, 0.0, hi, xtol=1e-10)
    return nc * sd / math.sqrt(n)


def paired_differences(table: pd.DataFrame, value: str, column: str, treatment: object,
                       control: object, pair_on: str | list[str] = "seed") -> pd.Series:
    """`value` of `treatment` minus `value` of `control` (rows told apart by `column`), matched
    on `pair_on`; raises naming the pairs that are missing on either side."""
    for name in [value, column, *([pair_on] if isinstance(pair_on, str) else pair_on)]:
        if name not in table.columns:
            raise ValueError(f"table: has no column {name!r}; columns: {', '.join(table.columns)}")
    sides = {}
    for label in (treatment, control):
        part = table[table[column] == label]
        if part.empty:
            raise ValueError(f"{column}: no rows with {label!r}; values: "
                             f"{', '.join(map(str, table[column].unique()))}")
        sides[label] = part.set_index(pair_on)[value]
        if sides[label].index.has_duplicates:
            raise ValueError(f"pair_on: {pair_on!r} does not identify one {label!r} row per pair")
    t, c = sides[treatment], sides[control]
    unpaired = sorted(set(t.index) ^ set(c.index), key=str)
    if unpaired:
        raise ValueError(f"pair_on: pairs {unpaired} have a {treatment!r} or a {control!r} row, "
                         "not both")
    return (t - c.loc[t.index]).rename(f"{value}: {treatment} - {control}")


def paired(table: pd.DataFrame, value: str, column: str, treatment: object, control: object,
           pair_on: str | list[str] = "seed", level: float = LEVEL) -> Interval:
    """The interval of the paired differences `treatment - control` (see `paired_differences`)."""
    return interval(paired_differences(table, value, column, treatment, control, pair_on), level)


@dataclass(frozen=True)
class Comparison:
    """A paired difference judged against a claim's margin, with the design's power: the words
    a rule reasons with. `resolution` is the smallest step the metric can take (one test
    example's share of accuracy, one token's share of a mean); 0 when it is continuous."""

    interval: Interval
    margin: float
    resolution: float = 0.0

    @property
    def detectable(self) -> float:
        """The smallest true difference this design detects at 80 % power: from the observed
        spread of the paired differences, never below the metric's resolution."""
        return detectable_effect(max(self.interval.sd, self.resolution), self.interval.n,
                                 self.interval.level)

    @property
    def outcome(self) -> str:
        """'equivalent' (inside the margin, and the design could detect an effect of the
        margin's size), 'underpowered' (inside the margin, but it could not: an interval of
        zero width with no resolution stated, or a detectable effect above the margin),
        'higher' or 'lower' (beyond noise and not equivalent), or 'inconclusive' (neither: more
        seeds would be needed)."""
        if self.interval.within(self.margin):
            zero_width = self.interval.high == self.interval.low and self.resolution == 0
            if zero_width or not self.detectable <= self.margin:
                return "underpowered"
            return "equivalent"
        if self.interval.low > 0:
            return "higher"
        if self.interval.high < 0:
            return "lower"
        return "inconclusive"

    def power_text(self, scale: float = 1.0, unit: str = "") -> str:
        """'detectable 1.2 pp at 80 % power, margin 1 pp': what the design could have seen."""
        d = self.detectable
        seen = "?" if math.isnan(d) else f"{d * scale:.2g}{unit}"
        return (f"detectable {seen} at {POWER:.0%} power, margin "
                f"{self.margin * scale:.2g}{unit}").replace("%", " %")

    def text(self, scale: float = 1.0, unit: str = "") -> str:
        """The interval, then what the design could detect: '+0.1 [-0.3, +0.5] pp (n=3;
        detectable 1.2 pp at 80 % power, margin 1 pp)'."""
        return f"{self.interval.text(scale, unit)[:-1]}; {self.power_text(scale, unit)})"


def compare(table: pd.DataFrame, value: str, column: str, treatment: object, control: object,
            margin: float, pair_on: str | list[str] = "seed",
            resolution: float = 0.0) -> Comparison:
    """Paired comparison of `treatment` against `control` with an equivalence `margin` and the
    metric's `resolution` (see `Comparison`)."""
    if not margin > 0:
        raise ValueError(f"margin: must be > 0; got {margin!r}")
    if not resolution >= 0:
        raise ValueError(f"resolution: must be >= 0; got {resolution!r}")
    return Comparison(paired(table, value, column, treatment, control, pair_on), float(margin),
                      float(resolution))


def summarize(table: pd.DataFrame, value: str, by: str | list[str],
              level: float = LEVEL) -> pd.DataFrame:
    """Per group of `by`: mean, low, high, n of `value` (for error bars and tables). A group with
    a NaN value (a diverged run) gets NaN, and `nan_runs` counts them, so no figure hides it."""
    rows = []
    for key, part in table.groupby(by, sort=False):
        iv = interval(part[value].to_numpy())
        keys = key if isinstance(key, tuple) else (key,)
        names = [by] if isinstance(by, str) else list(by)
        rows.append({**dict(zip(names, keys, strict=True)), "mean": iv.mean, "low": iv.low,
                     "high": iv.high, "n": iv.n, "nan_runs": int(part[value].isna().sum())})
    return pd.DataFrame(rows)
