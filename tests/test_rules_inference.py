import math

import pandas as pd
import pytest

from precisionlab.study.rules import inference as rules


def tables(sp_smol: dict, sp_mini: dict, kl: float = 1e-4, cos: float = 0.99999):
    speed = pd.DataFrame(
        [{"model": "smollm2", "precision": p, "speedup": s} for p, s in
         {"fp32": 1.0, **sp_smol}.items()]
        + [{"model": "minilm", "precision": p, "speedup": s} for p, s in
           {"fp32": 1.0, **sp_mini}.items()])
    fid = pd.DataFrame(
        [{"model": "smollm2", "precision": p, "kl": 0.0 if p == "fp32" else kl,
          "cosine": math.nan} for p in ["fp32", *sp_smol]]
        + [{"model": "minilm", "precision": p, "kl": math.nan,
            "cosine": 1.0 if p == "fp32" else cos} for p in ["fp32", *sp_mini]])
    return speed, fid


def test_supported_when_fast_and_faithful_everywhere():
    f = rules.llm6(*tables({"bf16-pure": 2.0, "int8-dynamic": 0.5}, {"fp16-pure": 1.5}), "hw")
    assert f.verdict == "supported" and f.hardware == "hw" and "smollm2" in f.reason


def test_refuted_when_every_16bit_is_slower():
    f = rules.llm6(*tables({"bf16-pure": 0.2, "fp16-autocast": 0.5, "int8-dynamic": 3.0},
                           {"fp16-pure": 0.9}), "hw")
    assert f.verdict == "refuted"


def test_nuanced_when_fast_on_one_model_only():
    f = rules.llm6(*tables({"bf16-pure": 2.0}, {"fp16-pure": 0.5}), "hw")
    assert f.verdict == "nuanced"


def test_fast_but_unfaithful_is_not_supported():
    f = rules.llm6(*tables({"bf16-pure": 2.0}, {"fp16-pure": 2.0}, kl=0.5), "hw")
    assert f.verdict == "nuanced"
    f = rules.llm6(*tables({"bf16-pure": 2.0}, {"fp16-pure": 2.0}, cos=0.9), "hw")
    assert f.verdict == "nuanced"


def test_not_testable_without_16bit_timings():
    f = rules.llm6(*tables({"int8-dynamic": 2.0}, {}), "hw")
    assert f.verdict == "not testable here"


@pytest.mark.parametrize("value", [rules.LLM6_FAST, rules.LLM6_SLOWER])
def test_thresholds_are_sane(value):
    assert 0.5 < value < 2
