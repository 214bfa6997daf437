"""experiments.llm_quantization on a tiny random Llama (built from a config, no download) and
on the real MiniLM (loaded once, offline) for Q-6."""

import math

import pytest
import torch
from torch import nn

from precisionlab import memory, pretrained
from precisionlab.quant import LLMQuantLinear, QuantizedLayer, backends, block_minmax_grid
from precisionlab.study.experiments import llm_quantization as lq
from precisionlab.study.rules import llm_quantization as rules
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


def test_dynamic_int8_recipes_scales_activations_and_head(tiny_llama):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    assert lq.Q6_RECIPES == (rules.JUDGED, rules.CONTRAST)  # the rule judges the first
    best, plain = (lq.dynamic_int8(tiny_llama, r) for r in lq.Q6_RECIPES)
    proj, plain_proj = best.model.layers[0].mlp.down_proj, plain.model.layers[0].mlp.down_proj
    assert isinstance(proj, DynamicLinear) and isinstance(plain_proj, DynamicLinear)
    assert proj.weight().qscheme() == torch.per_channel_affine
    assert plain_proj.weight().qscheme() == torch.per_tensor_affine
    # the causal LM's head: float in the practitioner's recipe, int8 in torch.ao's defaults
    assert type(best.lm_head) is nn.Linear and isinstance(plain.lm_head, DynamicLinear)
    assert not isinstance(tiny_llama.lm_head, DynamicLinear)  # the original is untouched
    # full 8-bit activations: the same kernel called without reduce_range; defaults reduce it
    x = torch.randn(5, proj.in_features)
    packed = proj._packed_params._packed_params
    torch.testing.assert_close(proj(x), torch.ops.quantized.linear_dynamic(
        x, packed, reduce_range=False), rtol=0, atol=0)
    torch.testing.assert_close(plain_proj(x), torch.ops.quantized.linear_dynamic(
        x, plain_proj._packed_params._packed_params, reduce_range=True), rtol=0, atol=0)
    assert lq._head_name(tiny_llama.model) is None  # no head on the bare decoder
    with pytest.raises(ParameterError, match="recipe"):
        lq.dynamic_int8(tiny_llama, "per-tensor W8 / A8")


def test_recipe_fidelity_stacks_recipes_on_one_fp32_reference():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=64)).eval()

    def tokenizer(texts: list[str], padding: bool, return_tensors: str) -> dict:
        ids = [[1 + (ord(c) % 48) for c in t] for t in texts]
        width = max(map(len, ids))
        return {"input_ids": torch.tensor([i + [0] * (width - len(i)) for i in ids]),
                "attention_mask": torch.tensor([[1] * len(i) + [0] * (width - len(i))
                                                for i in ids])}

    texts = ["alpha beta", "gamma", "delta epsilon zeta", "eta theta", "iota kappa lambda"]
    qmodels = {r: lq.dynamic_int8(bert, r) for r in lq.Q6_RECIPES} | {"same": bert}
    t = lq.recipe_fidelity(bert, qmodels, tokenizer, texts)
    assert list(t.columns[:2]) == ["recipe", "sentence"] and len(t) == 3 * len(texts)
    assert list(t["recipe"].unique()) == [*lq.Q6_RECIPES, "same"]
    same = t[t["recipe"] == "same"]
    assert same["nn_agree"].all() and same["cosine"].gt(1 - 1e-6).all()
    assert t["cosine"].between(0.5, 1 + 1e-6).all()


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
    # both recipes on the same sentences: per-channel weights and 8-bit activations move the
    # embeddings less than torch.ao's defaults (measured 1 - cos 0.0065 against 0.05)
    qmodels = {r: lq.dynamic_int8(minilm.model, r) for r in lq.Q6_RECIPES}
    assert lq.inventory(minilm.model, qmodels[lq.Q6_PRACTITIONER]).equals(inv)  # no head here
    both = lq.recipe_fidelity(minilm.model, qmodels, minilm.tokenizer, sentences)
    loss = (1 - both["cosine"]).groupby(both["recipe"]).mean()
    assert loss[lq.Q6_PRACTITIONER] < 0.5 * loss[lq.Q6_DEFAULTS]
