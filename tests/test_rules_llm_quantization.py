"""rules.llm_quantization.q6 on small synthetic tables: every verdict it can return."""

import numpy as np
import pandas as pd
import pytest

from precisionlab.study.rules import llm_quantization as rules


def fidelity(cos: list[float], agree: list[bool]) -> pd.DataFrame:
    return pd.DataFrame({"cosine": cos, "nn_agree": agree})


GOOD = fidelity([0.9995, 0.9991, 0.9998, 0.9993], [True] * 4)


def test_supported_when_mostly_integer_and_faithful():
    f = rules.q6({"total": 100, "integer": 98}, GOOD)
    assert f.verdict == "supported" and f.evidence == "tbl-q6" and "98.0 %" in f.reason


def test_nuanced_when_mostly_float_or_fidelity_in_between():
    assert rules.q6({"total": 100, "integer": 30}, GOOD).verdict == "nuanced"
    across = fidelity([0.995, 0.985, 0.999, 0.98], [True] * 4)  # interval spans the margin
    f = rules.q6({"total": 100, "integer": 98}, across)
    assert f.verdict == "nuanced" and "margins" in f.reason
    lost = fidelity([0.9995, 0.9991, 0.9998, 0.9993] * 5, [True] * 18 + [False] * 2)  # 90 %
    assert rules.q6({"total": 100, "integer": 98}, lost).verdict == "nuanced"


def test_refuted_when_embeddings_move_far():
    far = fidelity(list(np.linspace(0.80, 0.85, 6)), [True] * 6)
    assert rules.q6({"total": 100, "integer": 98}, far).verdict == "refuted"
    # beyond the margin beyond noise refutes "ensures accuracy" even when mostly float
    assert rules.q6({"total": 100, "integer": 30}, far).verdict == "refuted"


def test_not_testable_without_integer_matmuls_and_bad_inputs():
    assert rules.q6({"total": 100, "integer": 0}, GOOD).verdict == "not testable here"
    with pytest.raises(ValueError, match="flops"):
        rules.q6({"total": 100}, GOOD)
    with pytest.raises(ValueError, match="fidelity"):
        rules.q6({"total": 100, "integer": 5}, GOOD.drop(columns="cosine"))


def test_margins_are_declared_and_ordered():
    assert 0 < rules.COSINE_MARGIN < 1
    assert 0 < rules.NN_AGREE_MIN <= 1
