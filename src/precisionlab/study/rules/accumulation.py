"""Verdicts on gradient accumulation (GA-1 to GA-4), from chapter 04's tables.

GA-1: accumulating k micro-batches simulates one batch k times larger. GA-2: accumulation cuts
the computation of each iteration. GA-3: precision loss is especially bad with accumulation.
GA-4 (the same article, elsewhere): accumulation is a way to reduce precision loss. Each rule
can return the verdict that supports its claim and the one that contradicts it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from precisionlab.study import stats
from precisionlab.study.claims import Finding, sig2

# GA-1: accumulation "is" the larger batch when its distance from the k = 1 run stays within this
# many times the rounding yardstick (the larger of a 1-ulp nudge of the initial weights and the
# next precision up): rounding-level differences are all a reordered sum can produce.
ROUND_FACTOR = 3.0
# ... and a batch of B/k without accumulation lies at least this many times farther, so the two
# are told apart by an order of magnitude, not by a hair.
SEPARATION = 10.0
# GA-1 is refuted where the smaller batch is less than this many times farther than accumulation:
# accumulation then lands about as far from the large batch as simply using a smaller one.
REFUTE_SEPARATION = 2.0
# GA-2: matmul FLOPs per optimizer step count as "cut" when k_max needs at least 1 % fewer than
# k = 1; FLOPs are counted exactly, so anything smaller would be a rounding of the count.
FLOP_TOL = 0.01
# GA-3: a precision's gradient error is "worse" with accumulation when the error at the largest k
# is at least 1.25 times that at k = 1 (beyond noise), "unaffected" when the paired interval of the
# ratio lies within 1/1.25 to 1.25: a quarter more error is the smallest change worth a warning.
WORSE_FACTOR = 1.25
# GA-4: accumulation "reduces" a setting's error when the error at the largest k is at most
# 1/1.25 = 0.8 times that at k = 1 (beyond noise): the same smallest change worth naming as
# GA-3's, in the other direction. It shows no reduction when the whole paired interval of the
# ratio lies above 0.8.
REDUCE_FACTOR = WORSE_FACTOR
MIN_SEEDS = 2  # a paired interval needs two seeds


def ga1(table: pd.DataFrame, evidence: str = "fig-ga1") -> Finding:
    """GA-1 from rows (seed, precision, comparison, k, rel_diff): relative parameter distance
    from the k = 1 run after training, for comparison 'accumulation' and 'smaller batch' at each
    k > 1 and the yardsticks '1-ulp nudge' and 'next precision up' (k = 1). Judged on the worst
    seed: supported if accumulation stays within ROUND_FACTOR x the yardstick and the smaller
    batch is SEPARATION x farther at every precision; refuted if at some precision the smaller
    batch is under REFUTE_SEPARATION x farther; nuanced otherwise."""
    rows, parts = {}, []
    for p, g in table.groupby("precision", sort=False):
        by = g.pivot_table(index="seed", columns="comparison", values="rel_diff", aggfunc="max")
        small = g[g.comparison == "smaller batch"].groupby("seed").rel_diff.min()
        yard = by[["1-ulp nudge", "next precision up"]].max(axis=1)
        acc = by["accumulation"]
        rows[p] = {"acc": acc.max(), "over": (acc / yard).max(), "sep": (small / acc).min()}
        parts.append(f"{sig2(rows[p]['acc'])} ({p})")
    over = max(r["over"] for r in rows.values())
    sep = min(r["sep"] for r in rows.values())
    ks = ", ".join(str(k) for k in sorted(table[table.comparison == "accumulation"].k.unique()))
    if over <= ROUND_FACTOR and sep >= SEPARATION:
        verdict = "supported"
    elif sep < REFUTE_SEPARATION:
        verdict = "refuted"
    else:
        verdict = "nuanced"
    reason = (f"runs accumulated over k = {ks} end at most {', '.join(parts)} from k = 1 "
              f"(relative, worst seed), at most {sig2(over)}x the rounding yardstick "
              f"(<= {sig2(ROUND_FACTOR)}x needed); batches of B/k without accumulation end at "
              f"least {sig2(sep)}x farther (>= {sig2(SEPARATION)}x needed)")
    return Finding("GA-1", verdict, reason, evidence)


def ga2(table: pd.DataFrame, evidence: str = "fig-ga2") -> Finding:
    """GA-2 from rows (precision, k, matmul_flops, activation_bytes), counted for one optimizer
    step. Supported if at every precision the FLOPs per optimizer step at the largest k are at
    least FLOP_TOL below k = 1; refuted if at none; nuanced if it depends on the precision. The
    reason also says what does shrink (saved activations, and FLOPs per micro-batch)."""
    k1, kmax = int(table.k.min()), int(table.k.max())
    facts = {}
    for p, g in table.groupby("precision", sort=False):
        g = g.set_index("k")
        facts[p] = {"flops": g.matmul_flops[k1], "ratio": g.matmul_flops[kmax] / g.matmul_flops[k1],
                    "act": g.activation_bytes[kmax] / g.activation_bytes[k1]}
    cut = [p for p, f in facts.items() if f["ratio"] < 1 - FLOP_TOL]
    if len(cut) == len(facts):
        verdict = "supported"
    elif not cut:
        verdict = "refuted"
    else:
        verdict = "nuanced"
    flops = ", ".join(f"{sig2(f['ratio'])}x ({p}, {sig2(f['flops'] / 1e9)} GFLOP at k = {k1})"
                      for p, f in facts.items())
    act = ", ".join(f"{sig2(f['act'])} ({p})" for p, f in facts.items())
    reason = (f"matmul FLOPs per optimizer step at k = {kmax} vs k = {k1}: {flops}; per "
              f"micro-batch they are 1/k, but a step runs k of them; what shrinks is peak saved "
              f"activation memory, at k = {kmax} to {act} of k = {k1} (1/k = {sig2(k1 / kmax)})")
    return Finding("GA-2", verdict, reason, evidence)


def _growth(table: pd.DataFrame, precision: str) -> stats.Interval:
    """Paired-by-seed interval of log(error at the largest k / error at the smallest k)."""
    g = table[table.precision == precision].pivot_table(index="seed", columns="k",
                                                        values="rel_error")
    return stats.interval(np.log(g[g.columns.max()] / g[g.columns.min()]))


def _word(iv: stats.Interval) -> str:
    """'worse', 'unaffected' (equivalent within the factor, and the seeds could detect a change
    of its size), 'inconclusive (underpowered)' or 'inconclusive'."""
    limit = math.log(WORSE_FACTOR)
    if iv.low > 0 and iv.mean >= limit:
        return "worse"
    outcome = stats.Comparison(iv, limit).outcome
    if outcome == "equivalent":
        return "unaffected"
    return "inconclusive (underpowered)" if outcome == "underpowered" else "inconclusive"


def _detectable(iv: stats.Interval) -> str:
    """The smallest error ratio the seeds could tell from 1 at 80 % power, as a factor."""
    d = stats.Comparison(iv, math.log(WORSE_FACTOR)).detectable
    return "?" if math.isnan(d) else f"{sig2(math.exp(d))}x"


def ga3(errors: pd.DataFrame, parts: pd.DataFrame | None = None,
        evidence: str = "fig-ga3") -> Finding:
    """GA-3 from `errors` rows (seed, precision, k, rel_error): the accumulated gradient's error
    against the exact one. Per precision, the paired log-ratio of the error at the largest k to
    k = 1: 'worse' (beyond noise and >= WORSE_FACTOR), 'unaffected' (within the factor) or
    inconclusive. Supported if every precision is worse, refuted if every one is unaffected,
    nuanced otherwise; not testable with fewer than MIN_SEEDS seeds. `parts` (seed, accumulator,
    k, rel_error: summing exact parts in each accumulator dtype) adds that to the reason."""
    n = errors.seed.nunique()
    if n < MIN_SEEDS:
        return Finding("GA-3", "not testable here", f"gradient error measured on {n} seed(s); a "
                       f"paired interval needs at least {MIN_SEEDS}", evidence)
    kmax, k1 = int(errors.k.max()), int(errors.k.min())
    growth = {p: _growth(errors, p) for p in dict.fromkeys(errors.precision)}
    words = {p: _word(iv) for p, iv in growth.items()}
    found = set(words.values())
    if found == {"worse"}:
        verdict = "supported"
    elif found == {"unaffected"}:
        verdict = "refuted"
    else:
        verdict = "nuanced"

    def factor(iv: stats.Interval) -> str:
        return (f"{sig2(math.exp(iv.mean))}x [{sig2(math.exp(iv.low))}, "
                f"{sig2(math.exp(iv.high))}], detectable {_detectable(iv)}")

    reason = (f"gradient error at k = {kmax} over k = {k1}, paired by seed (n={n}; detectable: the "
              "smallest ratio the seeds tell from 1 at 80 % power): "
              + ", ".join(f"{factor(growth[p])} ({p}: {words[p]})" for p in growth))
    if parts is not None:
        med = parts[parts.k == kmax].groupby("accumulator").rel_error.median()
        reason += (f"; summing {kmax} exact parts errs "
                   + ", ".join(f"{sig2(e)} in {a}" for a, e in med.items()))
    worse = [p for p, w in words.items() if w == "worse"]
    fine = [p for p, w in words.items() if w == "unaffected"]
    if worse and fine:
        reason += f": worse with {', '.join(worse)}, not with {', '.join(fine)}"
    return Finding("GA-3", verdict, reason, evidence)


def _log_ratio(table: pd.DataFrame, column: str, setting: str) -> stats.Interval:
    """Paired-by-seed interval of log(error at the largest k / error at the smallest k) for the
    rows of `table` whose `column` is `setting`."""
    t = table[table[column] == setting]
    t = t[t.k.isin([t.k.min(), t.k.max()])].assign(log_error=lambda d: np.log(d.rel_error))
    return stats.paired(t, "log_error", "k", t.k.max(), t.k.min())


def _reduction(iv: stats.Interval) -> str:
    """'reduces', 'no reduction' (with how: adds, unchanged, less but under the factor, or
    undecided but never the factor) or 'inconclusive', for one setting's log-ratio interval."""
    limit = math.log(REDUCE_FACTOR)
    if iv.high < 0 and iv.mean <= -limit:
        return "reduces"
    if iv.low > -limit:
        if iv.low > 0:
            return "no reduction: adds error"
        if iv.within(limit):
            return ("no reduction: less by under the factor, beyond noise" if iv.high < 0
                    else "no reduction: unchanged")
        return "no reduction: undecided, but never by the factor"
    return "inconclusive"


def ga4(errors: pd.DataFrame, parts: pd.DataFrame | None = None,
        evidence: str = "tbl-ga4") -> Finding:
    """GA-4 from GA-3's tables: `errors` (seed, precision, k, rel_error), the accumulated
    gradient at each precision against the exact one, and optionally `parts` (seed,
    accumulator, k, rel_error), exact parts summed in each accumulator dtype. Per setting, the
    paired log-ratio of the error at the largest k to k = 1: 'reduces' (beyond noise, by at
    least REDUCE_FACTOR), 'no reduction' (the whole interval above 1/REDUCE_FACTOR) or
    inconclusive. Supported if every setting reduces, refuted if none shows a reduction,
    nuanced otherwise; not testable with fewer than MIN_SEEDS seeds."""
    tables = [(errors, "precision", "")] + ([(parts, "accumulator", " accumulator alone")]
                                            if parts is not None else [])
    n = min(t.seed.nunique() for t, _, _ in tables)
    if n < MIN_SEEDS:
        return Finding("GA-4", "not testable here", f"gradient error measured on {n} seed(s); a "
                       f"paired interval needs at least {MIN_SEEDS}", evidence)
    words, texts = {}, []
    for table, column, suffix in tables:
        for setting in dict.fromkeys(table[column]):
            iv = _log_ratio(table, column, setting)
            name = f"{setting}{suffix}"
            words[name] = _reduction(iv)
            texts.append(f"{math.exp(iv.mean):.3g}x [{math.exp(iv.low):.3g}, "
                         f"{math.exp(iv.high):.3g}], detectable {_detectable(iv)} "
                         f"({name}: {words[name]})")
    kinds = {w.split(":")[0] for w in words.values()}
    if kinds == {"reduces"}:
        verdict = "supported"
    elif kinds == {"no reduction"}:
        verdict = "refuted"
    else:
        verdict = "nuanced"
    kmax, k1 = int(errors.k.max()), int(errors.k.min())
    lead = {"supported": "more micro-batches cut the error everywhere",
            "refuted": "more micro-batches never cut the error by the factor"}.get(
                verdict, "more micro-batches cut the error in some settings only")
    reason = (f"{lead}: error against the exact gradient at k = {kmax} over k = {k1}, paired by "
              f"seed (n={n}, a cut needs <= 1/{REDUCE_FACTOR:g}; detectable: the smallest ratio "
              "the seeds tell from 1 at 80 % power): " + ", ".join(texts))
    return Finding("GA-4", verdict, reason, evidence)
