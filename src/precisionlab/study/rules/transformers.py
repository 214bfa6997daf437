"""Verdict rules of chapter 11 (GPT and BERT, run): LLM-1, LLM-2, LLM-3, LLM-4 and MP-27.

Each rule reads a table of `experiments.transformers` and returns a `claims.Finding`; the
docstrings say when each verdict word is returned, and the thresholds are named below.
"""

from __future__ import annotations

import math

import pandas as pd

from precisionlab.study import stats
from precisionlab.study.claims import Finding, sig2

# LLM-1: two correct attention computations in the same dtype differ by rounding only: a few
# units of the dtype's eps times |V| (standard normal here, so |V| is a few units). 64 eps
# covers the exp, the row sum, the division and a length-64 product with room to spare, and
# is far below the causal mask's effect (order 1).
ATTN_EPS = 64
# LLM-2/LLM-3: a causal model's earlier positions do not depend on a later token at all; the
# same computation repeated gives the same bits, so any change above fp32 roundoff of hidden
# states of order 1 (about 1e-6) is a leak. 1e-5 allows ten units of that.
LEAK_TOL = 1e-5
# A bidirectional encoder's earlier positions move by order 0.01-1 when a token changes; a move
# of 1e-3 (a hundred times LEAK_TOL) is unmistakably a dependence on the later token.
EFFECT_MIN = 1e-3
# MP-27: autocast "works" when the loss stays within 1 % (relative) of fp32 (bf16 rounds each
# product to 2**-8 = 0.4 %; errors of a few layers partly cancel in the mean loss) and the
# gradient points the same way: cosine >= 0.99 with fp32 (a 8 degree angle at most).
LOSS_MARGIN = 0.01
COSINE_MIN = 0.99
# fp16 "needs a scaler" when unscaled fp16 loses more than 1 in 10,000 of the nonzero fp32
# gradient entries (flushed to exactly zero) beyond noise, more than the scaled run does: such
# entries never update, and their share grows as gradients shrink during training.
FLUSH_NEGLIGIBLE = 1e-4


# ------------------------------------------------------------------------------------ LLM-1 ---

def llm1(table: pd.DataFrame, evidence: str = "tbl-llm1") -> Finding:
    """LLM-1 from `attention_table`.

    not testable here: no row where both the formula and SDPA are finite; refuted: where finite,
    the formula differs from non-causal SDPA by more than ATTN_EPS eps (it is not attention);
    supported: it equals non-causal SDPA, equals causal SDPA too (sequences of one token) and
    never overflows; nuanced: it equals non-causal SDPA but GPT's causal SDPA differs, or the
    raw exp overflows to inf/NaN where SDPA stays finite."""
    finite = table[table["formula_finite"] & table["sdpa_finite"]]
    if finite.empty:
        return Finding("LLM-1", "not testable here",
                       "no case where both the formula and SDPA were finite", evidence)
    ratio = finite["diff_noncausal"] / finite["eps"]
    causal = finite["diff_causal"] / finite["eps"]
    overflow = table[~table["formula_finite"] & table["sdpa_finite"]]
    worst = ratio.max()
    if worst > ATTN_EPS:
        return Finding("LLM-1", "refuted",
                       f"the formula differs from non-causal SDPA by up to {sig2(worst)} eps "
                       f"(> {ATTN_EPS}): it is not the attention torch computes", evidence)
    reason = (f"the formula equals non-causal SDPA to {sig2(worst)} eps at most over "
              f"{len(finite)} finite cases; causal SDPA differs by {sig2(causal.min())} eps or "
              f"more; the raw exp gave inf/NaN in {len(overflow)} of {len(table)} cases "
              f"({', '.join(sorted(overflow['dtype'].unique())) or 'none'}) where SDPA stayed "
              f"finite")
    if causal.min() > ATTN_EPS or len(overflow):
        return Finding("LLM-1", "nuanced", reason + ": right for BERT-style attention, not for "
                       "GPT's masked attention, and unsafe without subtracting the max",
                       evidence)
    return Finding("LLM-1", "supported", reason, evidence)


# --------------------------------------------------------------------------- LLM-2, LLM-3 ---

def before_j(table: pd.DataFrame, model: str) -> pd.Series:
    """Per (seed, j) with j > 0: the largest |change| of a hidden state before j, for `model`."""
    part = table[(table["model"] == model) & table["before_j"]]
    return part.groupby(["seed", "j"])["delta"].max()


def llm2(table: pd.DataFrame, causal: str = "gpt2", encoder: str = "minilm",
         evidence: str = "fig-llm2") -> Finding:
    """LLM-2 from `perturbation_table` (model, seed, j, position, before_j, delta).

    not testable here: either model has no case with positions before j; supported: the causal
    model's earlier states never move (<= LEAK_TOL) and the encoder's move (>= EFFECT_MIN) in
    every case; refuted: the causal model leaks, or the encoder never moves; nuanced: the
    encoder moves in some cases only."""
    gpt, bert = before_j(table, causal), before_j(table, encoder)
    if gpt.empty or bert.empty:
        return Finding("LLM-2", "not testable here",
                       "no perturbation with earlier positions for one of the models", evidence)
    moved = int((bert >= EFFECT_MIN).sum())
    reason = (f"changing token j moved {causal}'s earlier hidden states by at most "
              f"{sig2(gpt.max())} over {len(gpt)} cases, {encoder}'s by {sig2(bert.min())} to "
              f"{sig2(bert.max())} ({moved} of {len(bert)} cases >= {EFFECT_MIN:g})")
    if gpt.max() > LEAK_TOL or moved == 0:
        return Finding("LLM-2", "refuted", reason, evidence)
    if moved == len(bert):
        return Finding("LLM-2", "supported", reason, evidence)
    return Finding("LLM-2", "nuanced", reason, evidence)


def llm3(table: pd.DataFrame, encoder: str = "minilm", evidence: str = "fig-llm2") -> Finding:
    """LLM-3 from `perturbation_table`: does BERT factor as left-to-right conditionals?

    not testable here: no encoder case with positions before j; supported: the encoder's
    earlier states never move (<= LEAK_TOL), as a left-to-right model's must not; refuted: they
    move (>= EFFECT_MIN) in every case, so each position conditions on later tokens too;
    nuanced: in between."""
    bert = before_j(table, encoder)
    if bert.empty:
        return Finding("LLM-3", "not testable here",
                       f"no perturbation of {encoder} with earlier positions", evidence)
    moved = int((bert >= EFFECT_MIN).sum())
    reason = (f"{encoder}'s hidden states before the changed token moved by {sig2(bert.min())} "
              f"to {sig2(bert.max())} ({moved} of {len(bert)} cases >= {EFFECT_MIN:g})")
    if bert.max() <= LEAK_TOL:
        return Finding("LLM-3", "supported", reason + ": left-to-right, as the product says",
                       evidence)
    if moved == len(bert):
        return Finding("LLM-3", "refuted", reason + ": every position sees later tokens, so "
                       "the product of left-to-right conditionals is GPT's factorization, not "
                       "BERT's", evidence)
    return Finding("LLM-3", "nuanced", reason, evidence)


# ------------------------------------------------------------------------------------ LLM-4 ---

def llm4(facts: pd.DataFrame, evidence: str = "tbl-llm4") -> Finding:
    """LLM-4 from `snippet_facts` (fact, article assumes, observed, contradicts).

    not testable here: no facts; supported: no fact contradicts the snippets; refuted: the
    majority do (the snippets neither load pretrained models nor yield probabilities);
    nuanced: some do."""
    if facts.empty:
        return Finding("LLM-4", "not testable here", "no facts were recorded", evidence)
    bad = facts[facts["contradicts"].astype(bool)]
    reason = (f"{len(bad)} of {len(facts)} facts contradict the snippets"
              + (f": {'; '.join(bad['fact'] + ' -> ' + bad['observed'])}" if len(bad) else ""))
    if bad.empty:
        return Finding("LLM-4", "supported", reason, evidence)
    if len(bad) > len(facts) / 2:
        return Finding("LLM-4", "refuted", reason, evidence)
    return Finding("LLM-4", "nuanced", reason, evidence)


# ------------------------------------------------------------------------------------ MP-27 ---

def _works(part: pd.DataFrame, precision: str) -> tuple[bool, str]:
    """Does `precision` match fp32 within the margins on this model's seeds? And its numbers."""
    rows = part[part["precision"] == precision]
    loss = stats.interval(rows["loss_rel_diff"])
    cos = stats.interval(rows["grad_cosine"])
    high = loss.high if not math.isnan(loss.high) else loss.mean
    low = cos.low if not math.isnan(cos.low) else cos.mean
    ok = bool(high < LOSS_MARGIN and low >= COSINE_MIN) and not math.isnan(high + low)
    return ok, f"{precision} loss {sig2(loss.mean)} rel., cosine {sig2(cos.mean)}"


def mp27(table: pd.DataFrame, evidence: str = "fig-mp27") -> Finding:
    """MP-27 from `autocast_table` (model, seed, precision, loss_rel_diff, grad_cosine, flushed).

    not testable here: fewer than 2 seeds per model (no interval); refuted: for some model
    neither bf16 nor scaled fp16 matches fp32 within LOSS_MARGIN / COSINE_MIN; supported: bf16
    and fp16 both match and unscaled fp16 flushes no more than FLUSH_NEGLIGIBLE beyond the
    scaled run's (no scaler needed); nuanced: they match, but fp16 needs a scaler (or only one
    16-bit type matches)."""
    models = list(table["model"].unique())
    if not models or table.groupby("model")["seed"].nunique().min() < 2:
        return Finding("MP-27", "not testable here", "fewer than 2 seeds per model", evidence)
    parts, all_ok, any_fail, needs = [], True, False, []
    for model in models:
        part = table[table["model"] == model]
        bf, bf_text = _works(part, "bf16")
        fp, fp_text = _works(part, "fp16-scaled")
        flush = stats.paired(part, "flushed", "precision", "fp16", "fp16-scaled")
        need = flush.low > 0 and flush.mean > FLUSH_NEGLIGIBLE
        needs.append(need)
        all_ok &= bf and fp
        any_fail |= not (bf or fp)
        parts.append(f"{model}: {bf_text}; {fp_text}; unscaled fp16 flushed "
                     f"{flush.text(100, ' %')} more gradient entries than scaled")
    reason = "; ".join(parts)
    if any_fail:
        return Finding("MP-27", "refuted", reason, evidence)
    if all_ok and not any(needs):
        return Finding("MP-27", "supported", reason, evidence)
    return Finding("MP-27", "nuanced", reason + (": bf16 autocast works unchanged; fp16 needs a "
                   "loss scaler" if all_ok and any(needs) else ""), evidence)
