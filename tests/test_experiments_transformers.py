"""Chapter 11's experiments on tiny settings: attention, perturbation, snippets, autocast."""

import math

import pytest
import torch
from torch.nn import functional as F

from precisionlab.study.experiments import transformers as X


def test_article_attention_is_noncausal_sdpa():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 5, 8, generator=g, dtype=torch.float64) for _ in range(3))
    ours = X.article_attention(q, k, v)
    assert torch.allclose(ours, F.scaled_dot_product_attention(q, k, v), atol=1e-12)
    assert not torch.allclose(ours, F.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_attention_table_overflows_in_fp16_only_with_raw_exp():
    t = X.attention_table([(1, 8, 16)], [0], dtypes=("float32", "float16"),
                          logit_scales=(1.0, 300.0))
    assert len(t) == 4
    normal = t[t["logit_scale"] == 1.0]
    assert normal["formula_finite"].all()
    assert (normal["diff_noncausal"] < 64 * normal["eps"]).all()
    assert (normal["diff_causal"] > 0.01).all()
    big16 = t[(t["logit_scale"] == 300.0) & (t["dtype"] == "float16")].iloc[0]
    assert not big16["formula_finite"] and big16["sdpa_finite"]
    assert math.isnan(big16["diff_noncausal"])


@pytest.fixture(scope="module")
def minilm():
    from precisionlab import pretrained

    return pretrained.load("minilm")


@pytest.mark.slow
def test_perturbation_causal_zero_encoder_nonzero(minilm):
    gpt = X.tiny_gpt2(0, n_layer=1, n_embd=32, n_head=2)
    t = X.perturbation_table({"gpt2": gpt, "minilm": minilm.model}, [3, 6], [0], length=8)
    assert len(t) == 2 * 2 * 8
    before = t[t["before_j"]]
    assert (before.loc[before["model"] == "gpt2", "delta"] == 0).all()
    assert (before.loc[before["model"] == "minilm", "delta"] > 1e-3).all()
    at_j = t[(t["position"] == t["j"])]
    assert (at_j["delta"] > 0).all()
    with pytest.raises(ValueError, match="positions"):
        X.perturbation_table({"gpt2": gpt}, [8], [0], length=8)


@pytest.mark.slow
def test_snippet_facts(minilm):
    facts = X.snippet_facts(minilm.tokenizer, n_layer=1).set_index("fact")
    assert facts.loc["GPT2Model output has .logits", "observed"] == "AttributeError"
    assert facts.loc["BertModel output has .logits", "observed"] == "AttributeError"
    assert facts.loc["BertModel accepts 1-D ids", "contradicts"]
    assert facts.loc["GPT2Model(GPT2Config()) loads pretrained weights", "contradicts"]
    assert "[CLS] [SEP] [MASK]" in facts.loc["ids 101-105 are ordinary words (BERT vocab)",
                                             "observed"]
    assert facts.loc["LM-head logits are a probability distribution", "contradicts"]


def test_autocast_table_tiny():
    t = X.autocast_table([0, 1], n_layer=1, width=32, batch=1, length=8)
    assert set(t["precision"]) == {"fp32", "bf16", "fp16", "fp16-scaled"}
    assert len(t) == 2 * 2 * 4
    ref = t[t["precision"] == "fp32"]
    assert (ref["loss_rel_diff"] == 0).all() and (ref["grad_rel_error"] == 0).all()
    low = t[t["precision"] != "fp32"]
    assert (low["grad_cosine"] > 0.9).all()
    # A loss scale of 2**16 cannot flush more entries than no scale does.
    for (_m, _s), part in t.groupby(["model", "seed"]):
        p = part.set_index("precision")
        assert p.loc["fp16-scaled", "flushed"] <= p.loc["fp16", "flushed"]
    with pytest.raises(ValueError, match="models"):
        X.autocast_table([0], models=("t5",))
