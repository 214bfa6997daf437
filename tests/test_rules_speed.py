"""The Q-2 and MP-7 rules reach every verdict they can return, on small hand-made tables."""

import pandas as pd
import pytest

from precisionlab.rules import speed as rules

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


SIZES = [("MLP", 256), ("MLP", 1024), ("transformer", 1)]


def mp7_tables(speedups, totals, acts=(0.8, 0.8, 0.8)):
    """One mixed precision: its speed-up and its total/activation bytes as fractions of 32-true."""
    speed, mem = [], []
    for (family, size), s, t, a in zip(SIZES, speedups, totals, acts, strict=True):
        if s is not None:
            speed.append({"family": family, "size": size, "precision": "bf16-mixed", "speedup": s})
        speed.append({"family": family, "size": size, "precision": "32-true", "speedup": 1.0})
        mem.append({"family": family, "size": size, "precision": "32-true",
                    "activation_bytes": 1000, "total_bytes": 4000})
        mem.append({"family": family, "size": size, "precision": "bf16-mixed",
                    "activation_bytes": int(1000 * a), "total_bytes": int(4000 * t)})
    return pd.DataFrame(speed), pd.DataFrame(mem)


@pytest.mark.parametrize("speedups, totals, verdict", [
    ((2.0, 3.0, 1.6), (0.6, 0.7, 0.8), "supported"),
    ((0.72, 0.92, 0.8), (0.7, 0.8, 1.1), "refuted"),  # slower at every size
    ((2.0, 3.0, 1.6), (0.95, 1.0, 1.1), "refuted"),  # no memory saved anywhere
    ((0.8, 0.9, 0.85), (0.7, 0.7, 0.7), "refuted"),  # memory saved, but slower everywhere
    ((1.0, 1.2, 1.0), (0.7, 0.7, 0.7), "nuanced"),  # memory saved, no speed-up
    ((2.0, 3.0, 0.8), (0.7, 0.7, 0.7), "nuanced"),  # fast at some sizes only
    ((2.0, 3.0, None), (0.7, 0.7, 0.7), "nuanced"),  # too slow to time at one size
])
def test_mp7_verdicts(speedups, totals, verdict):
    f = rules.mp7(*mp7_tables(speedups, totals), HW)
    assert f.verdict == verdict and f.hardware == HW and f.claim == "MP-7"


def test_mp7_reason_says_slower_at_every_size_with_range():
    f = rules.mp7(*mp7_tables((0.72, 0.92, 0.8), (0.7, 0.8, 1.1), acts=(0.64, 0.98, 2.5)), HW)
    assert "slower than 32-true at every one of 3 model sizes (0.72-0.92x" in f.reason
    assert "0.7-1.1x of 32-true's bytes" in f.reason and "cut to <= 0.9x at 2 of 3" in f.reason
    assert "saved activations 0.64-2.5x" in f.reason and "weight copies" in f.reason


def test_mp7_reason_counts_sizes_too_slow_to_time():
    f = rules.mp7(*mp7_tables((0.2, None, None), (0.7, 0.8, 1.1)), HW)
    assert f.verdict == "refuted"
    assert "sizes (0.2x the speed of 32-true, at the 1 timed); too slow to time at the other 2" \
        in f.reason


def test_mp7_needs_a_mixed_precision():
    speed, mem = mp7_tables((2.0, 2.0, 2.0), (0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="mixed precision"):
        rules.mp7(speed, mem[mem.precision == "32-true"], HW)
