"""Chapter 12's experiments on tiny settings: what is trained, paired and timed."""

from __future__ import annotations

import math

import pytest
import torch

from precisionlab.amp import get_matmul16, set_matmul16
from precisionlab.study.experiments import language_models as lm

TINY = dict(steps=4, batch=8, context=8, d_model=8, n_layers=1, eval_every=2, n_train=64,
            n_val=16)


@pytest.fixture(scope="module")
def trained():
    return lm.train([0, 1], ["32-true", "bf16-mixed", "16-mixed", "16-true"], **TINY)


def test_train_gives_one_row_per_seed_and_precision_and_a_curve(trained):
    runs, curves = trained
    assert len(runs) == 8 and set(runs.precision) == {"32-true", "bf16-mixed", "16-mixed",
                                                      "16-true"}
    fp32 = runs[runs.precision == "32-true"]
    assert fp32.diverged.eq(False).all()
    assert all(math.isclose(p, math.exp(v)) for p, v in zip(fp32.val_perplexity, fp32.val_loss,
                                                           strict=True))
    # an untrained char model is near uniform over the vocabulary: loss below log(vocab) + 1
    vocab = len(lm.char_corpus().vocab)
    assert (fp32.val_loss < math.log(vocab) + 1).all()
    assert sorted(curves[(curves.seed == 0) & (curves.precision == "32-true")].step) == [2, 4]
    # a diverged run keeps its evaluations (NaN losses), so a figure can show where it broke
    cast = curves[(curves.seed == 0) & (curves.precision == "16-true")]
    assert sorted(cast.step) == [2, 4]
    if runs[runs.precision == "16-true"].diverged.any():
        assert cast.val_loss.isna().any()
    # only 16-mixed uses the loss scaler: its scale starts at 2^16
    assert runs[runs.precision == "16-mixed"].final_scale.min() >= 2.0**15
    assert (runs[runs.precision != "16-mixed"].final_scale == 1.0).all()


def test_same_seed_starts_from_the_same_weights():
    a = lm.model_for(lm.load(3, 8, 16, 8), 3, 8, 1)
    b = lm.model_for(lm.load(3, 8, 16, 8), 3, 8, 1)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    facts = lm.corpus_facts(lm.load(3, 8, 16, 8))
    assert len(facts["sha256"]) == 64 and facts["context"] == 8


def test_step_times_are_steady_state_ratios_to_32_true_in_one_run():
    before = set_matmul16("emulated")
    try:
        times = lm.step_times([0], ["32-true", "bf16-mixed"], time_steps=3, batch=8, context=8,
                              d_model=8, n_layers=1, repeats=5, warmup=1)
        assert get_matmul16() == "emulated"  # timed natively, the mode restored
    finally:
        set_matmul16(before)
    assert len(times) == 10 and set(times.repeat) == set(range(5))
    # steady state: two of three steps timed, set-up and the first step left out
    assert (times.seconds_per_step > 0).all()
    assert (times.seconds_per_step < times.seconds / 2).all()
    r = lm.ratios(times)
    assert list(r.precision) == ["32-true", "bf16-mixed"]
    assert r.ratio.iloc[0] == 1.0 and r.ratio.iloc[1] > 0
    med = times.groupby("precision").seconds_per_step.median()
    assert r.ratio.iloc[1] == pytest.approx(med["bf16-mixed"] / med["32-true"])
    with pytest.raises(ValueError, match="precisions"):
        lm.step_times([0], ["bf16-mixed"])
    with pytest.raises(ValueError, match="time_steps"):
        lm.step_times([0], ["32-true"], time_steps=1)
    with pytest.raises(ValueError, match="must be one of"):
        lm.step_times([0], ["32-true", "16-true, eps 1e-9"])


def test_recipes_map_labels_to_a_precision_and_adams_eps():
    assert lm.recipe("16-true") == ("16-true", None)
    assert lm.recipe("16-true, eps 1e-4") == ("16-true", 1e-4)
    assert set(lm.PRECISIONS) < set(lm.RECIPES)  # the precisions keep their own names
    with pytest.raises(ValueError, match="precisions: each must be one of 32-true"):
        lm.train([0], ["16-true, eps 1e-3"], **TINY)


def test_working_pure_fp16_recipe_trains_where_the_naive_one_divides_by_zero():
    runs, _ = lm.train([0], ["32-true", "16-true", "16-true, eps 1e-4"], **{**TINY, "steps": 3})
    by = runs.set_index("precision")
    assert by.eps.to_dict() == {"32-true": 1e-8, "16-true": 1e-8, "16-true, eps 1e-4": 1e-4}
    assert by.diverged["16-true"] and by.nonfinite_steps["16-true"] >= 1
    assert not by.diverged["16-true, eps 1e-4"] and by.nonfinite_steps["16-true, eps 1e-4"] == 0
    assert by.val_loss["16-true, eps 1e-4"] < math.log(len(lm.char_corpus().vocab)) + 1


def test_step_times_read_each_call_through_the_trainers_steady_step_clock(monkeypatch):
    calls = []

    def spy(history):
        calls.append(len(history))
        return 0.25

    monkeypatch.setattr(lm, "steady_seconds_per_step", spy)
    times = lm.step_times([0], ["32-true", "bf16-mixed"], time_steps=3, batch=8, context=8,
                          d_model=8, n_layers=1, repeats=5, warmup=1)
    assert calls == [3] * 12  # (1 warm-up + 5 timed calls) per recipe, each of 3 steps
    assert (times.seconds_per_step == 0.25).all() and (times.ratio == 1.0).all()
