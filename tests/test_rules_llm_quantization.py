"""rules.llm_quantization.q6 on small synthetic tables: every verdict it can return."""


import numpy as np
import pandas as pd
import pytest

from precisionlab.study.rules import llm_quantization as rules

MOSTLY = {"total": 100, "integer": 98}


def fidelity(cos: list[float], agree: list[bool], recipe: str = rules.JUDGED) -> pd.DataFrame:
    return pd.DataFrame({"recipe": recipe, "cosine": cos, "nn_agree": agree})


def sentences(n: int, loss: float, kept: int, recipe: str = rules.JUDGED) -> pd.DataFrame:
    """n sentences with 1 - cosine spread tightly around `loss`, `kept` of them keeping their
    nearest neighbour."""
    cos = 1 - loss * (1 + 0.05 * np.sin(np.arange(n)))
    return fidelity(list(cos), [True] * kept + [False] * (n - kept), recipe)


GOOD = sentences(100, 0.0005, 100)  # 100 of 100 kept: Wilson low 96.3 % >= 95 %
DEFAULTS = sentences(100, 0.05, 80, rules.CONTRAST)


def test_supported_when_mostly_integer_and_both_marks_hold():
    f = rules.q6(MOSTLY, pd.concat([GOOD, DEFAULTS]))
    assert f.verdict == "supported" and f.evidence == "tbl-q6" and "98.0 %" in f.reason
    assert rules.JUDGED in f.reason and rules.CONTRAST in f.reason
    assert "the defaults lose more (100 times" in f.reason
    assert "and on their own they fail the cosine mark (fails)" in f.reason
    assert rules.q6(MOSTLY, GOOD).verdict == "supported"  # the contrast is optional


def test_refuted_when_the_practitioners_embeddings_move_beyond_the_margin():
    far = sentences(20, 0.15, 20)
    f = rules.q6(MOSTLY, far)
    assert f.verdict == "refuted" and "practitioner" in f.reason
    # beyond the margin beyond noise refutes "ensures accuracy" even when mostly float
    assert rules.q6({"total": 100, "integer": 30}, far).verdict == "refuted"
    # the defaults alone failing does not: the claim is judged on the practitioner's recipe
    f = rules.q6(MOSTLY, pd.concat([GOOD, sentences(100, 0.15, 40, rules.CONTRAST)]))
    assert f.verdict == "supported" and "lose more" in f.reason


def test_refuted_when_the_top_hit_is_lost_beyond_noise_even_with_the_cosine_held():
    lost = sentences(160, 0.0065, 141)  # 88 % kept: Wilson [82, 92] wholly below 95 %
    f = rules.q6(MOSTLY, lost)
    assert f.verdict == "refuted"
    assert f.reason.startswith("even the practitioner's int8 changes the top hit for more than "
                               "1 sentence in 20 beyond noise, although the embeddings stay "
                               "within the cosine margin (mostly integer)")
    across = fidelity([0.995, 0.985, 0.999, 0.98] * 40, [True] * 141 + [False] * 19)
    f = rules.q6({"total": 100, "integer": 30}, across)
    assert f.verdict == "refuted" and "cosine interval straddles" in f.reason
    assert "(not mostly integer)" in f.reason


def test_nuanced_when_mostly_float_or_inconclusive():
    f = rules.q6({"total": 100, "integer": 30}, GOOD)
    assert f.verdict == "nuanced" and f.reason.startswith("not mostly integer")
    lost = sentences(160, 0.0065, 141)
    small = sentences(64, 0.0005, 64)  # all kept, but 64 sentences cannot show >= 95 %
    f = rules.q6(MOSTLY, small)
    assert f.verdict == "nuanced" and "inconclusive: the top hit interval" in f.reason
    across = fidelity([0.995, 0.985, 0.999, 0.98] * 25, [True] * 100)  # spans the margin
    f = rules.q6(MOSTLY, across)
    assert f.verdict == "nuanced" and "inconclusive: the cosine interval" in f.reason
    better = pd.concat([lost, sentences(160, 0.001, 158, rules.CONTRAST)])
    assert "the defaults lose no more" in rules.q6(MOSTLY, better).reason


def test_not_testable_without_integer_matmuls_and_bad_inputs():
    assert rules.q6({"total": 100, "integer": 0}, GOOD).verdict == "not testable here"
    with pytest.raises(ValueError, match="flops"):
        rules.q6({"total": 100}, GOOD)
    with pytest.raises(ValueError, match="fidelity"):
        rules.q6(MOSTLY, GOOD.drop(columns="cosine"))
    with pytest.raises(ValueError, match="recipe"):
        rules.q6(MOSTLY, GOOD.drop(columns="recipe"))
    with pytest.raises(ValueError, match="the one judged"):
        rules.q6(MOSTLY, DEFAULTS)


def test_marks_are_declared_and_ordered():
    assert 0 < rules.COSINE_MARGIN < 1
    assert 0 < rules.NN_AGREE_MIN < 1
    assert set(rules.RECIPE_WORDS) == {rules.JUDGED, rules.CONTRAST}
    assert 0 < rules.LEVEL < 1
