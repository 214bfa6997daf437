"""audit.summary and its recommendation rules, on synthetic Results: every branch of every rule."""

from __future__ import annotations

import importlib
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from precisionlab.data import Split
from precisionlab.formats import adam_underflow
from precisionlab.study import audit, stats
from precisionlab.study.audit.measure import Result, parity_table
from precisionlab.study.audit.spec import Subject

# the module (audit.summary is the function of the same name)
S = importlib.import_module("precisionlab.study.audit.summary")
KEYS = {"model", "data", "task", "machine", "parameters", "amp", "overflow", "underflow", "ptq",
        "speed", "memory", "recommendations"}


def _runs(deltas: dict[str, list[float]], loss: dict[str, list[float]] | None = None,
          ref=(0.90, 0.80, 0.70)) -> pd.DataFrame:
    rows = []
    for seed, r in enumerate(ref):
        rows.append({"precision": "32-true", "seed": seed, "test_loss": 0.5, "metric": r,
                     "finite": True, "skipped_steps": 0, "seconds": 1.0})
    for p, ds in deltas.items():
        for seed, d in enumerate(ds):
            lo = (loss or {}).get(p, [0.5] * 3)[seed]
            rows.append({"precision": p, "seed": seed, "test_loss": lo, "metric": ref[seed] + d,
                         "finite": math.isfinite(lo), "skipped_steps": 1, "seconds": 1.0})
    return pd.DataFrame(rows)


def _speed(ratios: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame([{"precision": p, "train_step_s": r * 0.01, "inference_s": r * 0.005,
                          "train_step_ratio": r, "inference_ratio": r}
                         for p, r in {"32-true": 1.0, **ratios}.items()])


def _modules(fwd=(1.0, 2.0, 3.0), grad=(1e-3, 1e-3, 1e-3)) -> pd.DataFrame:
    names = ["enc", "act", "head"]
    return pd.DataFrame({"name": names, "type": ["Linear", "ReLU", "Linear"],
                         "fwd_amax": fwd, "grad_amax": grad, "fwd_order": [0, 1, 2],
                         "bwd_order": [2, 1, 0],
                         "fwd_overflow_fp16": [a > 65504 for a in fwd],
                         "grad_overflow_fp16": [a > 65504 for a in grad],
                         "grad_flushed_fp16": [0.0, 0.0, 0.0],
                         "grad_flushed_bf16": [0.0, 0.0, 0.0]})


def _underflow(fp16: dict[int, tuple[float, bool]]) -> pd.DataFrame:
    rows = [{"format": "fp16", "log2_scale": k, "flushed": f, "overflowed": o}
            for k, (f, o) in fp16.items()]
    rows += [{"format": "bf16", "log2_scale": k, "flushed": 0.0, "overflowed": False}
             for k in fp16]
    return pd.DataFrame(rows)


def _ptq(drops: dict[str, list[float]], ref=(0.90, 0.80, 0.70)) -> pd.DataFrame:
    rows = []
    for name, ds in drops.items():
        for seed, d in enumerate(ds):
            rows.append({"config": name, "weight_bits": int(name[1]), "granularity": "channel",
                         "group_size": None, "activation_bits": None, "seed": seed,
                         "metric": ref[seed] - d, "fp32_metric": ref[seed], "drop": d,
                         "fallback": ""})
    return pd.DataFrame(rows)


def _result(task="classification", **tables) -> Result:
    runs = tables.pop("runs", _runs({"bf16-mixed": [0.001, -0.001, 0.0],
                                     "16-true": [0.0, 0.0, 0.0]},
                                    loss={"16-true": [0.5, math.nan, 0.5]}))
    r = Result(device="cpu", hardware="test CPU", params={"margin": 0.01, "seeds": [0, 1, 2]},
               task=task, runs=runs, parity=parity_table(runs, task, 0.01),
               cosine=pd.DataFrame({"precision": runs.precision, "seed": runs.seed,
                                    "cosine": np.where(runs.precision == "32-true", 1.0, 0.99),
                                    "finite": True}),
               modules=_modules(), underflow=_underflow({0: (0.2, False), 8: (0.005, False),
                                                         16: (0.0, True)}),
               ptq=_ptq({"w8-channel": [0.001, 0.0, 0.002], "w4-g64": [0.05, 0.03, 0.04]}),
               speed=_speed({"bf16-mixed": 0.5, "16-true": 0.4}),
               memory=pd.DataFrame([{"precision": "32-true", "weights_bytes": 8,
                                     "gradients_bytes": 8, "optimizer_bytes": 16,
                                     "activation_bytes": np.int64(4),
                                     "peak_cuda_bytes": None}]))
    for k, v in tables.items():
        setattr(r, k, v)
    return r


def _subject() -> Subject:
    x = torch.zeros(4, 2)
    y = torch.zeros(4, dtype=torch.long)
    return Subject("tiny", "m:tiny", "m:data", "classification", Split("audit", x, y, x[:2], y[:2]),
                   3, [], nn.Linear(2, 1))


def test_summary_is_json_with_every_key():
    r = _result()
    s = audit.summary(_subject(), r)
    again = json.loads(json.dumps(s, allow_nan=False))
    assert again == s and set(s) == KEYS
    assert s["model"] == {"name": "tiny", "parameters": 3, "spec": "m:tiny"}
    assert s["data"] == {"spec": "m:data", "n_train": 4, "n_test": 2}
    amp = s["amp"]["precisions"]
    assert amp["16-true"]["outcome"] == "diverged" and amp["16-true"]["loss_diff"]["mean"] is None
    assert amp["bf16-mixed"]["gradient_cosine"] == pytest.approx(0.99)
    assert s["underflow"]["fp16"]["flushed_unscaled"] == 0.2
    assert s["underflow"]["fp16"]["smallest_log2_scale_under_1pct"] == 8
    assert s["ptq"]["w4-g64"]["drop"]["mean"] == pytest.approx(0.04)
    assert s["speed"]["bf16-mixed"]["train_step_ratio"] == 0.5
    assert s["memory"]["32-true"]["peak_cuda_bytes"] is None and s["overflow"] is None
    assert s["recommendations"][0].startswith("Train in bf16-mixed")


def test_jsonable():
    out = S.jsonable({1: [np.float32(0.5), np.int64(3), np.bool_(True), math.nan, math.inf,
                          (None, "a")], "x": pd.NA, "y": torch.float16})
    assert out == {"1": [0.5, 3, True, None, None, [None, "a"]], "x": None, "y": "torch.float16"}


def test_precision_advice_picks_the_fastest_equivalent():
    runs = _runs({"bf16-mixed": [0.001, -0.001, 0.0], "16-mixed": [0.0, 0.001, -0.001]})
    parity = parity_table(runs, "classification", 0.01)
    out = S.precision_advice(parity, _speed({"bf16-mixed": 0.6, "16-mixed": 0.5}),
                             "classification")
    assert len(out) == 1 and out[0].startswith("Train in 16-mixed") and "0.50x" in out[0]


def test_precision_advice_keeps_fp32_when_equivalents_are_not_faster():
    parity = parity_table(_runs({"bf16-mixed": [0.001, -0.001, 0.0]}), "classification", 0.01)
    out = S.precision_advice(parity, _speed({"bf16-mixed": 0.97}), "classification")
    assert out[0].startswith("Train in 32-true")
    assert "bf16-mixed (0.97x 32-true's step time) matches it" in out[0]


def test_precision_advice_keeps_fp32_when_none_is_equivalent_and_names_diverged():
    runs = _runs({"bf16-true": [-0.1, -0.1, -0.11], "16-true": [0.0, 0.0, 0.0]},
                 loss={"16-true": [math.nan, math.nan, 0.5]})
    parity = parity_table(runs, "classification", 0.01)
    out = S.precision_advice(parity, _speed({"bf16-true": 0.5, "16-true": 0.5}),
                             "classification")
    assert out[0].startswith("Train in 32-true: no lower precision")
    assert "bf16-true: worse" in out[0] and "16-true: diverged" in out[0]
    assert out[1] == "Avoid 16-true: 2 of 3 runs ended with a non-finite test loss."


WORKING = "16-true, eps 1e-4"


def _naive_fp16(working: list[float] | None = None) -> pd.DataFrame:
    """Parity where 16-true (Adam's eps 1e-8) diverged in every run; with `working` losses, the
    '16-true, eps 1e-4' runs too (matching 32-true's accuracy)."""
    deltas = {"16-true": [0.0, 0.0, 0.0]}
    loss = {"16-true": [math.nan] * 3}
    if working is not None:
        deltas[WORKING], loss[WORKING] = [0.001, 0.0, -0.001], working
    return parity_table(_runs(deltas, loss=loss), "classification", 0.01)


def test_naive_fp16_adam_divergence_is_blamed_on_eps_not_the_model():
    u = adam_underflow("fp16", eps=1e-8)
    out = S.diverged_advice(_naive_fp16(), "adam", None)
    assert len(out) == 1
    s = out[0]
    assert s.startswith("Avoid 16-true with Adam's eps at 1e-8: 3 of 3 runs ended with a "
                        "non-finite test loss, and that is the optimizer setting, not the model.")
    assert f"|g| <= {u['v_zero_below']:.2g}" in s and "0.0055" in s  # adam_underflow's threshold
    assert "smallest subnormal, 5.96e-8" in s
    assert s.endswith("Raise eps to one fp16 holds (e.g. 1e-4) or train in 16-mixed.")
    w = S.diverged_advice(_naive_fp16(), "adamw", 2e-8)[0]
    assert w.startswith("Avoid 16-true with AdamW's eps at 2e-8")


def test_the_working_recipes_outcome_follows_the_eps_diagnosis():
    ok = S.diverged_advice(_naive_fp16([0.5, 0.5, 0.5]), "adam", None)
    assert len(ok) == 1 and ok[0].endswith(
        "The audit's own run with eps 1e-4 ('16-true, eps 1e-4') stayed finite in all 3 runs; "
        "its outcome against 32-true: equivalent.")
    both = S.diverged_advice(_naive_fp16([0.5, math.nan, 0.5]), "adam", None)
    assert "('16-true, eps 1e-4') diverged too (1 of 3 runs), so 16-true fails this model " \
           "beyond eps: train in 16-mixed." in both[0]
    # the working recipe's own divergence is the model's: the plain sentence
    assert both[1] == "Avoid 16-true, eps 1e-4: 1 of 3 runs ended with a non-finite test loss."


@pytest.mark.parametrize("optimizer, eps", [(None, None), ("sgd", None), ("adam", 1e-4)])
def test_divergence_with_an_eps_fp16_holds_is_not_blamed_on_eps(optimizer, eps):
    assert S.diverged_advice(_naive_fp16(), optimizer, eps) == [
        "Avoid 16-true: 3 of 3 runs ended with a non-finite test loss."]


def test_the_working_recipe_is_recommended_by_name_and_what_it_changes():
    parity = _naive_fp16([0.5, 0.5, 0.5])
    out = S.precision_advice(parity, _speed({"16-true": 0.4, WORKING: 0.45}), "classification",
                             "adam")
    assert out[0].startswith("Train in 16-true, eps 1e-4 (pure fp16 with Adam's eps raised to "
                             "1e-4): its accuracy differs from 32-true by")
    assert out[1].startswith("Avoid 16-true with Adam's eps at 1e-8")


def _underpowered(deltas=(0.004, -0.003, 0.0), resolution=0.0) -> pd.DataFrame:
    parity = parity_table(_runs({"bf16-mixed": list(deltas)}), "classification", 0.01,
                          resolution)
    assert parity.outcome.item() == "underpowered"
    return parity


def test_underpowered_is_not_recommended_and_asks_for_more_seeds():
    parity = _underpowered()
    out = S.precision_advice(parity, _speed({"bf16-mixed": 0.5}), "classification")
    assert out[0] == ("Train in 32-true: no lower precision was shown equivalent to it "
                      "(bf16-mixed: underpowered).")
    r = parity.iloc[0]
    k = S.seeds_needed(r.detectable, 3, 0.01)
    assert out[1] == (
        "Too few seeds to judge bf16-mixed: its accuracy differs from 32-true by "
        f"{stats.Interval(r.metric_diff, r.metric_low, r.metric_high, 3).text()}, inside the "
        f"margin 0.01, but 3 seeds could only detect a difference of {r.detectable:.3g} at 80 % "
        f"power, so it is not shown equivalent; an audit with about {k} seeds (the `seeds` "
        "parameter) would tell.")
    assert len(out) == 2


def test_underpowered_beside_a_recommendation_still_gets_its_sentence():
    runs = _runs({"bf16-mixed": [0.004, -0.003, 0.0], "16-mixed": [0.001, -0.001, 0.0]})
    parity = parity_table(runs, "classification", 0.01)
    out = S.precision_advice(parity, _speed({"bf16-mixed": 0.4, "16-mixed": 0.5}),
                             "classification")
    assert out[0].startswith("Train in 16-mixed")  # bf16-mixed is faster, but not shown equal
    assert out[1].startswith("Too few seeds to judge bf16-mixed")


def test_seeds_needed_is_the_fewest_that_detect_the_margin_at_the_seen_spread():
    sd = 0.005
    d3 = stats.detectable_effect(sd, 3)
    k = S.seeds_needed(d3, 3, 0.01)
    assert stats.detectable_effect(sd, k) <= 0.01 < stats.detectable_effect(sd, k - 1)
    assert S.seeds_needed(d3, 3, 1e-6) is None  # beyond MAX_SEEDS
    assert S.seeds_needed(0.0, 3, 0.01) is None and S.seeds_needed(math.nan, 1, 0.01) is None


def test_underpowered_sentences_without_a_seed_count():
    same = S.underpowered_advice(_underpowered((0.0, 0.0, 0.0)), "classification")
    assert "but 3 seeds could not estimate the noise, so it is not shown equivalent; more " \
           "seeds would show how much they vary." in same[0]
    wide = S.underpowered_advice(_underpowered((0.0, 0.0, 0.0), resolution=0.5),
                                 "classification")
    assert wide[0].endswith(f"more than {S.MAX_SEEDS} seeds would be needed at this spread: "
                            "widen the margin or evaluate more test examples.")


def test_recommendations_read_the_audits_optimizer_and_eps():
    adam = S.recommendations(_result(params={"margin": 0.01, "optimizer": "adam", "eps": None}))
    assert adam[1].startswith("Avoid 16-true with Adam's eps at 1e-8: 1 of 3 runs")
    held = S.recommendations(_result(params={"margin": 0.01, "optimizer": "adam", "eps": 1e-4}))
    assert held[1] == "Avoid 16-true: 1 of 3 runs ended with a non-finite test loss."
    amp = audit.summary(_subject(), _result())["amp"]["precisions"]
    assert amp["bf16-mixed"]["detectable"] > 0 and amp["bf16-mixed"]["outcome"] == "equivalent"


def test_overflow_and_keep_in_fp32():
    assert S.overflow_of(_modules(), None) is None and S.keep_in_fp32(None) is None
    fwd = S.overflow_of(_modules(fwd=(1.0, 7e4, 9e4), grad=(1.0, 1.0, 1e5)), "act")
    assert (fwd["module"], fwd["where"], fwd["fp16_forward_inf"]) == ("act", "forward", "act")
    assert S.keep_in_fp32(fwd).startswith("Keep `act` in fp32: its output reaches 7e+04")
    bwd = S.overflow_of(_modules(grad=(1e5, 1e5, 1.0)), None)
    assert (bwd["module"], bwd["where"]) == ("act", "backward")  # first in backward order
    assert "gradient of its output reaches 1e+05" in S.keep_in_fp32(bwd)
    inf = S.overflow_of(_modules(), "head")
    assert inf["where"] == "fp16 forward"
    assert "first to hold inf" in S.keep_in_fp32(inf)
    assert S.overflow_of(pd.DataFrame(), None) is None


def test_loss_scale_advice_branches():
    none = S.loss_scale_advice(_underflow({0: (0.002, False), 8: (0.0, False)}))
    assert none.startswith("fp16 needs no loss scale") and "0.2 %" in none
    some = S.loss_scale_advice(_underflow({0: (0.3, False), 8: (0.02, False),
                                           12: (0.004, False)}))
    assert some.startswith("For fp16, use a loss scale of at least 2^12") and "30 %" in some
    no = S.loss_scale_advice(_underflow({0: (0.3, False), 8: (0.2, False), 16: (0.0, True)}))
    assert no.startswith("No loss scale from 2^0 to 2^16")
    empty = S.loss_scale_advice(_underflow({0: (math.nan, False)}))
    assert "none of the nonzero" in empty
    assert S.smallest_scale(_underflow({0: (0.3, False), 16: (0.0, True)}), "fp16") is None


def test_ptq_advice_branches():
    assert S.ptq_advice(pd.DataFrame(), "classification", 0.01) == []
    both = S.ptq_advice(_ptq({"w8-channel": [0.001, 0.0, 0.002], "w4-g64": [0.05, 0.03, 0.04]}),
                        "classification", 0.01)
    assert both == ["Post-training quantization within the margin: w8-channel costs 0.1 points "
                    "of accuracy.",
                    "Post-training quantization beyond the margin: w4-g64 costs 4.0 points of "
                    "accuracy."]
    costly = S.ptq_advice(_ptq({"w4-g64": [0.05, 0.03, 0.04]}), "classification", 0.01)
    assert len(costly) == 1 and "beyond" in costly[0]
    # regression: drop is the MSE increase; the margin is relative to the fp32 MSE
    reg = S.ptq_advice(_ptq({"w8-channel": [-0.005, -0.004, -0.003]}, ref=(0.5, 0.5, 0.5)),
                       "regression", 0.01)
    assert reg == ["Post-training quantization within the margin: w8-channel lowers MSE by 0.8 %."]
    gain = S.ptq_advice(_ptq({"w4-g64": [-0.001, -0.001, -0.001]}), "classification", 0.01)
    assert gain == ["Post-training quantization within the margin: w4-g64 gains 0.1 points of "
                    "accuracy."]
    worse = S.ptq_advice(_ptq({"w4-g64": [0.1, 0.1, 0.1]}, ref=(2.0, 2.0, 2.0)), "language-model",
                         0.01)
    assert worse == ["Post-training quantization beyond the margin: w4-g64 raises perplexity by "
                     "5.0 %."]


def test_recommendations_in_order():
    r = _result(modules=_modules(fwd=(1e5, 1.0, 1.0)))
    out = S.recommendations(r)
    assert [s.split()[0] for s in out] == ["Train", "Avoid", "Keep", "For", "Post-training",
                                           "Post-training"]
    for sentence in out:
        assert any(ch.isdigit() for ch in sentence)  # each cites a number


def test_ptq_advice_says_when_a_change_is_below_its_printed_digits():
    tiny = S.ptq_advice(_ptq({"w8-tensor": [0.0, 0.0002, -0.0002]}), "classification", 0.01)
    assert tiny == ["Post-training quantization within the margin: w8-tensor changes accuracy "
                    "by less than 0.05 points."]
    reg = S.ptq_advice(_ptq({"w8-tensor": [0.0001, 0.0, 0.0]}, ref=(0.5, 0.5, 0.5)),
                       "regression", 0.01)
    assert reg == ["Post-training quantization within the margin: w8-tensor changes MSE by "
                   "less than 0.05 %."]
