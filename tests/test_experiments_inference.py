import math

import pandas as pd
import pytest
import torch

from precisionlab import pretrained
from precisionlab.study.experiments import inference as inf
from precisionlab.validate import ParameterError


@pytest.fixture(scope="module")
def tiny_llama():
    """A randomly initialized Llama from a small config (no download)."""
    pretrained.offline()
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def minilm():
    return pretrained.load("minilm")


def test_variants_cast_pure_copies_and_quantize(tiny_llama):
    models = inf.variants(tiny_llama, ["32-true", "bf16-true", "16-mixed"], int8=True)
    assert models["32-true"] is tiny_llama and models["16-mixed"] is tiny_llama
    assert next(models["bf16-true"].parameters()).dtype == torch.bfloat16
    assert next(tiny_llama.parameters()).dtype == torch.float32
    assert inf.INT8 in models
    with pytest.raises(ValueError, match="precisions"):
        inf.variants(tiny_llama, ["fp8"])


def test_causal_parity_emulates_16_bit_matmuls_to_the_same_numbers_and_restores_the_switch(
        tiny_llama):
    """Parity measures numbers, not speed: emulated 16-bit matmuls (fp32 kernels on the 16-bit
    operands, rounded once) give the native kernels' KL up to the order of fp32 sums, and the
    global matmul16 switch is left as it was."""
    from precisionlab.amp.emulation import get_matmul16

    models = inf.variants(tiny_llama, ["32-true", "bf16-true", "16-mixed"], int8=False)
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(2))
    before = get_matmul16()
    emulated = inf.causal_parity(models, ids, matmul16_mode="emulated")
    native = inf.causal_parity(models, ids, matmul16_mode="native")
    assert get_matmul16() == before
    assert emulated.kl.to_numpy() == pytest.approx(native.kl.to_numpy(), rel=0.2, abs=1e-6)
    assert emulated.tokens.tolist() == [11] * len(emulated)
    assert inf.low_dtype("bf16-true") == torch.bfloat16 and inf.low_dtype("int8-dynamic") == \
        torch.float32


def test_causal_parity_fp32_is_its_own_reference(tiny_llama):
    models = inf.variants(tiny_llama, ["32-true", "16-true", "bf16-mixed"], int8=False)
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))
    t = inf.causal_parity(models, ids)
    assert len(t) == 6 and set(t.window) == {0, 1}
    ref = t[t.precision == "32-true"]
    assert (ref.kl.abs() < 1e-12).all() and (ref.delta_p == 0).all()
    assert (t.kl >= -1e-12).all() and t.finite.all()
    # perplexity is exp of the mean nll; random weights over 64 tokens sit near 64
    assert ref.perplexity.iloc[0] == pytest.approx(math.exp(ref.nll.iloc[0]))
    assert 20 < ref.perplexity.iloc[0] < 200
    low = t[t.precision == "16-true"]
    assert (low.kl < 1e-3).all()


@pytest.mark.slow
def test_encoder_parity_and_nearest_neighbours(minilm):
    sentences, _ = pretrained.stdlib_sentences(6)
    models = inf.variants(minilm.model, ["32-true", "bf16-true"], int8=True)
    t = inf.encoder_parity(models, minilm.tokenizer, sentences)
    assert len(t) == 18
    ref = t[t.precision == "32-true"]
    assert ref.cosine.min() > 1 - 1e-6 and ref.nn_agree.all()
    assert t[t.precision == "bf16-true"].cosine.min() > 0.99
    e = inf.embed(minilm.model, minilm.tokenizer, sentences, "32-true")
    assert torch.allclose(e.norm(dim=-1), torch.ones(6), atol=1e-5)


def test_latency_keeps_every_round_with_its_paired_speedup():
    calls = {"32-true": lambda: torch.ones(64, 64) @ torch.ones(64, 64),
             "bf16-true": lambda: torch.ones(64, 64, dtype=torch.bfloat16).sum()}
    t = inf.latency(calls, repeats=6, warmup=1)
    assert list(t.columns) == ["precision", "round", "seconds", "speedup"]
    assert len(t) == 12 and sorted(set(t["round"])) == list(range(6)) and (t.seconds > 0).all()
    ref = t[t.precision == "32-true"].set_index("round").seconds
    assert (t[t.precision == "32-true"].speedup == 1.0).all()
    low = t[t.precision == "bf16-true"].set_index("round")
    assert low.speedup.to_dict() == pytest.approx((ref / low.seconds).to_dict())
    with pytest.raises(ValueError, match="32-true"):
        inf.latency({"bf16-true": calls["bf16-true"]})


def test_latency_summary_gives_medians_spreads_and_ratio_intervals():
    rows = [{"model": m, "precision": p, "round": r, "seconds": s, "speedup": 1.0 if
             p == "32-true" else x}
            for m in ("smollm2", "minilm") for r, (s, x) in enumerate(
                [(1.0, 1.8), (2.0, 2.2), (3.0, 2.0), (4.0, 2.0)]) for p in ("32-true", "bf16-true")]
    t = inf.latency_summary(pd.DataFrame(rows)).set_index(["model", "precision"])
    assert list(t.index) == [("smollm2", "32-true"), ("smollm2", "bf16-true"),
                             ("minilm", "32-true"), ("minilm", "bf16-true")]
    r = t.loc[("smollm2", "bf16-true")]
    assert r.median_s == 2.5 and r.iqr_over_median == pytest.approx(1.5 / 2.5)
    assert r.speedup == pytest.approx((1.8 * 2.2 * 2.0 * 2.0) ** 0.25)  # geometric mean
    assert r.speedup_low < r.speedup < r.speedup_high and r["rounds"] == 4
    ref = t.loc[("minilm", "32-true")]
    assert ref.speedup == ref.speedup_low == ref.speedup_high == 1.0
    alone = inf.latency_summary(pd.DataFrame(rows).drop(columns="model").head(2))
    assert list(alone.precision) == ["32-true", "bf16-true"] and alone["rounds"].tolist() == [1, 1]
    assert alone.speedup_low.isna().all()  # one round: no interval


@pytest.mark.slow
def test_outliers_find_the_planted_channel(minilm):
    hidden = inf.residual_outputs(minilm.model, dict(minilm.tokenizer(["a short sentence"],
                                                                      return_tensors="pt")))
    assert len(hidden) == len(inf.blocks(minilm.model)) == 6
    x = torch.ones(5, 8)
    x[3, 2] = -400.0
    layers, channels = inf.outlier_stats([x])
    row = layers.iloc[0]
    assert row.max_abs == 400 and row.channel == 2 and row.token == 3 and row.ratio == 400
    assert len(channels) == 8


def test_rms_norm_overflows_only_in_fp16():
    v = torch.full((16,), 300.0)  # 300^2 = 90000 > 65504
    t = inf.rms_norm_in(v).set_index("format")
    assert t.finite["fp32"] and t.finite["bf16"] and not t.finite["fp16"]
    assert math.isinf(t.mean_x2["fp16"]) and t.output_all_zero["fp16"]
    assert t.max_abs_error["bf16"] < 0.01


def test_memory_formulas(tiny_llama):
    assert inf.kv_bytes_per_token(30, 3, 64, 2) == 23040
    r = inf.recipe_bytes().set_index("recipe").total
    assert r["32-true"] == 16 and r["bf16-true"] == 8
    shape = inf.model_shape(tiny_llama)
    assert shape == {"layers": 2, "hidden": 32, "kv_heads": 2, "head_dim": 8}
    s = inf.scaled_memory(inf.PUBLISHED, 10.0, 1000).set_index("model")
    assert s.kv_bytes_per_token_bf16["Llama-2-7B"] == 2 * 32 * 32 * 128 * 2
    assert s.adam_mixed_GB["Llama-2-70B"] == pytest.approx(69.0e9 * 16 / 1e9)


def test_activation_bytes_halve_in_pure_bf16(tiny_llama):
    models = inf.variants(tiny_llama, ["32-true", "bf16-true", "bf16-mixed"], int8=False)
    ids = torch.arange(16) % 64
    t = inf.activation_bytes(models, ids).set_index("precision")
    assert isinstance(t, pd.DataFrame) and (t.saved_bytes > 0).all()
    assert t.saved_bytes["bf16-true"] < t.saved_bytes["32-true"]
    assert t.bytes_per_token["32-true"] == t.saved_bytes["32-true"] / 16
    assert all(p.grad is None for p in tiny_llama.parameters())


def good_parameters(**changes):
    p = {"seeds": [0], "threads": 2, "device": "cpu", "precisions": ["32-true", "bf16-true"],
         "context": 16, "n_windows": 2, "windows_per_file": 1, "n_sentences": 8,
         "latency_sentences": 4,
         "latency_context": 8, "repeats": 5, "warmup": 0, "activation_context": 8,
         "kv_context": 4096, "int8": True}
    return p | changes


def test_check_parameters_returns_what_the_chapter_needs():
    p = inf.check_parameters(good_parameters(precisions=("32-true", "16-mixed")))
    assert p["precisions"] == ["32-true", "16-mixed"]
    assert (p["sentences"], p["sentences_sha"]) == pretrained.stdlib_sentences(8)
    assert len(p["sentences"]) == 8 and len(p["sentences_sha"]) == 64
    assert set(inf.PARAMETERS) <= set(p) and p["device"] == "cpu"  # the rest passes through
    assert inf.SMOL_CONTEXT == pretrained.MAX_CONTEXT["smollm2"]


@pytest.mark.parametrize(("name", "value"), [
    ("seeds", [-1]), ("seeds", []), ("threads", 0), ("threads", 2.0),
    ("precisions", ["fp8"]), ("precisions", ["bf16-true"]), ("precisions", "32-true"),
    ("context", 1), ("context", inf.SMOL_CONTEXT + 1),
    ("n_windows", 1), ("n_windows", len(pretrained.STDLIB_FILES) + 1),
    ("windows_per_file", 0),
    ("n_sentences", 2), ("n_sentences", 10**6),
    ("latency_sentences", 0), ("latency_sentences", 9),
    ("latency_context", 1), ("latency_context", 17),
    ("repeats", 4), ("warmup", -1), ("warmup", 101),
    ("activation_context", 17), ("kv_context", 0), ("int8", "yes"),
])
def test_check_parameters_names_the_bad_parameter(name, value):
    with pytest.raises(ParameterError) as err:
        inf.check_parameters(good_parameters(**{name: value}))
    assert str(err.value).startswith(f"{name}: ")


def test_check_parameters_needs_fp32_as_the_reference():
    with pytest.raises(ParameterError, match="precisions: must include '32-true', the reference"):
        inf.check_parameters(good_parameters(precisions=["bf16-true", "16-true"]))


def test_outlier_vector_is_the_token_with_the_largest_value():
    hidden = [torch.ones(4, 3), torch.ones(4, 3)]
    hidden[1][2, 0] = 50.0
    layers, _ = inf.outlier_stats(hidden)
    assert torch.equal(inf.outlier_vector(layers, hidden), torch.tensor([50.0, 1.0, 1.0]))


def test_kv_table_by_hand():
    t = inf.kv_table({"layers": 2, "hidden": 32, "kv_heads": 3, "head_dim": 4})
    assert list(t.columns) == ["format", "kv_bytes_per_token"]
    # 2 (K and V) x 2 layers x 3 heads x 4 dims = 48 values per token
    assert dict(zip(t.format, t.kv_bytes_per_token, strict=True)) == {
        "fp32": 192, "bf16": 96, "fp16": 96, "int8": 48}


def test_activation_per_unit_takes_the_least_bf16_row():
    acts = pd.DataFrame({"precision": ["32-true", "bf16-mixed", "bf16-true", "16-true"],
                         "bytes_per_token": [4000.0, 3000.0, 2000.0, 1000.0]})
    assert inf.activation_per_unit(acts, {"layers": 2, "hidden": 50}) == 20.0
    assert math.isnan(inf.activation_per_unit(acts[acts.precision == "32-true"],
                                              {"layers": 2, "hidden": 50}))
