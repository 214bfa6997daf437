"""Timing that survives a shared, noisy machine: warm-up, interleaved repeats, medians, ratios.

Candidates are run in turn (A, B, A, B, ...) so that slow phases of the machine hit all of them
alike, and results are reported as ratios measured in the same run, never as absolute targets.
On a CUDA device the time comes from CUDA events.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pandas as pd
import torch


def time_once(fn: Callable[[], object], device: str = "cpu") -> float:
    """Seconds for one call of `fn` (CUDA events on a GPU, perf_counter on the CPU)."""
    if device.startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000.0
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(candidates: dict[str, Callable[[], object]], repeats: int = 7, warmup: int = 2,
                device: str = "cpu") -> pd.DataFrame:
    """Time each candidate `repeats` times, interleaved, after `warmup` untimed rounds.

    Returns a tidy table: candidate, repeat, seconds.
    """
    if repeats < 5:
        raise ValueError(f"repeats: use at least 5 for a median; got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup: must be >= 0; got {warmup}")
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    rows = []
    for r in range(repeats):
        order = list(candidates.items())
        if r % 2:  # alternate the order too, so neither always runs first
            order.reverse()
        for name, fn in order:
            rows.append({"candidate": name, "repeat": r, "seconds": time_once(fn, device)})
    return pd.DataFrame(rows)


def ratios(times: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Median seconds per candidate and its ratio to the baseline's median (same run)."""
    med = times.groupby("candidate", sort=False)["seconds"].median()
    spread = times.groupby("candidate", sort=False)["seconds"].agg(
        lambda s: (s.quantile(0.75) - s.quantile(0.25)) / s.median())
    return pd.DataFrame({"median_s": med, "iqr_over_median": spread,
                         f"ratio_to_{baseline}": med / med[baseline]})
