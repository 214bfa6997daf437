"""LLM-5's rule on small hand-made tables: each verdict it can return, and what decides it."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from precisionlab.study.rules import language_models as rules

NOISE = [0.0, 0.004, -0.003]


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
    assert "2 of 2" in f.reason
    # kept (inside the margin) but worse beyond noise: the reason says so
    assert "16-mixed: val loss +0.011" in f.reason and "(within +-0.05, higher beyond noise)" \
        in f.reason
    assert "bf16-mixed: val loss" in f.reason and f.reason.count("higher beyond noise") == 1


def test_refuted_when_16_bit_steps_are_slower_here():
    runs, ratios = tables({"bf16-mixed": 0.0, "16-mixed": 0.0}, {"bf16-mixed": 4.0,
                                                                  "16-mixed": 4.5})
    f = rules.llm5(runs, ratios, "AVX2 CPU")
    assert f.verdict == "refuted" and "slower beyond noise" in f.reason


def test_nuanced_when_a_pure_recipe_diverges_or_loses_quality():
    runs, ratios = tables({"bf16-mixed": 0.0, "16-true": 0.0, "bf16-true": 0.2},
                          {"bf16-mixed": 0.5, "16-true": 0.4, "bf16-true": 0.4},
                          diverge="16-true")
    f = rules.llm5(runs, ratios, "GPU X")
    assert f.verdict == "nuanced"
    assert "16-true: diverged in 3 of 3" in f.reason and "not within" in f.reason


def test_faster_but_within_noise_does_not_count_as_faster():
    runs, ratios = tables({"bf16-mixed": 0.0}, {"bf16-mixed": 1.0})
    f = rules.llm5(runs, ratios, "x")
    assert f.verdict == "refuted" and "neither faster nor slower" in f.reason


def test_not_testable_with_one_seed_or_a_diverged_reference():
    runs, ratios = tables({"bf16-mixed": 0.0}, {"bf16-mixed": 0.5}, seeds=1)
    assert rules.llm5(runs, ratios, "x").verdict == "not testable here"
    runs, ratios = tables({"bf16-mixed": 0.0}, {"bf16-mixed": 0.5})
    runs.loc[0, "val_loss"] = math.nan
    f = rules.llm5(runs, ratios, "x")
    assert f.verdict == "not testable here" and "no reference" in f.reason


def test_bad_tables_fail_naming_what_is_missing():
    runs, ratios = tables({"bf16-mixed": 0.0}, {"bf16-mixed": 0.5})
    with pytest.raises(ValueError, match="32-true"):
        rules.llm5(runs[runs.precision != "32-true"], ratios, "x")
    with pytest.raises(ValueError, match="16-bit"):
        rules.llm5(runs[runs.precision == "32-true"], ratios, "x")
    with pytest.raises(ValueError, match="ratios"):
        rules.llm5(runs, ratios[ratios.precision == "32-true"], "x")
