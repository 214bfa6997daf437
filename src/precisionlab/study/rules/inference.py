"""Rule for LLM-6 (mixed precision gives fast inference for Transformer and BERT models), on
real pretrained models: speed-ups over fp32 timed in interleaved rounds of one run, beside
output fidelity.

Mixed precision is the '*-mixed' policies (fp32 weights, autocast runs the matmuls in 16 bits):
they decide. The '*-true' casts and int8 are other recipes; the reason reports them, they never
decide. Precisions carry the training policies' names (`amp.policy`), 32-true the reference.
"Faster" is the book's one noise rule applied to the paired per-round speed-ups: the 95 %
interval of their logs excludes 0. Speed belongs to the machine that measured it, so the finding
carries the hardware line and a chapter records it in an unchecked cell.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from precisionlab.amp.policy import PRECISIONS, get_policy
from precisionlab.pretrained import REFERENCE as REF  # every speed-up and fidelity is against it
from precisionlab.study import stats
from precisionlab.study.claims import Finding, sig2, span

# "Fast inference" means a gain a user notices: at least 1.2x fp32's speed (geometric mean of the
# paired per-round ratios), and faster beyond noise.
LLM6_FAST = 1.2
# A 16-bit result is faithful when the mean KL of next-token distributions from fp32 is at most
# 0.01 nats (llama.cpp's quantizations of this size class sit near 0.01-0.1; 16-bit is expected
# far below) or, for an encoder, when the mean embedding cosine to fp32 is at least 0.999
# (nearest neighbours then practically never change).
LLM6_MAX_KL = 0.01
LLM6_MIN_COSINE = 0.999
# An interval needs at least two timed rounds; with fewer the rule cannot judge noise.
MIN_ROUNDS = 2


def is_mixed(precision: str) -> bool:
    """Whether `precision` is mixed precision (a '*-mixed' policy): the ones the claim is about."""
    return precision in PRECISIONS and get_policy(precision).mixed


def speedup_interval(rounds: pd.DataFrame, model: str, precision: str) -> stats.Interval:
    """The 95 % interval of the natural log of `precision`'s per-round speed-ups over fp32 on
    `model` (ratios multiply, so their logs are averaged; above 0 beyond noise: faster)."""
    part = rounds[(rounds.model == model) & (rounds.precision == precision)]
    if part.empty:
        raise ValueError(f"rounds: no rows for model {model!r} and precision {precision!r}")
    return stats.interval(np.log(part.speedup.to_numpy(dtype=float)))


def llm6(rounds: pd.DataFrame, fidelity: pd.DataFrame, hardware: str,
         evidence: str = "tbl-llm6") -> Finding:
    """LLM-6 from `rounds` (columns model, precision, round, speedup: 32-true's seconds in that
    round over this precision's, as `experiments.inference.latency` times them) and `fidelity`
    (columns model, precision, kl and/or cosine; NaN where a metric does not apply).

    A mixed precision is *fast* on a model when its speed-up (geometric mean over rounds) is
    at least LLM6_FAST, its interval lies above 1 and its outputs are faithful. supported: every
    mixed precision is fast on every model; refuted: no mixed precision is faster than
    32-true beyond noise on any model; nuanced: in between; not testable here: no mixed precision
    was timed, or with fewer than MIN_ROUNDS rounds."""
    need = {"model", "precision", "round", "speedup"} - set(rounds.columns)
    if need:
        raise ValueError(f"rounds: needs the columns {', '.join(sorted(need))} (per-round "
                         "speed-ups, from experiments.inference.latency)")
    models = list(dict.fromkeys(rounds.model))
    mixed = [p for p in dict.fromkeys(rounds.precision) if is_mixed(p)]
    if not mixed:
        return Finding("LLM-6", "not testable here", "no mixed precision was timed on "
                       "this device", evidence, hardware)
    counts = rounds.groupby(["model", "precision"]).size()
    few = [f"{m} {p}" for (m, p), n in counts.items() if is_mixed(p) and n < MIN_ROUNDS]
    if few:
        return Finding("LLM-6", "not testable here", f"fewer than {MIN_ROUNDS} timed rounds for "
                       f"{', '.join(few)}: noise cannot be judged", evidence, hardware)
    fid = fidelity.set_index(["model", "precision"])
    pairs = dict.fromkeys(zip(rounds.model, rounds.precision, strict=True))  # table order
    ivs = {(m, p): speedup_interval(rounds, m, p) for m, p in pairs if p != REF}

    def is_fast(model: str, precision: str) -> bool:
        iv = ivs.get((model, precision))  # None: not timed on this model
        return (iv is not None and iv.low > 0 and math.exp(iv.mean) >= LLM6_FAST
                and (model, precision) in fid.index and _faithful(fid.loc[(model, precision)]))

    fast = {(m, p): is_fast(m, p) for m in models for p in mixed}
    faster = [k for k in fast if k in ivs and ivs[k].low > 0]
    if all(fast.values()):
        verdict = "supported"
    elif not faster:
        verdict = "refuted"
    else:
        verdict = "nuanced"
    others = [p for p in dict.fromkeys(rounds.precision) if p != REF and p not in mixed]
    head = (f"mixed precision (the *-mixed policies: autocast, fp32 weights) was fast (>= "
            f"{sig2(LLM6_FAST)}x {REF}'s speed, faster beyond noise, faithful) in "
            f"{sum(fast.values())} of {len(fast)} model-precision pairs: "
            + ", ".join(_pace(p, ivs, models, fid) for p in mixed))
    parts = [head]
    if others:
        parts.append("also measured, not mixed precision and not deciding: "
                     + ", ".join(_pace(p, ivs, models, fid) for p in others))
    n_rounds = span(counts, lambda n: str(int(n)))
    detail = "; ".join(f"{m}: " + ", ".join(f"{p} {_interval(iv)}" for (mm, p), iv in ivs.items()
                                            if mm == m) for m in models)
    parts.append(f"speed-up over {REF}, geometric mean of {n_rounds} paired per-round ratios "
                 f"[95 % interval], per model: {detail}")
    fids = []
    for (model, p), f in fid.iterrows():
        if p == REF:
            continue
        if "kl" in f and pd.notna(f["kl"]):
            fids.append(f"{model} {p} KL {sig2(f['kl'])}")
        elif "cosine" in f and pd.notna(f["cosine"]):
            fids.append(f"{model} {p} 1-cos {sig2(1 - f['cosine'])}")
    parts.append(f"fidelity to {REF} (faithful: KL <= {sig2(LLM6_MAX_KL)} nats or cosine >= "
                 f"{LLM6_MIN_COSINE}): " + (", ".join(fids) or "not measured"))
    return Finding("LLM-6", verdict, "; ".join(parts), evidence, hardware)


def _sig3(x: float) -> str:
    """A speed-up to 3 significant digits: 1.16 must not print as the 1.2 it falls short of."""
    return f"{x:.3g}"


def _pace(precision: str, ivs: dict[tuple[str, str], stats.Interval], models: list[str],
          fid: pd.DataFrame | None = None) -> str:
    """'bf16-mixed 1.16-1.4x (faster beyond noise on 2 of 2 models, slower on 0, faithful on
    2)': one precision's speed-ups over the models, with the counts, the unwelcome ones
    included (a fast but unfaithful precision says so)."""
    got = [ivs[m, precision] for m in models if (m, precision) in ivs]
    ratio = span((math.exp(iv.mean) for iv in got), _sig3)
    faster = sum(iv.low > 0 for iv in got)
    slower = sum(iv.high < 0 for iv in got)
    untimed = len(models) - len(got)
    text = (f"{precision} {ratio}x (faster beyond noise on {faster} of {len(models)} models, "
            f"slower on {slower}")
    if fid is not None:
        checked = [m for m in models if (m, precision) in fid.index]
        ok = sum(_faithful(fid.loc[(m, precision)]) for m in checked)
        text += f", faithful on {ok}" + (f" of {len(checked)}" if len(checked) != len(models)
                                        else "")
    return text + (f", not timed on {untimed})" if untimed else ")")


def _interval(iv: stats.Interval) -> str:
    """'1.16x [1.09, 1.23]': a log-ratio interval as ratios, to 3 significant digits."""
    return (f"{_sig3(math.exp(iv.mean))}x [{_sig3(math.exp(iv.low))}, "
            f"{_sig3(math.exp(iv.high))}]")


def _faithful(f: pd.Series) -> bool:
    if "kl" in f and pd.notna(f["kl"]):
        return bool(f["kl"] <= LLM6_MAX_KL)
    if "cosine" in f and pd.notna(f["cosine"]):
        return bool(f["cosine"] >= LLM6_MIN_COSINE)
    return False
