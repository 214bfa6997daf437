"""The timing harness: interleaved order, medians and ratios from one run."""

from __future__ import annotations

import pytest

from precisionlab import bench


def test_interleaves_candidates_and_reports_ratios():
    calls = []
    times = bench.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                              repeats=5, warmup=1)
    assert calls[:2] == ["a", "b"]  # warm-up
    assert calls[2:6] == ["a", "b", "b", "a"]  # timed rounds alternate their order
    assert len(times) == 10 and set(times.candidate) == {"a", "b"}
    table = bench.ratios(times, "a")
    assert table.loc["a", "ratio_to_a"] == 1.0
    assert (table.median_s > 0).all()


def test_too_few_repeats_is_an_error():
    with pytest.raises(ValueError, match="^repeats: use at least 5"):
        bench.interleaved({"a": lambda: None}, repeats=3)
