"""Chapter 14's verdict (Q-6) from measured tables: pure functions, no measurement here.

Q-6 says int8 inference is mostly integer arithmetic with some floating point alongside, and
that this ensures accuracy. It is tested on torch.ao's dynamic int8 MiniLM with two tables from
`experiments.llm_quantization`: the matmul FLOP shares (`flops`: total and integer) and the
per-sentence fidelity of the embeddings to fp32 (`fidelity`: recipe, cosine, nn_agree), for the
practitioner's recipe (`JUDGED`, the one judged) and torch.ao's defaults (`CONTRAST`, reported).
"""

from __future__ import annotations

import math

import pandas as pd

from precisionlab.study import stats
from precisionlab.study.claims import Finding, sig2

# The recipe labels of `experiments.llm_quantization.Q6_RECIPES`, with what they stand for.
JUDGED = "per-channel W8 / A8"
CONTRAST = "torch.ao defaults"
RECIPE_WORDS = {JUDGED: "the practitioner's recipe: a weight scale per output channel, 8-bit "
                        "activations",
                CONTRAST: "torch.ao's quantize_dynamic defaults: one weight scale per tensor, "
                          "7-bit activations"}
# "Mostly integer": more than half of the matmul FLOPs run on int8 operands.
MOSTLY_SHARE = 0.5
# What a user of sentence embeddings relies on is similarity: scores against stored vectors and
# the ranking they give. Score: the mean 1 - cosine between a sentence's int8 and fp32 embedding
# must stay below 0.01 (the whole 95 % interval), so that after swapping the model without
# re-embedding an fp32 index, a sentence still matches its own stored vector at cosine >= 0.99 on
# average; the gap between a sentence's nearest and second-nearest neighbour in our set is about
# 0.07 at the median, so a shift of 0.01 leaves most rankings alone.
COSINE_MARGIN = 0.01
# Ranking: a retrieval's answer is its top hit; swapping fp32 for int8 must keep the top hit for
# at least 19 queries in 20 (the conventional 5 % error level), judged on the 95 % Wilson
# interval over sentences. The top hit is the strictest retrieval measure (a near-tie between
# two neighbours flips under any perturbation), and the share kept falls as the pool grows
# denser. A sample shows >= 95 % only with n >= z^2 * 0.95 / 0.05 = 73 sentences, all kept.
NN_AGREE_MIN = 0.95
LEVEL = stats.LEVEL


def _side(low: float, high: float, mark: float, above_is_good: bool) -> str:
    """'holds', 'fails' or 'undecided': where an interval lies against a pass mark."""
    if (low >= mark) if above_is_good else (high < mark):
        return "holds"
    if (high < mark) if above_is_good else (low > mark):
        return "fails"
    return "undecided"


def _recipe(fidelity: pd.DataFrame, label: str) -> tuple[str, str, str, float]:
    """For one recipe's rows: its numbers as text, the cosine and neighbour outcomes, and the
    mean 1 - cosine."""
    rows = fidelity[fidelity["recipe"] == label]
    loss = stats.interval(1.0 - rows["cosine"].to_numpy(dtype=float))  # 1 - cosine per sentence
    kept, n = int(rows["nn_agree"].sum()), len(rows)
    low, high = stats.wilson(kept, n)
    text = (f"{label} ({RECIPE_WORDS[label]}): 1 - cosine to fp32 {sig2(loss.mean)} "
            f"[95 % {sig2(loss.low)}, {sig2(loss.high)}], nearest neighbour kept for "
            f"{100 * kept / n:.1f} % [95 % Wilson {100 * low:.1f}, {100 * high:.1f}] of {n} "
            "sentences")
    return (text, _side(loss.low, loss.high, COSINE_MARGIN, above_is_good=False),
            _side(low, high, NN_AGREE_MIN, above_is_good=True), loss.mean)


def q6(flops: dict[str, int], fidelity: pd.DataFrame, evidence: str = "tbl-q6") -> Finding:
    """Q-6 on the practitioner's recipe (`JUDGED`), torch.ao's defaults reported beside it:
    'not testable here' if no matmul ran in int8; 'refuted' if either pass mark is missed beyond
    noise (the whole interval of 1 - cosine above COSINE_MARGIN, or the whole Wilson interval of
    the top hit kept below NN_AGREE_MIN): "ensures" is a guarantee, and a guarantee broken on
    one of the two things a user of embeddings relies on is not kept, whatever the other shows;
    'supported' if the integer share of matmul FLOPs exceeds MOSTLY_SHARE and both pass marks
    hold (cosine interval below the margin, Wilson interval at or above NN_AGREE_MIN);
    'nuanced' otherwise: mostly float with both marks held, or inconclusive (an interval
    straddles its mark)."""
    for key in ("total", "integer"):
        if key not in flops:
            raise ValueError(f"flops: needs key {key!r}; got {sorted(flops)}")
    for col in ("recipe", "cosine", "nn_agree"):
        if col not in fidelity.columns:
            raise ValueError(f"fidelity: has no column {col!r}")
    if not (fidelity["recipe"] == JUDGED).any():
        raise ValueError(f"fidelity: has no rows of recipe {JUDGED!r} (the one judged)")
    if flops["integer"] <= 0:
        return Finding("Q-6", "not testable here", "no matmul ran on integer operands here (no "
                       "int8 backend), so integer inference could not be measured", evidence)
    share = flops["integer"] / flops["total"]
    judged, cosine, neighbour, loss = _recipe(fidelity, JUDGED)
    numbers = (f"int8 share of matmul FLOPs {100 * share:.1f} %; {judged} (pass marks: 1 - "
               f"cosine below {COSINE_MARGIN:g}, top hit kept for {100 * NN_AGREE_MIN:g} %)")
    if (fidelity["recipe"] == CONTRAST).any():
        contrast, c_cosine, _, c_loss = _recipe(fidelity, CONTRAST)
        ratio = c_loss / loss if loss > 0 else math.inf
        fails = (f", and on their own they fail the cosine mark ({c_cosine})"
                 if c_cosine != "holds" else "")
        numbers += (f"; {contrast}: the defaults lose {'more' if ratio > 1 else 'no more'} "
                    f"({sig2(ratio)} times the practitioner's 1 - cosine){fails}")
    mostly = share > MOSTLY_SHARE
    kind = "mostly integer" if mostly else "not mostly integer"
    if cosine == "fails":
        return Finding("Q-6", "refuted", "even the practitioner's int8 does not keep fp32's "
                       f"embeddings ({kind}): {numbers}", evidence)
    if neighbour == "fails":
        held = ("although the embeddings stay within the cosine margin" if cosine == "holds"
                else "and the cosine interval straddles its mark")
        return Finding("Q-6", "refuted", "even the practitioner's int8 changes the top hit for "
                       f"more than 1 sentence in 20 beyond noise, {held} ({kind}): {numbers}",
                       evidence)
    if mostly and cosine == "holds" and neighbour == "holds":
        return Finding("Q-6", "supported", f"mostly integer and within both pass marks: "
                       f"{numbers}", evidence)
    why = []
    if not mostly:
        why.append("not mostly integer")
    undecided = [name for name, side in (("cosine", cosine), ("top hit", neighbour))
                 if side == "undecided"]
    if undecided:
        why.append(f"inconclusive: the {' and '.join(undecided)} interval straddles its pass "
                   "mark (more sentences would decide)")
    return Finding("Q-6", "nuanced", f"{'; '.join(why)}: {numbers}", evidence)
