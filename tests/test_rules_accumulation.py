"""GA-1, GA-2 and GA-3's rules on small hand-made tables: each verdict each can return."""

from __future__ import annotations

import pandas as pd

from precisionlab.study.rules import accumulation as rules


def ga1_table(acc: float, small: float, yard: float = 1e-6,
              precisions: tuple[str, ...] = ("32-true", "bf16-mixed")) -> pd.DataFrame:
    """Distances from k = 1: accumulation `acc`, smaller batch `small` (times a little seed
    jitter), both yardsticks `yard`."""
    rows = []
    for p in precisions:
        for seed in range(3):
            j = 1 + 0.1 * seed
            rows += [{"seed": seed, "precision": p, "comparison": c, "k": 1, "rel_diff": yard}
                     for c in ("1-ulp nudge", "next precision up")]
            for k in (2, 4):
                rows += [{"seed": seed, "precision": p, "comparison": "accumulation", "k": k,
                          "rel_diff": acc * j},
                         {"seed": seed, "precision": p, "comparison": "smaller batch", "k": k,
                          "rel_diff": small * k}]
    return pd.DataFrame(rows)


def test_ga1_supported_when_accumulation_is_rounding_and_small_batches_differ():
    f = rules.ga1(ga1_table(acc=1e-6, small=1e-2))
    assert f.verdict == "supported"
    assert "k = 2, 4" in f.reason


def test_ga1_refuted_when_accumulation_is_as_far_as_a_smaller_batch():
    assert rules.ga1(ga1_table(acc=1e-2, small=1e-2)).verdict == "refuted"


def test_ga1_nuanced_between():
    assert rules.ga1(ga1_table(acc=1e-4, small=1e-2)).verdict == "nuanced"  # 100x rounding


def ga2_table(flops_at: dict[int, float], act_at: dict[int, float],
              precisions: tuple[str, ...] = ("32-true", "bf16-mixed")) -> pd.DataFrame:
    return pd.DataFrame([{"precision": p, "k": k, "matmul_flops": flops_at[k],
                          "activation_bytes": act_at[k]} for p in precisions for k in flops_at])


ACT = {1: 1000.0, 4: 260.0}


def test_ga2_refuted_when_flops_per_step_do_not_change():
    f = rules.ga2(ga2_table({1: 1e9, 4: 1e9}, ACT))
    assert f.verdict == "refuted"
    assert "0.26 (32-true)" in f.reason  # what does shrink is said too


def test_ga2_supported_when_flops_per_step_shrink_with_k():
    assert rules.ga2(ga2_table({1: 1e9, 4: 0.25e9}, ACT)).verdict == "supported"


def test_ga2_nuanced_when_it_depends_on_the_precision():
    t = pd.concat([ga2_table({1: 1e9, 4: 1e9}, ACT, ("32-true",)),
                   ga2_table({1: 1e9, 4: 0.5e9}, ACT, ("bf16-mixed",))])
    assert rules.ga2(t).verdict == "nuanced"


def ga3_table(growth: dict[str, list[float]]) -> pd.DataFrame:
    """Per precision, per seed, error 0.01 at k = 1 and 0.01 * growth at k = 256."""
    rows = []
    for p, per_seed in growth.items():
        for seed, g in enumerate(per_seed):
            rows += [{"seed": seed, "precision": p, "k": 1, "rel_error": 0.01},
                     {"seed": seed, "precision": p, "k": 256, "rel_error": 0.01 * g}]
    return pd.DataFrame(rows)


FLAT, GROWS = [1.0, 1.01, 0.99], [3.0, 3.3, 2.9]


def test_ga3_supported_when_every_precision_grows():
    f = rules.ga3(ga3_table({"16-mixed": GROWS, "16-true": GROWS}))
    assert f.verdict == "supported"


def test_ga3_refuted_when_no_precision_grows():
    assert rules.ga3(ga3_table({"16-mixed": FLAT, "16-true": FLAT})).verdict == "refuted"


def test_ga3_nuanced_when_only_low_precision_grad_grows_and_parts_are_reported():
    parts = pd.DataFrame([{"seed": 0, "accumulator": a, "k": 256, "rel_error": e}
                          for a, e in (("fp32", 1e-7), ("fp16", 2e-3))])
    f = rules.ga3(ga3_table({"16-mixed": FLAT, "bf16-true": GROWS}), parts)
    assert f.verdict == "nuanced"
    assert "worse with bf16-true, not with 16-mixed" in f.reason
    assert "0.002 in fp16" in f.reason


def test_ga3_nuanced_when_seeds_disagree():
    assert rules.ga3(ga3_table({"16-true": [1.0, 3.0, 1.1]})).verdict == "nuanced"


def test_ga3_inside_the_factor_but_too_noisy_to_detect_it_is_underpowered():
    # log ratios 0, +-0.07: the interval fits inside +-log 1.25, but three seeds this noisy
    # could not tell a 1.25x change from none at 80 % power
    f = rules.ga3(ga3_table({"16-true": [0.93, 1.0, 1.07]}))
    assert f.verdict == "nuanced" and "inconclusive (underpowered)" in f.reason
    assert "detectable" in f.reason


def test_ga3_one_seed_is_not_testable():
    assert rules.ga3(ga3_table({"16-true": [3.0]})).verdict == "not testable here"


# GA-4: does accumulating over more micro-batches cut the error? (GA-3's tables, read the other way)

def parts_table(growth: dict[str, list[float]]) -> pd.DataFrame:
    """Per accumulator alone, the same shape as `ga3_table`."""
    return ga3_table(growth).rename(columns={"precision": "accumulator"})


SHRINKS = [0.4, 0.45, 0.5]  # error at k = 256 well under 1/1.25 of k = 1
SLIGHTLY_LESS = [0.99, 0.992, 0.988]  # beyond noise, but nowhere near the factor


def test_ga4_refuted_when_no_setting_cuts_the_error_and_says_how_each_behaves():
    f = rules.ga4(ga3_table({"16-mixed": SLIGHTLY_LESS, "bf16-true": GROWS}),
                  parts_table({"fp32": GROWS}))
    assert f.verdict == "refuted"
    assert "16-mixed: no reduction: less by under the factor, beyond noise" in f.reason
    assert "bf16-true: no reduction: adds error" in f.reason
    assert "fp32 accumulator alone: no reduction: adds error" in f.reason
    assert f.evidence == "tbl-ga4"


def test_ga4_refuted_when_flat_or_undecided_but_never_by_the_factor():
    f = rules.ga4(ga3_table({"16-mixed": FLAT + [1.0, 1.0],
                            "16-true": [1.0, 1.3, 1.1, 1.5, 0.98]}))
    assert f.verdict == "refuted"
    assert "16-true: no reduction: undecided, but never by the factor" in f.reason
    assert "16-mixed: no reduction: unchanged" in f.reason


def test_ga4_supported_when_every_setting_cuts_the_error():
    f = rules.ga4(ga3_table({"16-mixed": SHRINKS, "16-true": SHRINKS}),
                  parts_table({"fp16": SHRINKS}))
    assert f.verdict == "supported"
    assert "fp16 accumulator alone: reduces" in f.reason


def test_ga4_nuanced_when_some_settings_cut_it_and_others_do_not():
    f = rules.ga4(ga3_table({"16-mixed": SHRINKS, "bf16-true": GROWS}))
    assert f.verdict == "nuanced"


def test_ga4_nuanced_when_seeds_leave_a_cut_open():
    f = rules.ga4(ga3_table({"16-true": [0.3, 1.0, 1.6]}))
    assert f.verdict == "nuanced"
    assert "16-true: inconclusive" in f.reason


def test_ga4_one_seed_is_not_testable():
    f = rules.ga4(ga3_table({"16-true": [0.3]}), parts_table({"fp16": [0.3]}))
    assert f.verdict == "not testable here"
