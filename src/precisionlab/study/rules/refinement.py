"""Verdict on mixed precision in scientific computing (MP-22), from chapter 10's table.

MP-22: mixed precision also helps scientific computing. Tested on iterative refinement of a
linear system Ax = b: LU in fp32, residuals and updates in fp64. The claim holds where the
refined solution is as accurate as a plain fp64 solve, for every condition number tried.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from precisionlab.study.claims import Finding, sig2

U32 = 2.0**-24  # unit roundoff of fp32: refinement with fp32 factors needs kappa(A) u32 < 1
# Refinement "reaches the fp64 level" at a condition number when, on the worst seed, its forward
# error is at most this many times the plain fp64 solve's. Both errors are of size kappa u(fp64)
# with different constants (their ratio spreads over about a decade, 0.1 to 2 here); a stalled
# refinement sits near kappa u(fp32), 2^29 (5e8) times higher. A factor of 10 absorbs the
# constants and still leaves seven orders of magnitude to a stall: no rounding flips it.
FP64_FACTOR = 10.0
# Refinement "helps" at a condition number when, on the worst seed, its forward error is at most
# 1/10 of the plain fp32 solve's: one decimal digit gained is the least a reader would call help.
BEAT_FACTOR = 10.0
COLUMNS = ("seed", "kappa", "method", "forward_error")


def _worst(runs: pd.DataFrame, treatment: str, control: str) -> pd.Series:
    """Per kappa, the largest ratio over seeds of `treatment`'s forward error to `control`'s
    (paired by seed); a NaN or infinite error counts as an infinite ratio."""
    err = runs.pivot_table(index=["kappa", "seed"], columns="method", values="forward_error",
                           aggfunc="max", dropna=False)
    ratio = (err[treatment] / err[control]).replace([np.nan, -np.inf], np.inf)
    return ratio.groupby(level="kappa").max()


def _k(kappa: float) -> str:
    """A condition number in the reason, two significant digits: 10, 1e7, 1.7e7."""
    return f"{kappa:.2g}".replace("e+0", "e").replace("e+", "e")


def mp22(runs: pd.DataFrame, evidence: str = "fig-mp22") -> Finding:
    """MP-22 from rows (seed, kappa, method, forward_error), method in 'fp32 LU', 'fp64 LU',
    'refinement', one row each per seed and kappa. Per kappa, judged on the worst seed:
    refinement *reaches fp64* if its error is <= FP64_FACTOR x the fp64 solve's, and *helps*
    if it is <= 1/BEAT_FACTOR of the fp32 solve's. Supported if it reaches fp64 at every kappa;
    refuted if it helps at none; nuanced otherwise (the reason names the kappa where it stops,
    beside 1/u(fp32))."""
    missing = [c for c in COLUMNS if c not in runs.columns]
    if missing:
        raise ValueError(f"runs: missing column(s) {', '.join(missing)}; need {', '.join(COLUMNS)}")
    methods = set(runs.method)
    if not {"fp32 LU", "fp64 LU", "refinement"} <= methods:
        raise ValueError(f"runs: need methods 'fp32 LU', 'fp64 LU' and 'refinement'; got "
                         f"{', '.join(sorted(methods))}")
    vs64 = _worst(runs, "refinement", "fp64 LU")
    vs32 = _worst(runs, "refinement", "fp32 LU")
    reaches = vs64 <= FP64_FACTOR
    helps = vs32 <= 1 / BEAT_FACTOR
    kappas = list(vs64.index)
    n = runs.seed.nunique()
    grid = f"kappa from {_k(kappas[0])} to {_k(kappas[-1])}, {len(kappas)} values, {n} seed(s)"
    yard = f"1/u(fp32) = {_k(1 / U32)}"
    if reaches.all():
        return Finding("MP-22", "supported", (
            f"refinement (fp32 LU, fp64 residuals) reaches the fp64 solve's forward error at "
            f"every kappa ({grid}): at most {sig2(vs64.max())}x it on the worst seed "
            f"(<= {sig2(FP64_FACTOR)}x needed); {yard}"), evidence)
    if not helps.any():
        return Finding("MP-22", "refuted", (
            f"refinement's forward error is never below 1/{sig2(BEAT_FACTOR)} of the plain fp32 "
            f"solve's ({grid}); best worst-seed ratio to fp32 {sig2(vs32.min())}; {yard}"),
            evidence)
    fails = [k for k in kappas if not reaches[k]]
    below = [k for k in kappas if k < fails[0]]
    where = (f"up to kappa = {_k(below[-1])} (worst seed at most {sig2(vs64[below].max())}x the "
             f"fp64 solve's error)" if below else "at no kappa")
    last = kappas[-1]
    reason = (f"refinement reaches the fp64 solve's forward error (<= {sig2(FP64_FACTOR)}x) "
              f"{where} but not from kappa = {_k(fails[0])} on, where its worst seed errs "
              f"{sig2(vs64[fails[0]])}x the fp64 solve ({grid}; {yard}); at kappa = {_k(last)} "
              f"it errs {sig2(vs32[last])}x the plain fp32 solve")
    if math.isinf(vs64[fails[0]]):
        reason += "; a non-finite error counts as a failure"
    return Finding("MP-22", "nuanced", reason, evidence)
