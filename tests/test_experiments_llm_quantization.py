"""experiments.llm_quantization on a tiny random Llama (built from a config, no download) and
on the real MiniLM (loaded once, offline) for Q-6."""

import math

import pytest
import torch
from torch import nn

from precisionlab import memory, pretrained
from precisionlab.quant import LLMQuantLinear, QuantizedLayer, backends, block_minmax_grid
from precisionlab.study.experiments import llm_quantization as lq
from precisionlab.validate import ParameterError


@pytest.fixture(scope="module")
def tiny_llama() -> nn.Module:
    pretrained.offline()
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def minilm() -> pretrained.Pretrained:
    return pretrained.load("minilm")


def test_config_labels_parse_and_bad_ones_fail_naming_the_parameter():
    assert lq.config_parts("W4 sym g64") == ("weight4", {"group_size": 64, "symmetric": True})
    assert lq.config_parts("SmoothQuant a=0.8") == ("smooth", {"alpha": 0.8})
    assert lq.config_parts("LLM.int8 |x|>6") == ("int8split", {"threshold": 6.0})
    assert lq.config_parts("W8A8 per-token") == ("dynamic", {"act": "per_token"})
    assert {lq.config_parts(c)[0] for c in lq.CONFIGS} == set(lq._PATTERNS)
    for bad in ("W3 sym g32", "W4 sym g48", "SmoothQuant a=1.5", ""):
        with pytest.raises(ParameterError, match="configs"):
            lq.config_parts(bad)


def test_quantized_models_swap_the_decoder_linears_only(tiny_llama):
    cal = torch.randint(0, 97, (2, 16))
    q = lq.quantized_model(tiny_llama, "W4 asym g32", cal)
    assert isinstance(q.model.layers[0].mlp.down_proj, QuantizedLayer)
    assert isinstance(q.lm_head, nn.Linear) and not isinstance(tiny_llama.model.layers[0].mlp
                                                               .down_proj, QuantizedLayer)
    split = lq.quantized_model(tiny_llama, "LLM.int8 |x|>6", cal)
    assert isinstance(split.model.layers[1].self_attn.q_proj, LLMQuantLinear)
    assert 0 < lq.weight_change(tiny_llama, q) < 0.3
    assert math.isnan(lq.weight_change(tiny_llama, lq.quantized_model(
        tiny_llama, "SmoothQuant a=0.5", cal)))


def test_evaluate_rows_metrics_and_the_aligned_grid(tiny_llama):
    windows, cal = torch.randint(0, 97, (3, 24)), torch.randint(0, 97, (2, 24))
    configs = ["W8 per-channel", "W4 sym g32", "W4 Q4_1-grid g32", "W8A8 per-tensor static",
               "W8A8 per-tensor dynamic", "SmoothQuant a=0.5", "LLM.int8 |x|>6"]
    t = lq.evaluate(tiny_llama, windows, configs, cal)
    assert len(t) == 3 * len(configs) and (t["kl"] >= -1e-12).all()
    assert t.groupby("config")["nll_ref"].nunique().eq(3).all()  # one reference per window
    kl = t.groupby("config")["kl"].mean()
    assert kl["W8 per-channel"] < kl["W4 sym g32"]
    # a model already on the Q4_1 grid re-quantizes onto it without change
    aligned = lq.quantized_model(tiny_llama, "W4 Q4_1-grid g32", cal)
    again = lq.evaluate(aligned, windows, ["W4 Q4_1-grid g32", "W4 sym g32"], cal)
    kl2 = again.groupby("config")["kl"].mean()
    assert kl2["W4 Q4_1-grid g32"] < 1e-8 < kl2["W4 sym g32"]
    grid = lq.weight_grid(aligned)
    proj = grid[grid["kind"].str.endswith("proj")]
    assert (proj["max_distinct"] <= 16).all() and (proj["share_le16"] == 1).all()
    with pytest.raises(ParameterError, match="group size"):
        lq.evaluate(tiny_llama, windows, ["W4 sym g96"], cal)  # 64-wide inputs


def test_block_grid_matches_affine_where_min_is_on_the_grid():
    w = torch.arange(32.0).reshape(1, 32) - 8  # min -8 is a multiple of the step 1
    torch.testing.assert_close(block_minmax_grid(w, 32, bits=5), w)


@pytest.mark.slow
def test_minilm_dynamic_int8_inventory_size_and_fidelity(minilm):
    q = backends.to_int8_backend(minilm.model, "torch.ao")
    inv = lq.inventory(minilm.model, q)
    by = inv.set_index("module")
    assert by.loc["Linear", "integer"] and by.loc["Linear", "count"] == 37
    for kind in ("Embedding", "LayerNorm", "GELUActivation"):
        assert not by.loc[kind, "integer"]
    assert inv["parameters"].sum() == minilm.parameters
    assert math.isclose(inv["parameter_share"].sum(), 1.0)
    sentences, _ = pretrained.stdlib_sentences(8)
    flops = lq.matmul_flops(minilm.model, minilm.tokenizer, sentences)
    assert 0.5 < flops["linear"] / flops["total"] < 1  # attention's own matmuls are counted
    assert minilm.model.config._attn_implementation == "sdpa"  # restored after counting
    assert memory.file_bytes(q) < 0.7 * memory.file_bytes(minilm.model)
    fid = lq.embedding_fidelity(minilm.model, q, minilm.tokenizer, sentences)
    assert len(fid) == 8 and fid["cosine"].between(0.9, 1.0 + 1e-6).all()
    same = lq.embedding_fidelity(minilm.model, minilm.model, minilm.tokenizer, sentences)
    assert same["nn_agree"].all() and same["cosine"].gt(1 - 1e-6).all()
