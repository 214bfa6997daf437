"""LLM-6's rule reaches every verdict it can return, on small hand-made per-round timings."""

import math

import pandas as pd
import pytest

from precisionlab.study.rules import inference as rules

# Per-round scatter of a speed-up around its centre, in log units (symmetric: mean 0).
JITTER = (-1.0, 1.0, -0.5, 0.5, 0.0, -1.0, 1.0)


def rounds(sp_smol: dict, sp_mini: dict, spread: float = 0.02) -> pd.DataFrame:
    """Seven rounds per model and precision: fp32 at 1, each other precision's speed-up at its
    given geometric mean, scattered by `spread` (log units) round to round."""
    rows = []
    for model, sp in (("smollm2", sp_smol), ("minilm", sp_mini)):
        for p, s in {"32-true": 1.0, **sp}.items():
            for r, z in enumerate(JITTER):
                rows.append({"model": model, "precision": p, "round": r,
                             "speedup": 1.0 if p == "32-true" else s * math.exp(spread * z)})
    return pd.DataFrame(rows)


def fidelity(precisions: list[str], kl: float = 1e-4, cos: float = 0.99999) -> pd.DataFrame:
    return pd.DataFrame(
        [{"model": "smollm2", "precision": p, "kl": 0.0 if p == "32-true" else kl,
          "cosine": math.nan} for p in ["32-true", *precisions]]
        + [{"model": "minilm", "precision": p, "kl": math.nan,
            "cosine": 1.0 if p == "32-true" else cos} for p in ["32-true", *precisions]])


ALL = ["bf16-mixed", "16-mixed", "bf16-true", "16-true", "int8-dynamic"]


def llm6(sp_smol: dict, sp_mini: dict, spread: float = 0.02, **fid):
    return rules.llm6(rounds(sp_smol, sp_mini, spread), fidelity(ALL, **fid), "hw")


def test_supported_when_every_autocast_precision_is_fast_and_faithful():
    auto = {"bf16-mixed": 2.0, "16-mixed": 1.5}
    f = llm6(auto, auto)
    assert f.verdict == "supported" and f.hardware == "hw" and f.claim == "LLM-6"
    assert "in 4 of 4 model-precision pairs" in f.reason


def test_refuted_when_autocast_is_slower_even_if_pure_casts_are_faster():
    """The published AMX Xeon run: autocast 0.73x/0.65x on SmolLM2 and 1.00x/0.65x on MiniLM,
    pure bf16 1.39x/1.27x. Pure casts are not mixed precision: they are reported, not counted."""
    f = llm6({"bf16-mixed": 0.73, "16-mixed": 0.65, "bf16-true": 1.39},
             {"bf16-mixed": 1.0, "16-mixed": 0.65, "bf16-true": 1.27})
    assert f.verdict == "refuted"
    head = f.reason.split("; ")[0]  # the clause that carries the verdict states the bad news
    assert "in 0 of 4 model-precision pairs" in head
    assert ("bf16-mixed 0.73-1x (faster beyond noise on 0 of 2 models, slower on 1, faithful "
            "on 2)") in head
    assert ("16-mixed 0.65x (faster beyond noise on 0 of 2 models, slower on 2, faithful on "
            "2)") in head
    assert ("also measured, not mixed precision and not deciding: bf16-true 1.27-1.39x (faster "
            "beyond noise on 2 of 2 models, slower on 0, faithful on 2)") in f.reason


def test_refuted_when_autocast_ties_with_fp32():
    f = llm6({"bf16-mixed": 1.0}, {"bf16-mixed": 1.0})
    assert f.verdict == "refuted"


def test_nuanced_when_one_autocast_format_is_fast_and_the_other_slower():
    f = llm6({"bf16-mixed": 1.4, "16-mixed": 0.5},
             {"bf16-mixed": 1.3, "16-mixed": 0.3})
    assert f.verdict == "nuanced"
    head = f.reason.split("; ")[0]
    assert "in 2 of 4" in head and "16-mixed 0.3-0.5x" in head and "slower on 2" in head


def test_nuanced_when_faster_beyond_noise_but_below_the_bar():
    f = llm6({"bf16-mixed": 1.1}, {"bf16-mixed": 1.1})
    assert f.verdict == "nuanced" and "faster beyond noise on 2 of 2" in f.reason


def test_fast_but_unfaithful_is_not_supported():
    auto = {"bf16-mixed": 2.0}
    assert llm6(auto, auto, kl=0.5).verdict == "nuanced"
    assert llm6(auto, auto, cos=0.9).verdict == "nuanced"


def test_a_gain_within_the_noise_of_the_rounds_is_not_faster():
    """The same geometric mean reads differently with the spread of the rounds: 1.3x whose
    rounds scatter by +-50 % is not told apart from fp32."""
    auto = {"bf16-mixed": 1.3}
    assert llm6(auto, auto, spread=0.02).verdict == "supported"
    noisy = llm6(auto, auto, spread=0.5)
    assert noisy.verdict == "refuted" and "faster beyond noise on 0 of 2" in noisy.reason


def test_not_testable_without_autocast_timings_or_rounds():
    f = llm6({"bf16-true": 2.0, "int8-dynamic": 2.0}, {"bf16-true": 2.0})
    assert f.verdict == "not testable here" and "no mixed precision was timed" in f.reason
    one = rounds({"bf16-mixed": 2.0}, {"bf16-mixed": 2.0}).query("round == 0")
    f = rules.llm6(one, fidelity(ALL), "hw")
    assert f.verdict == "not testable here" and "fewer than 2 timed rounds" in f.reason


def test_needs_per_round_speedups():
    summary = pd.DataFrame({"model": ["smollm2"], "precision": ["32-true"], "speedup": [1.0]})
    with pytest.raises(ValueError, match="round"):
        rules.llm6(summary, fidelity(ALL), "hw")


def test_speedup_interval_is_on_log_ratios():
    t = rounds({"bf16-mixed": 1.5}, {}, spread=0.1)
    iv = rules.speedup_interval(t, "smollm2", "bf16-mixed")
    assert math.exp(iv.mean) == pytest.approx(1.5) and iv.n == len(JITTER)
    assert math.exp(iv.low) < 1.5 < math.exp(iv.high)
    with pytest.raises(ValueError, match="minilm"):
        rules.speedup_interval(t, "minilm", "bf16-mixed")


def test_the_bar_is_sane():
    assert 1 < rules.LLM6_FAST < 2


def test_an_autocast_precision_timed_on_one_model_only_is_not_fast_on_the_other():
    f = llm6({"bf16-mixed": 2.0}, {"bf16-true": 2.0})
    assert f.verdict == "nuanced"
    assert ("bf16-mixed 2x (faster beyond noise on 1 of 2 models, slower on 0, faithful on 2, "
            "not timed on 1)") in f.reason


def test_speed_ups_print_to_three_digits_and_an_unfaithful_fast_precision_says_so():
    f = llm6({"bf16-mixed": 1.16}, {"bf16-true": 2.0})
    assert "bf16-mixed 1.16x" in f.reason  # not "1.2x": the mark it falls short of
    assert "fast (>= 1.2x" in f.reason
