"""The zoo's MODEL/DATA factories, and in-process audits of the two real pretrained models.

The pretrained models come from the session fixtures (`smollm2`, `minilm` in conftest.py): the
zoo's loader is replaced by one that returns them, so no test loads a model twice."""

from __future__ import annotations

import json
import math

import pytest
import torch

from precisionlab.study import audit
from precisionlab.study.audit import zoo

ZOO = "precisionlab.study.audit.zoo"
SUMMARY_KEYS = {"model", "data", "task", "machine", "parameters", "amp", "overflow", "underflow",
                "ptq", "speed", "memory", "recommendations"}
# The smallest audit that still measures everything once: one step, a batch of 2, one PTQ
# configuration, the fewest timing repeats the audit allows.
TINY = {"steps": 1, "batch_size": 2, "optimizer": "sgd", "lr": 1e-4, "ptq": ["w8-channel"],
        "speed_repeats": 5, "eval_examples": 8, "calibration_examples": 2,
        "loss_scales": [0, 8, 16]}


def _use(monkeypatch: pytest.MonkeyPatch, **loaded: object) -> None:
    """The zoo hands out the session fixtures' models instead of loading its own."""
    monkeypatch.setattr(zoo, "_pretrained", loaded.__getitem__)


def _json(summary: dict) -> dict:
    """The summary after a strict JSON round trip (no NaN, only JSON types)."""
    return json.loads(json.dumps(summary, allow_nan=False))


def test_book_models_load_as_audit_subjects():
    s = audit.load(f"{ZOO}:mlp", f"{ZOO}:digits", "classification")
    assert s.name == "mlp" and s.parameters == 64 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    assert s.split.x_train.shape == (1347, 64) and s.split.x_test.shape == (450, 64)
    assert s.split.y_train.dtype == torch.int64 and int(s.split.y_train.max()) == 9
    assert 0.9e6 < sum(p.numel() for p in zoo.mlp_1m().parameters()) < 1.1e6

    r = audit.load(f"{ZOO}:regression_mlp", f"{ZOO}:regression_data", "regression")
    assert r.split.x_train.shape == (331, 10) and r.split.y_test.shape == (111,)
    assert r.split.y_train.dtype == torch.float32
    # standardized on the train part: mean 0, std 1 there
    assert abs(float(r.split.y_train.mean())) < 1e-5
    assert abs(float(r.split.y_train.std(unbiased=False)) - 1) < 1e-5
    assert r.make_model()(r.split.x_test[:3]).shape == (3,)  # (B, 1) squeezed for (B,) targets
    with pytest.raises(audit.AuditError, match="^DATA:"):  # MSE targets are not classes
        audit.load(f"{ZOO}:regression_mlp", f"{ZOO}:regression_data", "classification")


@pytest.mark.slow
def test_stdlib_text_is_shifted_windows_of_held_out_files(monkeypatch, smollm2):
    _use(monkeypatch, smollm2=smollm2)
    (x, y), (xt, yt) = zoo.stdlib_text()
    assert x.shape == y.shape == (8 * zoo.LM_TRAIN_PER_FILE, zoo.LM_CONTEXT)
    assert xt.shape == yt.shape == (4 * zoo.LM_TEST_PER_FILE, zoo.LM_CONTEXT)
    assert {t.dtype for t in (x, y, xt, yt)} == {torch.int64}
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(xt[:, 1:], yt[:, :-1])
    assert not set(zoo.LM_TRAIN_FILES) & set(zoo.LM_TEST_FILES)
    # the first window of the first train file is that file's first tokens
    text, _ = zoo.pretrained.stdlib_text(zoo.LM_TRAIN_FILES[0])
    first = smollm2.tokenizer(text, add_special_tokens=False)["input_ids"][:zoo.LM_CONTEXT + 1]
    assert x[0].tolist() == first[:-1] and y[0].tolist() == first[1:]
    model = zoo.smollm2()
    assert model is not smollm2.model and not model.config.use_cache
    assert next(model.parameters()).dtype == torch.float32


@pytest.mark.slow
def test_stdlib_sentences_and_the_padding_blind_classifier(monkeypatch, minilm):
    _use(monkeypatch, minilm=minilm)
    (x, y), (xt, yt) = zoo.stdlib_sentences()
    assert minilm.tokenizer.pad_token_id == zoo.MINILM_PAD_ID
    assert x.dtype == xt.dtype == y.dtype == torch.int64
    assert x.shape[1] == xt.shape[1] == zoo.SENTENCE_TOKENS
    n = len(zoo.SENTENCE_CLASSES)
    assert y.bincount().tolist() == [12] * n  # two thirds of each module's 18 sentences
    assert len(xt) == len(yt) >= 4 * n
    assert yt[:n].tolist() == list(range(n))  # classes take turns: a capped test set has all
    assert (x[:, -1] == zoo.MINILM_PAD_ID).all()  # no sentence was cut at SENTENCE_TOKENS

    torch.manual_seed(0)
    model = zoo.minilm_classifier().eval()
    assert model.encoder is not minilm.model
    short = xt[:4, :24]
    assert (short[:, -1] == zoo.MINILM_PAD_ID).all()
    with torch.no_grad():  # more padding does not change the logits: it is masked and unpooled
        a, b = model(short), model(xt[:4])
    assert a.shape == (4, n)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_audit_smollm2_on_stdlib_text(monkeypatch, smollm2):
    _use(monkeypatch, smollm2=smollm2)
    monkeypatch.setattr(zoo, "LM_CONTEXT", 16)  # every pass of a 135 M model costs seconds
    subject = audit.load(f"{ZOO}:smollm2", f"{ZOO}:stdlib_text", "language-model")
    assert subject.parameters == smollm2.parameters
    # one seed, fp32 only: each pass of SmolLM2 costs seconds here, and MiniLM's test below
    # covers the 16-bit precisions and the paired intervals
    params = audit.parameters("smoke", {**TINY, "seeds": [0], "batch_size": 1,
                                        "eval_examples": 2, "precisions": ["32-true"]})
    result = audit.run(subject, params)

    runs = result.runs
    assert len(runs) == 1 and runs["finite"].all()
    # perplexity of a 135 M LM on Python source in 16-token windows: well above 1, far below
    # the 49152 of a uniform guess over its vocabulary (measured: ~100)
    assert runs["metric"].between(2, 1000).all()
    assert runs["metric"].tolist() == pytest.approx(runs["test_loss"].map(math.exp).tolist())
    assert result.cosine["cosine"].sub(1).abs().max() < 1e-6  # fp32 against itself
    assert result.modules["name"].str.contains("lm_head").any()
    assert result.ptq["drop"].abs().lt(0.1 * runs["metric"].mean()).all()  # int8 per channel

    s = _json(audit.summary(subject, result))
    assert SUMMARY_KEYS <= set(s)
    assert s["model"]["name"] == "smollm2" and s["model"]["parameters"] == smollm2.parameters
    assert s["task"] == "language-model"
    assert all(isinstance(r, str) and r for r in s["recommendations"])


@pytest.mark.slow
def test_audit_minilm_classifier_on_stdlib_sentences(monkeypatch, minilm):
    _use(monkeypatch, minilm=minilm)
    monkeypatch.setattr(zoo, "SENTENCE_TOKENS", 16)  # cut long sentences: a cheaper audit
    subject = audit.load(f"{ZOO}:minilm_classifier", f"{ZOO}:stdlib_sentences",
                         "classification")
    params = audit.parameters("smoke", {**TINY, "seeds": [0, 1, 2],
                                        "precisions": ["32-true", "bf16-mixed"]})
    result = audit.run(subject, params)

    runs = result.runs
    assert len(runs) == 6 and runs["finite"].all() and runs["metric"].between(0, 1).all()
    row = result.parity.set_index("precision").loc["bf16-mixed"]
    assert row["n"] == 3 and row["loss_low"] <= row["loss_diff"] <= row["loss_high"]
    cos = result.cosine.set_index("precision")["cosine"]
    assert (cos.loc["32-true"] - 1).abs().max() < 1e-6
    assert cos.loc["bf16-mixed"].between(0.99, 1.0 + 1e-6).all()
    assert set(result.speed["precision"]) == {"32-true", "bf16-mixed"}

    s = _json(audit.summary(subject, result))
    assert SUMMARY_KEYS <= set(s)
    assert s["model"]["name"] == "minilm_classifier"
    assert s["data"]["n_train"] == 60 and s["data"]["n_test"] == len(subject.split.y_test)
