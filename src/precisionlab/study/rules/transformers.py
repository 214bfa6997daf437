"""Verdict rules of chapter 11 (GPT and BERT, run): LLM-1, LLM-2, LLM-3, LLM-4 and MP-27.

Each rule reads a table of `experiments.transformers` and returns a `claims.Finding`; the
docstrings say when each verdict word is returned, and the thresholds are named below.
"""

from __future__ import annotations

import math

import numpy as np
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
# entries never update, and their share grows as gradients shrink during training. A scaler is
# a training-loop addition, not a redesign of the model: MP-27 reports this, it does not count.
FLUSH_NEGLIGIBLE = 1e-4
# MP-27 with training runs: a mixed-precision run trains like fp32 when its final held-out loss
# minus that of the 32-true run of the same seed has its 95 % interval inside +-0.05 nats
# (e^0.05 = 1.05, a 5 % change of perplexity; the margin MP-24 uses for the same question).
TRAIN_MARGIN = 0.05
TRAINED_REFERENCE = "32-true"
TRAINED = ("bf16-mixed", "16-mixed")  # 16-mixed: with a loss scaler in the training loop


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
    """Does `precision` match fp32 within the margins on this model's seeds (the loss's relative
    difference below LOSS_MARGIN and the gradient's cosine at least COSINE_MIN, at the 95 %
    bounds)? And its numbers, as the reason gives them."""
    rows = part[part["precision"] == precision]
    if rows.empty:
        return False, f"{precision} not run"
    loss = stats.interval(rows["loss_rel_diff"])
    cos = stats.interval(rows["grad_cosine"])
    high = loss.high if not math.isnan(loss.high) else loss.mean
    low = cos.low if not math.isnan(cos.low) else cos.mean
    ok = bool(high < LOSS_MARGIN and low >= COSINE_MIN) and not math.isnan(high + low)
    text = (f"{precision} loss within {sig2(high)} of fp32 (relative), 1 - gradient cosine "
            f"<= {sig2(1 - low)} (95 % bounds)")
    if "grad_rel_error" in rows.columns:
        text += f", gradient error {sig2(100 * rows['grad_rel_error'].mean())} %"
    return ok, text


def _trains(trained: pd.DataFrame, model: str) -> tuple[str, str]:
    """One model's training runs: 'like' (bf16-mixed and 16-mixed each end with a final loss
    within +-TRAIN_MARGIN of 32-true's, paired by seed, every run finite), 'fails' (both
    non-finite or higher beyond noise and not equivalent), 'unclear' (anything else), or 'not
    trained' (no rows for it). With the text the reason gives."""
    part = trained[trained["model"] == model]
    if part.empty:
        return "not trained", f"{model}: not trained"
    found, texts = [], []
    for precision in TRAINED:
        rows = part[part["precision"] == precision]
        if rows.empty:
            found.append("unclear")
            texts.append(f"{precision} not trained")
            continue
        bad = int((~np.isfinite(rows["loss"].to_numpy(dtype=float))).sum())
        if bad:
            found.append("fails")
            texts.append(f"{precision} loss non-finite in {bad} of {len(rows)} seeds")
            continue
        c = stats.compare(part, "loss", "precision", precision, TRAINED_REFERENCE, TRAIN_MARGIN)
        found.append({"equivalent": "like", "higher": "fails"}.get(c.outcome, "unclear"))
        texts.append(f"{precision} {c.text(1, ' nats')} {c.outcome}")
    status = ("like" if set(found) == {"like"} else
              "fails" if set(found) == {"fails"} else "unclear")
    return status, f"{model}: final loss minus {TRAINED_REFERENCE}: {', '.join(texts)}"


def mp27(table: pd.DataFrame, trained: pd.DataFrame | None = None,
         evidence: str = "fig-mp27") -> Finding:
    """MP-27 from `table` (`autocast_table`: model, seed, precision, loss_rel_diff, grad_cosine,
    flushed, optional grad_rel_error and entries; one forward and backward pass per seed of
    unmodified GPT-2 / BERT built from reduced configs with random weights) and, if the chapter
    trains them, `trained` (model, seed, precision in 32-true / bf16-mixed / 16-mixed, loss: the
    final held-out loss).

    A loss scaler is a training-loop addition, not a redesign of the model: fp16 is judged with
    its loss scaled ('fp16-scaled'); what unscaled fp16 flushes is reported, not counted. One
    pass shows that a model runs unmodified under autocast and how far its loss and gradients
    move from fp32; only training shows that it trains as well.

    not testable here: fewer than 2 seeds per model; refuted: for some model neither bf16 nor
    scaled fp16 matches fp32 in the pass (relative loss difference >= LOSS_MARGIN or gradient
    cosine < COSINE_MIN at the 95 % bounds), or `trained` shows both bf16-mixed and 16-mixed
    ending worse than 32-true (non-finite, or higher beyond noise and outside +-TRAIN_MARGIN);
    supported: both types match in the pass on every model and `trained` shows bf16-mixed and
    16-mixed each within +-TRAIN_MARGIN of 32-true on every model; nuanced: anything else, in
    particular a pass that matches with no training data (`trained` None): the models run
    unmodified, but whether they train to fp32's quality is not shown."""
    models = list(table["model"].unique())
    if not models or table.groupby("model")["seed"].nunique().min() < 2:
        return Finding("MP-27", "not testable here", "fewer than 2 seeds per model", evidence)
    parts, probes = [], {}
    for model in models:
        part = table[table["model"] == model]
        bf, bf_text = _works(part, "bf16")
        fp, fp_text = _works(part, "fp16-scaled")
        probes[model] = "match" if bf and fp else "fails" if not (bf or fp) else "partial"
        size = (f" ({sig2(part['entries'].iloc[0] / 1e6)}M parameters)"
                if "entries" in part.columns else "")
        text = f"{model}{size}: {bf_text}; {fp_text}"
        if {"fp16", "fp16-scaled"} <= set(part["precision"]):
            flush = stats.paired(part, "flushed", "precision", "fp16", "fp16-scaled")
            need = flush.low > 0 and flush.mean > FLUSH_NEGLIGIBLE
            text += (f"; unscaled fp16 flushed {flush.text(100, ' %')} more of the nonzero "
                     "gradient entries than scaled")
            if need:
                text += ": fp16 needs the loss scaler (in the loop, not the model)"
        parts.append(text)
    n_seeds = int(table.groupby("model")["seed"].nunique().min())
    pass_text = (f"one forward and backward pass per seed ({n_seeds} seeds) of unmodified "
                 f"{', '.join(models)} with random weights under autocast, against fp32 (fp16 "
                 f"with its loss scaled, a training-loop addition): {'; '.join(parts)}")
    train_state = {}
    if trained is not None:
        train = [_trains(trained, m) for m in models]
        train_state = {m: s for m, (s, _) in zip(models, train, strict=True)}
        pass_text += f"; trained: {'; '.join(t for _, t in train)}"
    bad = [m for m, p in probes.items() if p == "fails"]
    bad += [m for m, s in train_state.items() if s == "fails" and m not in bad]
    if bad:
        return Finding("MP-27", "refuted", f"mixed precision fails on {', '.join(bad)}: "
                       f"{pass_text}", evidence)
    matched = all(p == "match" for p in probes.values())
    if matched and train_state and all(s == "like" for s in train_state.values()):
        return Finding("MP-27", "supported", "the unmodified models run under bf16 and fp16 "
                       "autocast and train like fp32 (fp16 with a loss scaler in the training "
                       f"loop): {pass_text}", evidence)
    if not matched:
        partial = [m for m, p in probes.items() if p != "match"]
        lead = f"only one 16-bit type matches fp32 on {', '.join(partial)}"
    elif trained is None:
        lead = ("the unmodified models run under bf16 and fp16 autocast with loss and gradients "
                "close to fp32, but the evidence is a single pass of small random-weight "
                "models: it shows they need no redesign to run, not that they train to fp32's "
                "quality")
    else:
        open_ = [m for m, s in train_state.items() if s != "like"]
        lead = (f"the unmodified models run under autocast close to fp32, but training is not "
                f"shown to match fp32 on {', '.join(open_)}")
    return Finding("MP-27", "nuanced", f"{lead}: {pass_text}", evidence)
