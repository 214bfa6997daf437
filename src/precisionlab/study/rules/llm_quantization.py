"""Chapter 14's verdict (Q-6) from measured tables: pure functions, no measurement here.

Q-6 says int8 inference is mostly integer arithmetic with some floating point alongside, and
that this ensures accuracy. It is tested on torch.ao's dynamic int8 MiniLM with two tables from
`experiments.llm_quantization`: the matmul FLOP shares (`flops`: total and integer) and the
per-sentence fidelity of the embeddings to fp32 (`fidelity`: cosine, nn_agree).
"""

from __future__ import annotations

import pandas as pd

from precisionlab.study import stats
from precisionlab.study.claims import Finding, sig2

# "Mostly integer": more than half of the matmul FLOPs run on int8 operands.
MOSTLY_SHARE = 0.5
# Accuracy "ensured" for a sentence embedding: mean cosine to fp32 within 0.01 of 1 (the whole
# 95 % interval). Embeddings of different sentences in our set differ by far more (their
# nearest-neighbour cosines are typically 0.5-0.8), so 0.01 is a small fraction of the gaps a
# search or clustering relies on.
COSINE_MARGIN = 0.01
# ... and the nearest neighbour of at least 95 % of the sentences unchanged: a retrieval that
# changes its top hit for 1 query in 20 is no longer the same model for its users.
NN_AGREE_MIN = 0.95


def q6(flops: dict[str, int], fidelity: pd.DataFrame, evidence: str = "tbl-q6") -> Finding:
    """Q-6, with the book's equivalence-margin reading of "ensures accuracy": 'not testable
    here' if no matmul ran in int8 (no integer backend); 'refuted' if the embeddings move beyond
    the margin beyond noise (the whole 95 % interval of 1 - cosine above COSINE_MARGIN): the
    float parts did not ensure accuracy; 'supported' if the integer share of matmul FLOPs
    exceeds MOSTLY_SHARE and fidelity holds (interval wholly inside the margin and
    nearest-neighbour agreement >= NN_AGREE_MIN); 'nuanced' otherwise (mostly float, an
    interval across the margin, or neighbours lost while the cosine stays inside)."""
    for key in ("total", "integer"):
        if key not in flops:
            raise ValueError(f"flops: needs key {key!r}; got {sorted(flops)}")
    for col in ("cosine", "nn_agree"):
        if col not in fidelity.columns:
            raise ValueError(f"fidelity: has no column {col!r}")
    if flops["integer"] <= 0:
        return Finding("Q-6", "not testable here", "no matmul ran on integer operands here (no "
                       "int8 backend), so integer inference could not be measured", evidence)
    share = flops["integer"] / flops["total"]
    loss = stats.interval(1.0 - fidelity["cosine"].to_numpy())  # 1 - cosine, per sentence
    agree = float(fidelity["nn_agree"].mean())
    numbers = (f"int8 share of matmul FLOPs {100 * share:.1f} %; 1 - cosine to fp32 "
               f"{sig2(loss.mean)} [95 % {sig2(loss.low)}, {sig2(loss.high)}] (margin "
               f"{COSINE_MARGIN:g}); nearest neighbour kept for {sig2(100 * agree)} % of "
               f"{len(fidelity)} sentences (need {100 * NN_AGREE_MIN:g} %)")
    if loss.low > COSINE_MARGIN:
        return Finding("Q-6", "refuted", f"the int8 model does not keep fp32's answers: {numbers}",
                       evidence)
    mostly = share > MOSTLY_SHARE
    faithful = loss.high < COSINE_MARGIN and agree >= NN_AGREE_MIN
    if mostly and faithful:
        return Finding("Q-6", "supported", f"mostly integer and within the declared margins: "
                       f"{numbers}", evidence)
    why = "not mostly integer" if not mostly else "fidelity not inside the margins"
    return Finding("Q-6", "nuanced", f"{why}: {numbers}", evidence)
