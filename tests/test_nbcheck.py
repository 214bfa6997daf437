"""The check that keeps timings out of nbval-checked cells, on synthetic notebooks and the book."""

from __future__ import annotations

from pathlib import Path

import pytest

from precisionlab.engine.nbcheck import check_notebooks, timing_leaks

ROOT = Path(__file__).resolve().parents[1]


def notebook(*cells: str) -> dict:
    return {"cells": [{"cell_type": "code", "source": c} for c in cells]}


CHECK = "# NBVAL_CHECK_OUTPUT\n"


@pytest.mark.parametrize("cells, fragment", [
    ((CHECK + "t = bench.interleaved(c)\nprint(t)",), "calls bench.interleaved"),
    ((CHECK + "import time\nt0 = time.perf_counter()",), "calls time.perf_counter"),
    (("times = bench.interleaved(c)", "fast = times.median() < 1", CHECK + "print(fast)"),
     "reads fast"),
    (("rows = []\nfor n in ns:\n    rows.append(bench.time_once(f))", CHECK + "print(len(rows))"),
     "reads rows"),
    (("def timed():\n    return bench.too_slow(c, 1.0)", "x = timed()", CHECK + "print(x)"),
     "reads x"),
    (("slow = bench.too_slow(c, 1.0)",
      "kept = []\nfor n in ns:\n    if n in slow:\n        continue\n    kept.append(n)",
      CHECK + "print(kept)"), "reads kept"),  # a timing guard decided which rows exist
    ((CHECK + "print(speed.speedup.max())",), "reads .speedup"),
    (("import x as rep\nt = bench.interleaved(c)", "rows = []\nrows.append(t)",
      CHECK + "print(rows)"), "reads rows"),  # imports exempt modules, not the lists they fill
    ((CHECK + "print(df['seconds'].sum())",), "reads 'seconds'"),
    ((CHECK + "claims.record(C, 'MP-7', v, r, 'fig', hardware=HW)",), "hardware-dependent"),
])
def test_a_checked_cell_that_measures_or_reads_a_timing_is_named(cells, fragment):
    leaks = timing_leaks(notebook(*cells))
    assert len(leaks) == 1 and fragment in leaks[0]
    assert leaks[0].startswith(f"code cell {len(cells) - 1}:")


@pytest.mark.parametrize("cells", [
    ("t = bench.interleaved(c)\nprint(t)", CHECK + "print(finfo)"),  # timing only unchecked
    ("x = bench.interleaved(c)", "x = 3", CHECK + "print(x)"),  # reassigned from a constant
    ("for p in bench.ratios(t, 'a').index:\n    pass", "for p in ['a']:\n    q = p",
     CHECK + "print(p, q)"),  # a loop variable reused over plain data
    ("%matplotlib inline\nflops = memory.matmul_flops(f)", CHECK + "print(flops)"),
    # a library call drawing a figure of timings does not make the library a timing
    ("from precisionlab.study.reports import speed as rep", "t = bench.interleaved(c)",
     "rep.fig_step(t)", CHECK + "print(rep.facts(counts))"),
])
def test_checked_cells_with_robust_facts_pass(cells):
    assert timing_leaks(notebook(*cells)) == []


def test_no_chapter_checks_a_timing():
    paths = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    paths += sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
    assert paths
    assert check_notebooks(paths) == {}
