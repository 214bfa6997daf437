"""Rule for LLM-6 (mixed precision gives fast inference for Transformer and BERT models), on
real pretrained models: speed-ups over fp32 measured in one run, beside output fidelity.

Speed belongs to the machine that measured it, so the finding carries the hardware line and a
chapter records it in an unchecked cell.
"""

from __future__ import annotations

import pandas as pd

from precisionlab.study.claims import Finding, sig2

# "Fast inference" means a gain a user notices: at least 1.2x fp32's speed, well beyond the few
# per cent by which interleaved medians scatter on a shared machine.
LLM6_FAST = 1.2
# Slower means below 0.95x of fp32's speed: a smaller shortfall is not told apart from a tie.
LLM6_SLOWER = 0.95
# A 16-bit result is faithful when the mean KL of next-token distributions from fp32 is at most
# 0.01 nats (llama.cpp's quantizations of this size class sit near 0.01-0.1; 16-bit is expected
# far below) or, for an encoder, when the mean embedding cosine to fp32 is at least 0.999
# (nearest neighbours then practically never change).
LLM6_MAX_KL = 0.01
LLM6_MIN_COSINE = 0.999


def llm6(speed: pd.DataFrame, fidelity: pd.DataFrame, hardware: str,
         evidence: str = "tbl-llm6") -> Finding:
    """LLM-6 from `speed` (columns model, precision, speedup = fp32's median time over this
    precision's, one run per model) and `fidelity` (columns model, precision, kl and/or cosine;
    NaN where a metric does not apply). Mixed (16-bit) precisions are those with 'bf16' or
    'fp16' in their name; others (e.g. int8) are reported, never decide.

    supported: at every model some 16-bit precision runs >= LLM6_FAST x fp32 and is faithful;
    refuted: at every model every 16-bit precision is slower than fp32 (< LLM6_SLOWER);
    nuanced: in between (fast on some model or some precision only, or fast but unfaithful);
    not testable here: no 16-bit precision was timed."""
    sixteen = speed[speed.precision.str.contains("bf16|fp16")]
    if sixteen.empty:
        return Finding("LLM-6", "not testable here", "no 16-bit precision was timed on this "
                       "device", evidence, hardware)
    fid = fidelity.set_index(["model", "precision"])
    models = list(dict.fromkeys(speed.model))
    fast_ok, all_slow, parts = [], [], []
    for model in models:
        rows = sixteen[sixteen.model == model]
        good = False
        for r in rows.itertuples():
            f = fid.loc[(model, r.precision)] if (model, r.precision) in fid.index else None
            faithful = f is not None and _faithful(f)
            good |= bool(r.speedup >= LLM6_FAST and faithful)
        fast_ok.append(good)
        all_slow.append(bool(len(rows)) and bool((rows.speedup < LLM6_SLOWER).all()))
        desc = ", ".join(f"{r.precision} {sig2(r.speedup)}x" for r in
                         speed[(speed.model == model) & (speed.precision != "fp32")].itertuples())
        parts.append(f"{model}: {desc}")
    if all(fast_ok):
        verdict = "supported"
    elif all(all_slow):
        verdict = "refuted"
    else:
        verdict = "nuanced"
    fids = []
    for (model, p), f in fid.iterrows():
        if p == "fp32":
            continue
        if "kl" in f and pd.notna(f["kl"]):
            fids.append(f"{model} {p} KL {sig2(f['kl'])}")
        elif "cosine" in f and pd.notna(f["cosine"]):
            fids.append(f"{model} {p} 1-cos {sig2(1 - f['cosine'])}")
    reason = (f"speed-up over fp32 (one run each; fast >= {sig2(LLM6_FAST)}x): "
              + "; ".join(parts) + f"; fidelity (faithful: KL <= {sig2(LLM6_MAX_KL)} nats or "
              f"cosine >= {LLM6_MIN_COSINE}): " + ", ".join(fids))
    return Finding("LLM-6", verdict, reason, evidence, hardware)


def _faithful(f: pd.Series) -> bool:
    if "kl" in f and pd.notna(f["kl"]):
        return bool(f["kl"] <= LLM6_MAX_KL)
    if "cosine" in f and pd.notna(f["cosine"]):
        return bool(f["cosine"] >= LLM6_MIN_COSINE)
    return False
