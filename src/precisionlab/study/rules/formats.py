"""Verdict rules of chapter 1 (number formats): FMT-1 and FMT-2.

FMT-1 (seeds 001, 004): half precision is "16-bit" and good enough for compute; bf16 and "TP32"
are new types still to be researched. Tested on the tables of `experiments.formats`: each
format's constants derived from its layout against torch.finfo and numpy/ml_dtypes, and the same
matrix product run in fp16 and bf16 across input magnitudes.

FMT-2 (seed 002, implied): attention softmax as written (exp over the raw scores) is safe in
low precision. Tested on `experiments.formats.softmax_probe`: the naive fp16 softmax against
fp64, over row lengths and peak scores, next to the max-subtracted fp16 softmax.
"""

from __future__ import annotations

import math

import pandas as pd

from precisionlab.study.claims import Finding, sig2

# A product 10 % off (relative Frobenius error) is wrong for any use; both formats round < 0.4 %.
FAIL_ERROR = 0.1
FAIL_SHARE = 0.5  # a format fails at a magnitude when most trials there are non-finite or wrong
# An error ratio of 2 is one mantissa bit of difference (fp16 has 3 more bits than bf16: 8x).
PRECISION_RATIO = 2.0
WRONG_ERROR = 0.01  # an attention weight off by 0.01 (20 fp16 roundoffs) is not rounding noise
BREAK_SHARE = 0.5  # a softmax breaks at a peak score when most rows there are wrong or non-finite
NAIVE = "naive exp, fp16"
STABLE = "max-subtracted, fp16"
FP16_MAX = 65504.0  # largest finite fp16 value: exp(s) overflows above ln of it


def matmul_shares(probe: pd.DataFrame) -> pd.DataFrame:
    """Per (format, log2_scale) of a `matmul_probe` table: the share of trials that failed
    (non-finite or error > FAIL_ERROR), the share non-finite, the median relative error."""
    p = probe.assign(fail=~probe["finite"].astype(bool) | (probe["rel_error"] > FAIL_ERROR),
                     nonfinite=~probe["finite"].astype(bool))
    return p.groupby(["format", "log2_scale"], sort=False).agg(
        fail=("fail", "mean"), nonfinite=("nonfinite", "mean"),
        median_error=("rel_error", "median")).reset_index()


def fmt1(layouts: pd.DataFrame, probe: pd.DataFrame, evidence: str = "tbl-formats") -> Finding:
    """FMT-1 from `layout_check` (format, quantity, reference, equal) and `matmul_probe`
    (format, log2_scale, finite, rel_error) with formats fp16 and bf16.

    not testable here: a derived constant disagrees with a reference (the layouts are wrong),
    or no magnitude where both formats compute; supported: fp16 never fails and the formats
    behave alike (one "16-bit" describes both); refuted: fp16 fails where bf16 does not and
    bf16 is measurably coarser where both work (two formats, neither simply "good enough");
    nuanced: anything between."""
    bad = layouts[~layouts["equal"].astype(bool)]
    refs = ", ".join(sorted(layouts["reference"].unique()))
    if not bad.empty:
        first = bad.iloc[0]
        return Finding("FMT-1", "not testable here",
                       f"{len(bad)} derived constants disagree with their reference (e.g. "
                       f"{first['format']} {first['quantity']}: {first['derived']:g} vs "
                       f"{first['reference_value']:g} from {first['reference']})", evidence)
    by = matmul_shares(probe).set_index(["log2_scale", "format"])
    by = by.rename(columns={"median_error": "err"})[["fail", "err"]].unstack("format").sort_index()
    fails16, failsbf = by[("fail", "fp16")] >= FAIL_SHARE, by[("fail", "bf16")] >= FAIL_SHARE
    both_ok = ~fails16 & ~failsbf
    if not both_ok.any():
        return Finding("FMT-1", "not testable here",
                       "no input magnitude where both fp16 and bf16 computed the product", evidence)
    ratio = float((by[("err", "bf16")] / by[("err", "fp16")])[both_ok].median())
    only16 = [int(k) for k in by.index[fails16 & ~failsbf]]
    onlybf = [int(k) for k in by.index[failsbf & ~fails16]]
    torch_checked = sorted(layouts.loc[layouts["reference"] == "torch.finfo", "format"].unique())
    window = f"2^{min(by.index[both_ok])}..2^{max(by.index[both_ok])}"
    fails = (f"fp16 failed (inf/NaN or > {sig2(FAIL_ERROR)} relative error) at input scales "
             f"{', '.join(f'2^{k}' for k in only16) or 'none'} where bf16 did not"
             + (f", bf16 at {', '.join(f'2^{k}' for k in onlybf)} where fp16 did not"
                if onlybf else ""))
    reason = (f"torch dtypes {', '.join(torch_checked)} have the range and precision their bit "
              f"layouts give ({refs} agree); the same matmul: {fails}; where both worked "
              f"({window}) bf16's error was {sig2(ratio)}x fp16's")
    distinct = bool(only16 or onlybf) or ratio >= PRECISION_RATIO
    if not distinct and not fails16.any():
        verdict = "supported"
    elif only16 and ratio >= PRECISION_RATIO:
        verdict = "refuted"
    else:
        verdict = "nuanced"
    return Finding("FMT-1", verdict, reason, evidence)


def _peak(x: float) -> str:
    """A peak score of the grid as written (grid values are exact; 10.5 must not read 10)."""
    return f"{x:g}"


def _first(series: pd.Series) -> float:
    """The smallest index (peak score) where `series` is true, NaN if none."""
    hit = series[series]
    return float(hit.index.min()) if len(hit) else math.nan


def softmax_shares(softmax: pd.DataFrame) -> pd.DataFrame:
    """Per (method, n, peak_score) of a `softmax_probe` table: the share of rows wrong (inf/NaN
    or error > WRONG_ERROR), loud (inf/NaN), silent (wrong but finite), and the median error of
    the finite rows."""
    t = softmax.assign(loud=~softmax["finite"].astype(bool))
    t = t.assign(wrong=t["loud"] | (t["max_abs_error"] > WRONG_ERROR))
    t = t.assign(silent=t["wrong"] & ~t["loud"])
    return t.groupby(["method", "n", "peak_score"]).agg(
        wrong=("wrong", "mean"), loud=("loud", "mean"), silent=("silent", "mean"),
        median_error=("max_abs_error", "median")).reset_index()


def fmt2(softmax: pd.DataFrame, evidence: str = "fig-softmax") -> Finding:
    """FMT-2 from `softmax_probe` (n, peak_score, trial, method, finite, max_abs_error).

    A row is wrong when its output is non-finite (loud) or off by more than WRONG_ERROR from
    fp64 (silent). supported: the naive fp16 softmax breaks at no (n, peak) measured; refuted:
    it breaks somewhere while the max-subtracted fp16 softmax stays right there; nuanced: the
    max-subtracted form breaks there too (fp16 itself, not the formula, is at fault)."""
    t = softmax.assign(silent=softmax["finite"].astype(bool)
                       & (softmax["max_abs_error"] > WRONG_ERROR))
    share = softmax_shares(softmax).set_index(["method", "n", "peak_score"])
    naive, stable = share.loc[NAIVE], share.loc[STABLE]
    broken = naive["wrong"] >= BREAK_SHARE
    top = float(t["peak_score"].max())
    stable_worst = float(t.loc[t["method"] == STABLE, "max_abs_error"].max())
    if not broken.any():
        return Finding("FMT-2", "supported",
                       f"naive fp16 softmax stayed finite and within {sig2(WRONG_ERROR)} of fp64 "
                       f"for n in {sorted(t['n'].unique())} and peak scores up to {_peak(top)}",
                       evidence)
    parts = []
    for n, g in naive.groupby(level="n"):
        g = g.droplevel("n")
        silent_at, loud_at = _first(g["wrong"] >= BREAK_SHARE), _first(g["loud"] >= BREAK_SHARE)
        errors = t[(t["method"] == NAIVE) & (t["n"] == n) & t["silent"]]["max_abs_error"]
        med = f" (median error {sig2(errors.median())})" if len(errors) else ""
        if math.isnan(silent_at):
            text = f"right up to peak {_peak(top)}"
        elif math.isnan(loud_at):
            text = f"silently wrong from peak {_peak(silent_at)}{med}, never inf/NaN"
        elif silent_at < loud_at:
            text = (f"silently wrong from peak {_peak(silent_at)}{med}, "
                    f"inf/NaN from {_peak(loud_at)}")
        else:
            text = f"inf/NaN from peak {_peak(loud_at)}"
        parts.append(f"n={n}: {text} (ln(65504/n) = {sig2(math.log(FP16_MAX / n))})")
    stable_broken = bool((stable["wrong"] >= BREAK_SHARE)[broken[broken].index].any())
    verdict = "nuanced" if stable_broken else "refuted"
    tail = (f"max-subtracted fp16 broke there too (worst error {sig2(stable_worst)})"
            if stable_broken else
            f"max-subtracted fp16 never broke (worst error {sig2(stable_worst)})")
    return Finding("FMT-2", verdict, f"naive fp16 softmax: {'; '.join(parts)}; {tail}", evidence)
