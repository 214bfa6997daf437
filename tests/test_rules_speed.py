"""The Q-2, Q-5, MP-7, MP-17 and MP-21 rules reach every verdict they can return, on small
hand-made tables."""

import math

import pandas as pd
import pytest

from precisionlab.study.rules import speed as rules

HW = "test CPU, 2 threads"
INT8 = "int8 torch.ao"


def stored(int8_bytes: int = 26, bf16_bytes: int = 50) -> pd.DataFrame:
    return pd.DataFrame({"seed": [0, 0, 0], "format": ["fp32", "bf16", "int8"],
                         "file_bytes": [100, bf16_bytes, int8_bytes]})


def latency(*speedups: float) -> pd.DataFrame:
    rows = [{"width": 512 * (i + 1), "batch": 64, "candidate": c, "speedup_vs_fp32": s}
            for i, s in enumerate(speedups) for c, s in (("fp32", 1.0), (INT8, s))]
    return pd.DataFrame(rows)


def test_q2_storage_is_exact_bytes():
    ok, r32, r16 = rules.q2_storage(stored())
    assert ok and r32 == pytest.approx(0.26) and r16 == pytest.approx(0.52)
    assert not rules.q2_storage(stored(int8_bytes=60))[0]
    with pytest.raises(ValueError, match="int8"):
        rules.q2_storage(stored().query("format != 'int8'"))


@pytest.mark.parametrize("table, speeds, verdict", [
    (stored(), (2.5, 3.0), "supported"),
    (stored(), (0.4, 4.1), "nuanced"),
    (stored(), (0.5, 0.9), "refuted"),  # never faster than fp32
    (stored(int8_bytes=60), (2.5, 3.0), "refuted"),  # storage gains under 2x
])
def test_q2_verdicts(table, speeds, verdict):
    f = rules.q2(table, latency(*speeds), INT8, HW)
    assert f.verdict == verdict and f.hardware == HW and f.claim == "Q-2"
    assert "0.26x the bytes of fp32" in f.reason or verdict == "refuted"


def test_q2_untimed_speed():
    empty = latency(2.0).query("candidate == 'fp32'")
    assert rules.q2(stored(), empty, INT8, HW).verdict == "not testable here"
    assert rules.q2(stored(int8_bytes=60), empty, INT8, HW).verdict == "refuted"


def test_q2_reason_states_range():
    f = rules.q2(stored(), latency(0.35, 4.1), INT8, HW)
    assert "0.35-4.1x as fast as fp32" in f.reason and "1 of 2" in f.reason


def test_q2_leads_with_what_carries_the_word_and_names_the_slower_int8_paths():
    slow = pd.DataFrame([{"width": 512, "batch": 64, "candidate": "int8 eager", "speedup_vs_fp32":
                          0.2}, {"width": 1024, "batch": 64, "candidate": "int8 eager",
                                 "speedup_vs_fp32": 0.5}])
    f = rules.q2(stored(), pd.concat([latency(0.35, 4.1), slow]), INT8, HW)
    assert f.reason.startswith("int8 stores 3.8x smaller, but ran at least 1.8x as fast as fp32 "
                               "in only 1 of 2 cases; ")
    assert "other int8 path int8 eager: 0.2-0.5x" in f.reason
    assert rules.q2(stored(), latency(0.5, 0.9), INT8, HW).reason.startswith(
        "int8 was never faster than fp32; ")


SIZES = [("MLP", 256), ("MLP", 1024), ("transformer", 1)]


SEED_JITTER = (-1.0, 0.0, 1.0)  # each seed's log speed-up around the recipe's centre


def mp7_tables(recipes: dict[str, tuple[float | None, ...]], totals, acts=(0.8, 0.8, 0.8),
               spread: float = 0.02, seeds: int = 3):
    """Per recipe its speed-up at each size (None: too slow to time), seeds scattered by
    `spread` in log units; every recipe holds `totals` / `acts` of 32-true's bytes. Returns the
    summary (median, lo, hi over seeds), the memory and the per-seed tables."""
    jitter = SEED_JITTER[:seeds] if seeds < 3 else SEED_JITTER
    speed, mem, per_seed = [], [], []
    for i, ((family, size), t, a) in enumerate(zip(SIZES, totals, acts, strict=True)):
        key = {"family": family, "size": size}
        mem.append({**key, "precision": "32-true", "activation_bytes": 1000, "total_bytes": 4000})
        speed.append({**key, "precision": "32-true", "speedup": 1.0, "lo": 1.0, "hi": 1.0})
        per_seed += [{**key, "seed": k, "precision": "32-true", "speedup": 1.0}
                     for k in range(len(jitter))]
        for p, sp in recipes.items():
            mem.append({**key, "precision": p, "activation_bytes": int(1000 * a),
                        "total_bytes": int(4000 * t)})
            if sp[i] is None:
                continue
            values = [sp[i] * math.exp(spread * z) for z in jitter]
            speed.append({**key, "precision": p, "speedup": sorted(values)[len(values) // 2],
                          "lo": min(values), "hi": max(values)})
            per_seed += [{**key, "seed": k, "precision": p, "speedup": v}
                         for k, v in enumerate(values)]
    return pd.DataFrame(speed), pd.DataFrame(mem), pd.DataFrame(per_seed)


def mp7(recipes, totals, by_seed: bool = True, **kw):
    speed, mem, per_seed = mp7_tables(recipes, totals, **kw)
    return rules.mp7(speed, mem, HW, per_seed=per_seed if by_seed else None)


CUT = (0.7, 0.7, 0.7)


@pytest.mark.parametrize("by_seed", [True, False])
@pytest.mark.parametrize("recipes, totals, verdict", [
    ({"bf16-mixed": (2.0, 3.0, 1.6), "16-mixed": (1.8, 2.0, 1.7)}, (0.6, 0.7, 0.8), "supported"),
    ({"bf16-mixed": (0.72, 0.92, 0.8), "16-mixed": (0.2, 0.3, 0.4)}, (0.7, 0.8, 1.1),
     "refuted"),  # every recipe slower at every size
    ({"bf16-mixed": (1.0, 1.0, 1.0)}, CUT, "refuted"),  # never faster: a tie is no speed-up
    ({"bf16-mixed": (2.0, 3.0, 1.6)}, (0.95, 1.0, 1.1), "refuted"),  # no memory saved anywhere
    ({"bf16-mixed": (1.6, 2.0, 1.7), "16-mixed": (0.8, 0.75, 0.9)}, CUT,
     "nuanced"),  # one recipe greatly faster, the other slower at every size
    ({"bf16-mixed": (1.04, 1.2, 1.45)}, CUT, "nuanced"),  # faster, never by 1.5x
    ({"bf16-mixed": (2.0, 3.0, 0.8)}, CUT, "nuanced"),  # fast at some sizes only
    ({"bf16-mixed": (2.0, 3.0, None)}, CUT, "nuanced"),  # too slow to time at one size
    ({"bf16-mixed": (2.0, 3.0, 1.6)}, (0.7, 0.7, 0.95), "nuanced"),  # memory cut at some sizes
])
def test_mp7_verdicts(recipes, totals, verdict, by_seed):
    f = mp7(recipes, totals, by_seed)
    assert f.verdict == verdict and f.hardware == HW and f.claim == "MP-7"


@pytest.mark.parametrize("by_seed", [True, False])
def test_mp7_a_gain_within_the_seeds_noise_is_not_faster(by_seed):
    recipes = {"bf16-mixed": (1.6, 1.6, 1.6)}
    assert mp7(recipes, CUT, by_seed, spread=0.02).verdict == "supported"
    noisy = mp7(recipes, CUT, by_seed, spread=0.6)  # seeds from 0.88x to 2.9x
    assert noisy.verdict == "refuted" and "faster beyond noise at 0 of 3" in noisy.reason


def test_mp7_not_testable_with_one_seed():
    for by_seed in (True, False):
        f = mp7({"bf16-mixed": (2.0, 2.0, 2.0)}, CUT, by_seed, seeds=1)
        assert f.verdict == "not testable here" and "1 seed(s)" in f.reason


def test_mp7_reason_judges_each_recipe_with_the_unwelcome_part_first():
    """The published AMX Xeon run: 16-mixed slower than 32-true at every size; picking the best
    recipe per size had hidden it."""
    f = mp7({"bf16-mixed": (1.1, 1.6, 0.9), "16-mixed": (0.75, 0.9, 0.8)}, (0.7, 0.8, 1.1),
            acts=(0.64, 0.98, 2.5))
    assert f.verdict == "nuanced"
    head = f.reason.split("; ")[0]  # the clause that carries the verdict
    assert head.startswith("each mixed-precision recipe against 32-true over 3 model sizes "
                           "(beyond noise: 95 % interval over 3 seeds excludes 1): ")
    assert ("bf16-mixed ran 0.9-1.6x the step speed of 32-true (faster beyond noise at 2 of 3 "
            "sizes, >= 1.5x at 1, slower at 1)") in head
    assert ("16-mixed ran 0.75-0.9x the step speed of 32-true (faster beyond noise at 0 of 3 "
            "sizes, >= 1.5x at 0, slower at 3)") in head
    assert "memory cut to <= 0.9x of 32-true's bytes at 2 of 3 sizes (bf16-mixed)" in head
    assert ("bf16-mixed and 16-mixed: whole step 0.7-1.1x of 32-true's bytes, saved "
            "activations 0.64-2.5x") in f.reason
    assert "weight copies" in f.reason


def test_mp7_reason_counts_sizes_too_slow_to_time():
    f = mp7({"bf16-mixed": (1.3, 1.4, 1.3), "16-mixed": (0.2, None, None)}, (0.7, 0.8, 1.1))
    assert f.verdict == "nuanced"
    assert ("16-mixed ran 0.2x the step speed of 32-true at 1 timed sizes (faster beyond noise "
            "at 0 of 3 sizes, >= 1.5x at 0, slower at 3: too slow to time at 2)") in f.reason
    never = mp7({"16-mixed": (None, None, None)}, CUT)
    assert never.verdict == "refuted" and "16-mixed was too slow to time at every size" \
        in never.reason


def test_mp7_needs_a_mixed_precision_and_a_spread():
    speed, mem, _ = mp7_tables({"bf16-mixed": (2.0, 2.0, 2.0)}, (0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="mixed precision"):
        rules.mp7(speed, mem[mem.precision == "32-true"], HW)
    with pytest.raises(ValueError, match="lo and hi"):
        rules.mp7(speed.drop(columns=["lo", "hi"]), mem, HW)


# Q-5 ------------------------------------------------------------------------------------------
def counts(*others: tuple[str, int, int]) -> pd.DataFrame:
    rows = [("fp32", 1000, 4000, 1000)] + [(f, n, b, 0) for f, n, b in others]
    return pd.DataFrame(rows, columns=["format", "parameters", "stored_bytes", "parameters_api"])


@pytest.mark.parametrize("table, verdict", [
    (counts(("bf16", 1000, 2000), ("int8", 1000, 1100)), "refuted"),  # same count, fewer bytes
    (counts(("pruned", 400, 1600), ("distilled", 100, 400)), "supported"),
    (counts(("bf16", 1000, 2000), ("pruned", 400, 1600)), "nuanced"),
])
def test_q5_verdicts(table, verdict):
    f = rules.q5(table)
    assert f.verdict == verdict and f.claim == "Q-5" and f.hardware == ""


def test_q5_reason_names_counts_bytes_and_what_parameters_misses():
    f = rules.q5(counts(("bf16", 1000, 2000), ("int8", 1000, 1100)))
    assert "fp32 holds 1000 weights and biases in 4000 bytes" in f.reason
    assert "bf16, int8 hold the same 1000 in 0.5x, 0.28x the bytes" in f.reason
    assert "model.parameters() misses the packed or integer weights of bf16 (0), int8 (0)" \
        in f.reason
    with pytest.raises(ValueError, match="fp32"):
        rules.q5(counts(("bf16", 1000, 2000)).iloc[1:])


# MP-17 ----------------------------------------------------------------------------------------
def mp17_tables(ratios: dict[str, tuple[float, float, float]], dataset_ratio: float = 1.0,
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`ratios`: precision -> (static, activation, total) over 32-true, the same at each size."""
    mem, ds = [], []
    for family, size in SIZES:
        mem.append({"family": family, "size": size, "precision": "32-true",
                    "static_bytes": 1600, "activation_bytes": 1000, "total_bytes": 2600})
        for p, (st, act, tot) in ratios.items():
            mem.append({"family": family, "size": size, "precision": p,
                        "static_bytes": 1600 * st, "activation_bytes": 1000 * act,
                        "total_bytes": 2600 * tot})
    for p in ["32-true", *ratios]:
        for examples in (500, 1000):
            ds.append({"precision": p, "examples": examples,
                       "dataset_bytes": 8000 * (1 if p == "32-true" else dataset_ratio),
                       "total_bytes": 2600})
    return pd.DataFrame(mem), pd.DataFrame(ds)


MIXED = {"bf16-mixed": (1.0, 0.7, 0.88)}
PURE = {"bf16-true": (0.5, 0.5, 0.5), "16-true": (0.5, 0.5, 0.5)}


@pytest.mark.parametrize("ratios, dataset_ratio, verdict", [
    (PURE, 0.5, "supported"),  # everything halves, the dataset too
    (MIXED | PURE, 1.0, "nuanced"),  # mixed keeps fp32 model state; the dataset keeps its bytes
    (PURE, 1.0, "nuanced"),  # the step halves, the dataset does not
    ({"bf16-mixed": (1.0, 0.9, 0.96), "16-mixed": (1.0, 1.2, 1.1)}, 1.0, "refuted"),
])
def test_mp17_verdicts(ratios, dataset_ratio, verdict):
    f = rules.mp17(*mp17_tables(ratios, dataset_ratio))
    assert f.verdict == verdict and f.claim == "MP-17" and f.evidence == "fig-mp17"


def test_mp17_reason_separates_model_state_activations_and_dataset():
    f = rules.mp17(*mp17_tables(MIXED | PURE))
    assert ("bf16-mixed: step 0.88x, weights+grads+optimizer 1x, saved activations 0.7x"
            in f.reason)
    assert "less memory (<= 0.9x) for bf16-mixed, bf16-true, 16-true" in f.reason
    assert "room for larger models for bf16-true, 16-true" in f.reason
    assert "the dataset takes 1x of its 32-true bytes" in f.reason
    assert "identical for 500 and 1000 training examples" in f.reason
    mem, ds = mp17_tables(MIXED)
    with pytest.raises(ValueError, match="16-bit"):
        rules.mp17(mem[mem.precision == "32-true"], ds)


# MP-21 ----------------------------------------------------------------------------------------
def mp21_tables(speedups: dict[str, tuple[float | None, ...]], ran: bool = True,
                finite: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs = pd.DataFrame([{"precision": p, "ran": ran, "finite": finite,
                          "error": "" if ran else "RuntimeError: no kernel"} for p in speedups])
    speed = pd.DataFrame([{"family": f, "size": z, "precision": p, "speedup": s}
                          for p, ss in {"32-true": (1.0, 1.0, 1.0), **speedups}.items()
                          for (f, z), s in zip(SIZES, ss, strict=True) if s is not None])
    return runs, speed


CAP = "AVX2 kernels; native bf16: no"


@pytest.mark.parametrize("speedups, ran, finite, device, verdict", [
    ({"bf16-mixed": (0.6, 0.8, 1.2)}, True, True, "cpu", "nuanced"),  # runs; slower at some
    ({"bf16-mixed": (1.0, 1.3, 2.0)}, True, True, "cpu", "refuted"),  # runs, never slower
    ({"bf16-mixed": (1.0, 1.3, None)}, True, True, "cpu", "nuanced"),  # too slow to time once
    ({"16-mixed": (0.5, 0.5, 0.5)}, False, False, "cpu", "supported"),  # did not run
    ({"16-mixed": (1.0, 1.0, 1.0)}, True, False, "cpu", "supported"),  # non-finite loss
    ({"bf16-mixed": (2.0, 2.5, 3.0)}, True, True, "cuda", "not testable here"),  # timed on GPU
])
def test_mp21_verdicts(speedups, ran, finite, device, verdict):
    f = rules.mp21(*mp21_tables(speedups, ran, finite), CAP, device, HW)
    assert f.verdict == verdict and f.claim == "MP-21" and f.hardware == HW


def test_mp21_reason_names_the_capability_and_the_ratios():
    f = rules.mp21(*mp21_tables({"bf16-mixed": (0.6, 0.8, 1.2), "16-mixed": (0.1, None, None)}),
                   CAP, "cpu", HW)
    assert f.reason.startswith(f"bf16-mixed, 16-mixed training steps ran on this CPU ({CAP})")
    assert "bf16-mixed 0.6-1.2x the step speed of 32-true (slower at 2 of 3 model sizes)" \
        in f.reason
    assert ("16-mixed 0.1x the step speed of 32-true at 1 timed size, too slow to time (slower "
            "still) at 2 (slower at 3 of 3") in f.reason
    failed = rules.mp21(*mp21_tables({"16-mixed": (1.0, 1.0, 1.0)}, ran=False), CAP, "cpu", HW)
    assert "16-mixed: RuntimeError: no kernel" in failed.reason
    with pytest.raises(ValueError, match="runs"):
        rules.mp21(pd.DataFrame(columns=["precision", "ran", "finite", "error"]),
                   pd.DataFrame(), CAP, "cpu", HW)
