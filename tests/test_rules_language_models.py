"""LLM-5's rule on small hand-made tables: each verdict it can return, and what decides it."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from precisionlab.study.rules import language_models as rules

NOISE = [0.0, 0.004, -0.003, 0.002]
WORKING = "16-true, eps 1e-4"


def tables(loss_shift: dict[str, float], ratio: dict[str, float], seeds: int = 3,
           diverge: str = "") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs with 32-true at 2.0 + seed noise and each recipe shifted by `loss_shift`; per-seed
    step-time ratios `ratio` (times 1 +- 1 %); `diverge` gets NaN losses."""
    runs, ratios = [], []
    for s in range(seeds):
        runs.append({"seed": s, "precision": "32-true", "val_loss": 2.0 + NOISE[s],
                     "diverged": False})
        ratios.append({"seed": s, "precision": "32-true", "ratio": 1.0})
        for p, shift in loss_shift.items():
            v = math.nan if p == diverge else 2.0 + NOISE[s] + shift + 0.001 * s
            runs.append({"seed": s, "precision": p, "val_loss": v, "diverged": p == diverge})
            ratios.append({"seed": s, "precision": p, "ratio": ratio[p] * (1 + 0.01 * (s - 1))})
    return pd.DataFrame(runs), pd.DataFrame(ratios)


def test_supported_when_every_recipe_keeps_quality_and_runs_faster():
    runs, ratios = tables({"bf16-mixed": 0.0, "16-mixed": 0.01}, {"bf16-mixed": 0.5,
                                                                   "16-mixed": 0.6})
    f = rules.llm5(runs, ratios, "GPU X")
    assert f.verdict == "supported" and f.hardware == "GPU X"
    assert f.reason.startswith("2 of 2 judged")
    # kept (inside the margin) but worse beyond noise: the reason says so, in its first clause
    assert "16-mixed: val loss +0.011" in f.reason and "(within +-0.05, higher beyond noise)" \
        in f.reason
    assert "higher beyond noise though within the margin: 16-mixed" in f.reason.split("; ")[0]
    assert "bf16-mixed: val loss" in f.reason and f.reason.count(", higher beyond noise)") == 1


def test_supported_with_the_naive_16_true_diverging_for_its_eps_and_the_working_one_kept():
    shift = {"bf16-mixed": 0.0, "16-mixed": 0.0, "bf16-true": 0.0, "16-true": 0.0, WORKING: 0.0}
    # 4 seeds: a pure recipe's loss moves in steps of its format (bf16: 0.0156 near 2), and 3
    # seeds cannot tell a 0.05-nat change from none at that resolution
    runs, ratios = tables(shift, dict.fromkeys(shift, 0.5), diverge="16-true", seeds=4)
    f = rules.llm5(runs, ratios, "GPU X")
    assert f.verdict == "supported"
    three = rules.llm5(*tables(shift, dict.fromkeys(shift, 0.5), diverge="16-true"), "GPU X")
    assert three.verdict == "nuanced" and "quality not shown kept: bf16-true" in three.reason
    assert "bf16-true: val loss +0.001 [" in three.reason and "detectable 0.051 nats" in \
        three.reason
    first = f.reason.split("; ")[0]  # the clause the front page quotes carries the failure
    assert first.startswith("4 of 4 judged") and WORKING in first
    assert "16-true was not judged: its Adam eps rounds to 0 in fp16, so it diverged" in first
    assert ("16-true (not judged): diverged in 4 of 4 seeds because Adam's eps 1e-08 rounds "
            "to 0 in fp16") in f.reason and "0.0055" in f.reason


def test_naive_16_true_is_not_judged_even_when_it_trains():
    runs, ratios = tables({"bf16-mixed": 0.0, "16-true": 0.0}, {"bf16-mixed": 0.5,
                                                                 "16-true": 2.0})
    f = rules.llm5(runs, ratios, "x")
    assert f.verdict == "supported"  # 16-true's slower step does not count: its eps is 0
    assert "16-true (not judged: Adam's eps" in f.reason and "tests that setting" in f.reason
    assert "no pure-fp16 recipe with an eps fp16 holds was run" in f.reason.split("; ")[0]


def test_refuted_when_16_bit_steps_are_slower_here():
    runs, ratios = tables({"bf16-mixed": 0.0, "16-mixed": 0.0, WORKING: 0.0},
                          {"bf16-mixed": 4.0, "16-mixed": 4.5, WORKING: 6.0})
    f = rules.llm5(runs, ratios, "AVX2 CPU")
    assert f.verdict == "refuted" and "slower beyond noise" in f.reason
    assert "none ran faster than 32-true beyond noise here" in f.reason.split("; ")[0]


def test_nuanced_when_a_pure_recipe_diverges_or_loses_quality():
    runs, ratios = tables({"bf16-mixed": 0.0, WORKING: 0.0, "bf16-true": 0.2},
                          {"bf16-mixed": 0.5, WORKING: 0.4, "bf16-true": 0.4},
                          diverge=WORKING)
    f = rules.llm5(runs, ratios, "GPU X")
    assert f.verdict == "nuanced"
    assert f"{WORKING}: diverged in 3 of 3" in f.reason and "not within" in f.reason
    assert f"quality not shown kept: {WORKING}, bf16-true" in f.reason.split("; ")[0]


def test_faster_but_within_noise_does_not_count_as_faster():
    runs, ratios = tables({"bf16-mixed": 0.0}, {"bf16-mixed": 1.0})
    f = rules.llm5(runs, ratios, "x")
    assert f.verdict == "refuted" and "neither faster nor slower" in f.reason
    # a tie shown to within 5 % is what refutes it, and the reason says so
    assert "shown to gain less than 5 % in step time: bf16-mixed (step time [0.98, 1]x" in f.reason


def test_not_testable_with_one_seed_a_diverged_reference_or_only_eps_broken_recipes():
    runs, ratios = tables({"bf16-mixed": 0.0}, {"bf16-mixed": 0.5}, seeds=1)
    assert rules.llm5(runs, ratios, "x").verdict == "not testable here"
    runs, ratios = tables({"bf16-mixed": 0.0}, {"bf16-mixed": 0.5})
    runs.loc[0, "val_loss"] = math.nan
    f = rules.llm5(runs, ratios, "x")
    assert f.verdict == "not testable here" and "no reference" in f.reason
    runs, ratios = tables({"16-true": 0.0}, {"16-true": 0.5}, diverge="16-true")
    f = rules.llm5(runs, ratios, "x")
    assert f.verdict == "not testable here" and f"add {WORKING}" in f.reason


def test_eps_lost_reads_the_format_of_adams_state():
    assert rules.eps_lost("16-true")["format"] == "fp16"
    assert rules.eps_lost(WORKING) is None  # 1e-4 is a normal fp16 number
    assert rules.eps_lost("bf16-true") is None  # bf16 holds 1e-8
    assert rules.eps_lost("16-mixed") is None  # Adam's state stays fp32


def test_bad_tables_fail_naming_what_is_missing():
    runs, ratios = tables({"bf16-mixed": 0.0}, {"bf16-mixed": 0.5})
    with pytest.raises(ValueError, match="32-true"):
        rules.llm5(runs[runs.precision != "32-true"], ratios, "x")
    with pytest.raises(ValueError, match="16-bit"):
        rules.llm5(runs[runs.precision == "32-true"], ratios, "x")
    with pytest.raises(ValueError, match="ratios"):
        rules.llm5(runs, ratios[ratios.precision == "32-true"], "x")


def test_speed_refuses_step_times_not_reduced_to_one_ratio_per_seed():
    _, ratios = tables({"bf16-mixed": 0.0}, {"bf16-mixed": 0.5})
    per_repeat = pd.concat([ratios.assign(repeat=r) for r in range(5)], ignore_index=True)
    with pytest.raises(ValueError, match="one ratio per seed"):
        rules.speed(per_repeat, "bf16-mixed")
    with pytest.raises(ValueError, match="one ratio per seed"):  # even with one seed
        rules.llm5(*tables({"bf16-mixed": 0.0}, {"bf16-mixed": 0.5}, seeds=1)[:1],
                   per_repeat[per_repeat.seed == 0], "x")
    with pytest.raises(ValueError, match="no column 'seed'"):
        rules.speed(ratios.drop(columns="seed"), "bf16-mixed")
    assert rules.speed(ratios, "bf16-mixed").n == 3


def test_a_loss_inside_the_margin_that_three_seeds_cannot_resolve_is_not_kept():
    runs, ratios = tables({"bf16-mixed": 0.0}, {"bf16-mixed": 0.5})
    is_mixed = runs.precision == "bf16-mixed"
    runs.loc[is_mixed, "val_loss"] = runs[runs.precision == "32-true"].val_loss.to_numpy() + \
        [0.0, 0.018, -0.018]  # interval inside +-0.05, but 3 seeds detect only ~0.06
    f = rules.llm5(runs, ratios, "x")
    assert rules.quality(runs, "bf16-mixed").outcome == "underpowered"
    # not kept, but not shown lost either: the claim stays open
    assert f.verdict == "nuanced" and "within, but too few seeds" in f.reason
    assert f.reason.startswith("no judged recipe was shown to keep quality and run faster, but "
                               "bf16-mixed was not shown to fail either")


def test_an_undecided_speed_leaves_the_claim_open_and_a_shown_no_gain_refutes():
    runs, ratios = tables({"bf16-mixed": 0.0}, {"bf16-mixed": 1.0})
    wide = ratios.assign(ratio=ratios.ratio.where(ratios.precision == "32-true",
                                                  [1.0, 0.6, 1.0, 1.0, 1.0, 1.4]))
    assert rules.llm5(runs, wide, "x").verdict == "nuanced"  # [0.6, 1.4]: could be faster
    slower = ratios.assign(ratio=ratios.ratio.where(ratios.precision == "32-true", 1.2))
    f = rules.llm5(runs, slower, "x")
    assert f.verdict == "refuted" and "slower beyond noise: bf16-mixed (1.2x 32-true's" in f.reason


def test_chapter_08s_larger_models_are_told_not_judged():
    wider = pd.DataFrame([
        {"family": "MLP", "size": 256, "precision": "32-true", "speedup": 1.0, "lo": 1.0,
         "hi": 1.0},
        {"family": "MLP", "size": 256, "precision": "bf16-mixed", "speedup": 1.4, "lo": 1.3,
         "hi": 1.5},
        {"family": "MLP", "size": 512, "precision": "bf16-mixed", "speedup": 1.0, "lo": 0.9,
         "hi": 1.1}])
    text = rules.elsewhere(wider)
    assert text == ("; chapter 08 (as published) timed larger MLPs and transformers: bf16-mixed "
                    "1-1.4x 32-true's step speed, faster at 1 of 2 timed sizes (told, not "
                    "judged: other models)")
    # a recipe too slow to time at some sizes says so, not just "faster at 0 of 1"
    slow = pd.concat([wider, pd.DataFrame([
        {"family": "MLP", "size": 512, "precision": "32-true", "speedup": 1.0, "lo": 1.0,
         "hi": 1.0},
        {"family": "MLP", "size": 256, "precision": "16-mixed", "speedup": 0.21, "lo": 0.2,
         "hi": 0.22}])])
    assert ("16-mixed 0.21x 32-true's step speed, faster at 0 of 1 timed sizes, too slow to "
            "time at the other 1") in rules.elsewhere(slow)
    assert rules.elsewhere(None) == ""
