"""Rules for the size and speed claims: Q-2 (INT8 doubles speed and storage), Q-5 (lower
precision means fewer parameters), MP-7 (mixed precision greatly speeds up training and cuts
memory), MP-17 (half precision takes less memory, so larger datasets and models fit) and MP-21
(mixed precision needs GPU-class hardware; support varies).

Bytes are exact on every machine; speeds belong to the machine that measured them. So each rule
states its storage or memory half from counted bytes and its speed half from ratios measured
side by side in one run, and a chapter records the finding with the hardware named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from precisionlab.study import stats
from precisionlab.study.claims import Finding, sig2, span

# Q-2 ------------------------------------------------------------------------------------------
Q2_CLAIMED_GAIN = 2.0  # the claim: int8 "doubles" speed and storage efficiency
# A 2x gain counts as met down to 1.8x: file-format overhead and per-channel scales take a few
# per cent of the bytes, and repeated timings on a shared machine scatter by about as much.
Q2_TOLERANCE = 0.1


def q2_storage(stored: pd.DataFrame) -> tuple[bool, float, float]:
    """From a table with columns format ('fp32', 'bf16', 'int8', ...) and file_bytes: whether
    int8 at least (about) doubles storage efficiency over fp32, and int8's bytes over fp32's and
    over bf16's. Bytes are exact, so this half reads the same on every machine."""
    size = stored.groupby("format", sort=False).file_bytes.first()
    for name in ("fp32", "bf16", "int8"):
        if name not in size.index:
            raise ValueError(f"stored: needs a row with format {name!r}; formats: "
                             f"{', '.join(map(str, size.index))}")
    r32, r16 = size["int8"] / size["fp32"], size["int8"] / size["bf16"]
    return bool(1 / r32 >= Q2_CLAIMED_GAIN * (1 - Q2_TOLERANCE)), float(r32), float(r16)


def q2(stored: pd.DataFrame, latency: pd.DataFrame, int8: str, hardware: str,
       evidence: str = "tbl-stored") -> Finding:
    """Q-2 from the stored sizes (`q2_storage`) and the int8 candidate's `speedup_vs_fp32` at each
    (width, batch) of `latency` (ratios of medians measured in one run).

    supported: storage doubles and int8 ran >= 2x (less the tolerance) as fast as fp32 at every
    width and batch; refuted: storage does not double, or int8 was never faster than fp32;
    nuanced: in between (its speed depends on width, batch and kernel); not testable here: no
    int8 timing on this device and storage doubles."""
    store_ok, r32, r16 = q2_storage(stored)
    store = (f"int8 weights take {sig2(r32)}x the bytes of fp32 ({sig2(1 / r32)}x smaller) and "
             f"{sig2(r16)}x those of bf16")
    speed = latency[latency.candidate == int8].speedup_vs_fp32.dropna()
    if speed.empty:
        verdict = "not testable here" if store_ok else "refuted"
        reason = f"{store}; int8 kernels were not timed on this device: the speed half is untested"
        return Finding("Q-2", verdict, reason, evidence, hardware)
    bar = Q2_CLAIMED_GAIN * (1 - Q2_TOLERANCE)
    at_bar = int((speed >= bar).sum())
    never_faster = bool(speed.max() < 1)
    if not store_ok or never_faster:
        verdict = "refuted"
    elif at_bar == len(speed):
        verdict = "supported"
    else:
        verdict = "nuanced"
    cells = latency[latency.candidate == int8]
    head = {"supported": f"int8 stores {sig2(1 / r32)}x smaller and ran at least {sig2(bar)}x "
                         "as fast as fp32 in every case",
            "refuted": ("int8 was never faster than fp32" if never_faster else
                        f"int8 storage gains less than {sig2(bar)}x"),
            "nuanced": f"int8 stores {sig2(1 / r32)}x smaller, but ran at least {sig2(bar)}x as "
                       f"fast as fp32 in only {at_bar} of {len(speed)} cases"}[verdict]
    others = latency[latency.candidate.str.startswith("int8") & (latency.candidate != int8)]
    other_text = "; ".join(f"other int8 path {name}: {span(part.speedup_vs_fp32.dropna())}x"
                           for name, part in others.groupby("candidate", sort=False)
                           if part.speedup_vs_fp32.notna().any())
    reason = (f"{head}; {store}; {int8} ran {span(speed)}x as fast as fp32, at least "
              f"{sig2(bar)}x in {at_bar} of {len(speed)} (width, batch) cases (widths "
              f"{', '.join(map(str, sorted(cells.width.unique())))}; batches "
              f"{', '.join(map(str, sorted(cells.batch.unique())))})"
              + (f"; {other_text}" if other_text else "") + " (tbl-latency)")
    return Finding("Q-2", verdict, reason, evidence, hardware)


# MP-7 -----------------------------------------------------------------------------------------
MP7_FAST = 1.5  # "greatly speeds up": at least 1.5x, far beyond how repeated timings scatter
# MP-21 calls a step speed below 0.95x of 32-true's slower: repeated interleaved timings on a
# shared machine scatter by a few per cent, so a smaller shortfall is not told apart from a tie.
MP7_SLOWER = 0.95
# Memory counts as cut when the whole step holds at most 0.9x of 32-true's bytes: byte counts are
# exact, but a cut under 10 % changes no model a reader could fit.
MP7_MEMORY_CUT = 0.9
# A paired interval needs at least two seeds; with fewer the rule cannot judge noise.
MP7_MIN_SEEDS = 2


@dataclass(frozen=True)
class _Pace:
    """One recipe's step speed-up over 32-true at one size, and whether it is beyond noise."""

    speedup: float  # NaN: too slow to time
    faster: bool
    slower: bool  # beyond noise, or too slow to time


def _paces(speed: pd.DataFrame, per_seed: pd.DataFrame | None, recipe: str,
           sizes: list[tuple[str, object]]) -> list[_Pace]:
    """`recipe`'s pace at each size: from `per_seed` the book's noise rule (the 95 % interval
    over seeds of the log speed-up excludes 0, its centre the geometric mean); without it, the
    seeds' range in `speed` (lo, hi: every seed on one side of 1; lo == hi, one seed, judges
    nothing). A size with no row was too slow to time: slower."""
    out = []
    for family, size in sizes:
        if per_seed is not None:
            rows = per_seed[(per_seed.family == family) & (per_seed["size"] == size)
                            & (per_seed.precision == recipe)]
            if rows.empty:
                out.append(_Pace(math.nan, False, True))
                continue
            iv = stats.interval(np.log(rows.speedup.to_numpy(dtype=float)))
            out.append(_Pace(math.exp(iv.mean), iv.low > 0, iv.high < 0))
            continue
        rows = speed[(speed.family == family) & (speed["size"] == size)
                     & (speed.precision == recipe)]
        if rows.empty:
            out.append(_Pace(math.nan, False, True))
            continue
        r = rows.iloc[0]
        spread = r.lo < r.hi
        out.append(_Pace(float(r.speedup), bool(spread and r.lo > 1), bool(spread and r.hi < 1)))
    return out


def mp7(speed: pd.DataFrame, memory: pd.DataFrame, hardware: str, evidence: str = "fig-step",
        per_seed: pd.DataFrame | None = None) -> Finding:
    """MP-7 from step speed-ups and counted step memory, per mixed-precision recipe and model size.

    `speed`: columns family, size, precision, speedup, lo, hi (a recipe's step speed over
    32-true's at that size: median, slowest and fastest seed; a recipe too slow to time at a size
    has no row there, and counts as slower). `per_seed` (columns seed, family, size, precision,
    speedup), when given, decides the noise by the book's rule (95 % interval over seeds of the
    log speed-up); without it the seeds' range in `speed` does. `memory`: columns family, size,
    precision, activation_bytes, total_bytes (32-true included).

    Each recipe is judged on its own at every size: *greatly faster* is faster beyond noise and
    at least MP7_FAST x; memory is *cut* at <= MP7_MEMORY_CUT of 32-true's total. supported:
    every recipe greatly faster and cutting memory at every size; refuted: no recipe faster
    beyond noise at any size, or none cuts memory at any size; nuanced: in between; not testable
    here: fewer than MP7_MIN_SEEDS seeds, so noise cannot be judged."""
    mem = memory.set_index(["family", "size", "precision"])
    sizes = list(dict.fromkeys(zip(memory.family, memory["size"], strict=True)))
    recipes = [p for p in dict.fromkeys(memory.precision) if p != "32-true"]
    if not recipes or not sizes:
        raise ValueError("memory: needs 32-true and at least one mixed precision at some size")
    if per_seed is not None:
        seeds = per_seed.seed.nunique()
    elif not {"lo", "hi"} <= set(speed.columns):
        raise ValueError("speed: needs the columns lo and hi (the seeds' range), or pass "
                         "per_seed, to judge noise")
    else:
        timed = speed[speed.precision.isin(recipes)]
        seeds = 1 if len(timed) and (timed.lo == timed.hi).all() else MP7_MIN_SEEDS
    if seeds < MP7_MIN_SEEDS:
        return Finding("MP-7", "not testable here", f"step speed-ups from {seeds} seed(s): an "
                       f"interval needs {MP7_MIN_SEEDS} to judge noise", evidence, hardware)
    n = len(sizes)
    paces = {p: _paces(speed, per_seed, p, sizes) for p in recipes}
    tot = {p: [mem.loc[(f, z, p), "total_bytes"] / mem.loc[(f, z, "32-true"), "total_bytes"]
               for f, z in sizes if (f, z, p) in mem.index] for p in recipes}
    act = {p: [mem.loc[(f, z, p), "activation_bytes"]
               / mem.loc[(f, z, "32-true"), "activation_bytes"]
               for f, z in sizes if (f, z, p) in mem.index] for p in recipes}
    great = {p: sum(x.faster and x.speedup >= MP7_FAST for x in r) for p, r in paces.items()}
    cut = {p: sum(t <= MP7_MEMORY_CUT for t in tot[p]) for p in recipes}
    if not any(x.faster for r in paces.values() for x in r) or not any(cut.values()):
        verdict = "refuted"
    elif all(great[p] == n and cut[p] == n for p in recipes):
        verdict = "supported"
    else:
        verdict = "nuanced"
    noise = f"95 % interval over {seeds} seeds" if per_seed is not None else "seeds' range"
    head = (f"each mixed-precision recipe against 32-true over {n} model sizes (beyond noise: "
            f"{noise} excludes 1): " + ", ".join(_recipe_speed(p, r) for p, r in paces.items())
            + f", and the whole step's memory cut to <= {sig2(MP7_MEMORY_CUT)}x of 32-true's "
            "bytes at " + ", ".join(f"{cut[p]} of {n} sizes ({p})" for p in recipes))
    held: dict[str, list[str]] = {}  # recipes whose bytes read alike are reported together
    for p in recipes:
        held.setdefault(f"whole step {span(tot[p])}x of 32-true's bytes, saved activations "
                        f"{span(act[p])}x", []).append(p)
    mem_part = "; ".join(f"{' and '.join(ps)}: {text}" for text, ps in held.items())
    mem_part += "; weights, grads and Adam state stay fp32"
    if max(max(a) for a in act.values()) >= 1:
        mem_part += " (autocast also saves 16-bit weight copies)"
    return Finding("MP-7", verdict, f"{head}; {mem_part}", evidence, hardware)


def _recipe_speed(recipe: str, paces: list[_Pace]) -> str:
    """'16-mixed ran 0.1-0.21x the step speed of 32-true at 2 timed sizes (faster beyond noise
    at 0 of 7 sizes, >= 1.5x at 0, slower at 7: too slow to time at 5)': both counts, always."""
    timed = [x.speedup for x in paces if not math.isnan(x.speedup)]
    untimed = len(paces) - len(timed)
    faster = sum(x.faster for x in paces)
    great = sum(x.faster and x.speedup >= MP7_FAST for x in paces)
    slower = sum(x.slower for x in paces)
    ratio = (f"ran {span(timed)}x the step speed of 32-true"
             + (f" at {len(timed)} timed sizes" if untimed else "") if timed
             else "was too slow to time at every size")
    return (f"{recipe} {ratio} (faster beyond noise at {faster} of {len(paces)} sizes, "
            f">= {sig2(MP7_FAST)}x at {great}, slower at {slower}"
            + (f": too slow to time at {untimed})" if untimed else ")"))


# Q-5 ------------------------------------------------------------------------------------------
def q5(counts: pd.DataFrame, evidence: str = "tbl-q5") -> Finding:
    """Q-5 from exact counts: columns format ('fp32' the baseline), parameters (the weights and
    biases the model computes with) and stored_bytes; optional parameters_api (what
    `model.parameters()` reports).

    supported: every lower-precision format holds fewer parameters than fp32; refuted: none
    does (the count is unchanged; only bytes can shrink); nuanced: some do. Counts are exact, so
    no tolerance is needed."""
    c = counts.set_index("format")
    if "fp32" not in c.index or len(c) < 2:
        raise ValueError("counts: needs a row with format 'fp32' and at least one other format")
    base, base_bytes = int(c.parameters["fp32"]), int(c.stored_bytes["fp32"])
    others = c.drop("fp32")
    fewer = [f for f in others.index if others.parameters[f] < base]
    if len(fewer) == len(others):
        verdict = "supported"
    elif not fewer:
        verdict = "refuted"
    else:
        verdict = "nuanced"
    same = [f for f in others.index if others.parameters[f] == base]
    parts = [f"fp32 holds {base} weights and biases in {base_bytes} bytes"]
    if same:
        parts.append(f"{', '.join(same)} hold the same {base} in "
                     + ", ".join(f"{sig2(others.stored_bytes[f] / base_bytes)}x"
                                 for f in same) + " the bytes")
    if fewer:
        parts.append("fewer in " + ", ".join(f"{f} ({int(others.parameters[f])})" for f in fewer))
    if "parameters_api" in c.columns:
        hidden = [f for f in c.index if c.parameters_api[f] < c.parameters[f]]
        if hidden:
            parts.append("model.parameters() misses the packed or integer weights of "
                         + ", ".join(f"{f} ({int(c.parameters_api[f])})" for f in hidden))
    return Finding("Q-5", verdict, "; ".join(parts), evidence)


# MP-17 ----------------------------------------------------------------------------------------
# Memory counts as less when a precision's counted bytes are at most 0.9x of 32-true's: the
# counts are exact, but a cut under 10 % lets no noticeably larger model, batch or dataset fit.
MP17_CUT = 0.9


def mp17(memory: pd.DataFrame, dataset: pd.DataFrame, evidence: str = "fig-mp17") -> Finding:
    """MP-17 from counted bytes of one training step per model size and precision.

    `memory`: columns family, size, precision (32-true and 16-bit ones), static_bytes (weights,
    gradients, optimizer state), activation_bytes, total_bytes. `dataset`: columns precision,
    examples, dataset_bytes (the dataset the step trains from), total_bytes (of the step).
    A precision "takes less memory" at a size when its total is <= MP17_CUT of 32-true's; it
    lets larger models fit when its static bytes are, larger datasets when its dataset bytes are.

    supported: every 16-bit precision takes less memory and fits larger models at every size,
    and fits larger datasets; refuted: no 16-bit precision takes less memory at any size;
    nuanced: in between (e.g. only some precisions, or not the dataset)."""
    mem = memory.set_index(["family", "size", "precision"])
    sizes = list(dict.fromkeys(zip(memory.family, memory["size"], strict=True)))
    low = [p for p in dict.fromkeys(memory.precision) if p != "32-true"]
    if not low or not sizes or "32-true" not in set(memory.precision):
        raise ValueError("memory: needs 32-true and at least one 16-bit precision")
    ratios = {}
    for p in low:
        rows = [(mem.loc[(f, z, p)], mem.loc[(f, z, "32-true")]) for f, z in sizes
                if (f, z, p) in mem.index]
        ratios[p] = {k: [r[k] / b[k] for r, b in rows]
                     for k in ("total_bytes", "static_bytes", "activation_bytes")}
    ds = dataset.groupby("precision").dataset_bytes.max()
    ds_ratio = {p: ds[p] / ds["32-true"] for p in low if p in ds.index}
    less = {p: all(t <= MP17_CUT for t in r["total_bytes"]) for p, r in ratios.items()}
    models = {p: all(t <= MP17_CUT for t in r["static_bytes"]) for p, r in ratios.items()}
    never = all(min(r["total_bytes"]) > MP17_CUT for r in ratios.values())
    data_fits = bool(ds_ratio) and all(r <= MP17_CUT for r in ds_ratio.values())
    if never:
        verdict = "refuted"
    elif all(less.values()) and all(models.values()) and data_fits:
        verdict = "supported"
    else:
        verdict = "nuanced"
    per_prec = "; ".join(
        f"{p}: step {span(r['total_bytes'])}x, weights+grads+optimizer {span(r['static_bytes'])}x,"
        f" saved activations {span(r['activation_bytes'])}x" for p, r in ratios.items())
    grows = dataset.groupby("precision").total_bytes.nunique().gt(1).any()
    data_part = (f"the dataset takes {span(list(ds_ratio.values()))}x of its 32-true bytes "
                 "(it is stored as loaded; batches are cast on the way in)" if ds_ratio
                 else "the dataset was not counted")
    data_part += (", and the step's bytes change with the dataset's size" if grows else
                  f", and the step's bytes are identical for "
                  f"{' and '.join(map(str, sorted(dataset.examples.unique())))} training "
                  f"examples")
    reason = (f"of 32-true's bytes, over {len(sizes)} model sizes: {per_prec}; less memory "
              f"(<= {sig2(MP17_CUT)}x) for {', '.join(p for p in low if less[p]) or 'none'}, "
              f"room for larger models for {', '.join(p for p in low if models[p]) or 'none'}; "
              f"{data_part}")
    return Finding("MP-17", verdict, reason, evidence)


# MP-21 ----------------------------------------------------------------------------------------
def mp21(runs: pd.DataFrame, speed: pd.DataFrame, capability: str, speed_device: str,
         hardware: str, evidence: str = "tbl-mp21") -> Finding:
    """MP-21 on this CPU, a device without tensor cores.

    `runs`: columns precision (mixed ones), ran (no error), finite (final loss finite), error.
    `speed`: MP-7's step speed-ups, columns family, size, precision, speedup (timed on
    `speed_device`; 32-true's rows name the model sizes; a precision too slow to time at a size
    has no row there, and counts as slower). `capability`: the CPU's kernel capability and
    16-bit instruction sets, in words.

    supported: some mixed precision failed to run, or gave a non-finite loss, on the CPU;
    not testable here: it ran, but the speed was timed on a GPU, not on the weaker device;
    refuted: it ran, with a step speed at least MP7_SLOWER of 32-true's at every size (no
    hardware dependence shows); nuanced: it ran, but was slower (< MP7_SLOWER, or too slow to
    time) at some size, so what the hardware supports sets the speed, not whether it runs."""
    if runs.empty:
        raise ValueError("runs: needs at least one mixed precision run on the CPU")
    failed = runs[~(runs.ran & runs.finite)]
    ran = ", ".join(runs.precision)
    if len(failed):
        why = "; ".join(f"{r.precision}: {r.error or 'non-finite loss'}"
                        for r in failed.itertuples())
        return Finding("MP-21", "supported", f"on this CPU ({capability}) {why}", evidence,
                       hardware)
    head = f"{ran} training steps ran on this CPU ({capability}) with finite losses"
    if speed_device != "cpu":
        return Finding("MP-21", "not testable here", f"{head}; their speed was timed on "
                       f"{speed_device}, not on the CPU", evidence, hardware)
    sizes = list(dict.fromkeys(zip(speed.family, speed["size"], strict=True)))
    sp = speed.set_index(["family", "size", "precision"]).speedup
    ratios = {p: [sp.get((f, z, p), math.nan) for f, z in sizes] for p in runs.precision}
    slower = {p: sum(math.isnan(x) or x < MP7_SLOWER for x in r) for p, r in ratios.items()}
    timed = [x for r in ratios.values() for x in r if not math.isnan(x)]
    verdict = "nuanced" if any(slower.values()) else "refuted"

    def ran_at(r: list[float]) -> str:
        got = [x for x in r if not math.isnan(x)]
        untimed = len(r) - len(got)
        if not got:
            return "too slow to time"
        return (f"{span(got)}x the step speed of 32-true" + (
            f" at {len(got)} timed size{'s' * (len(got) != 1)}, too slow to time (slower still)"
            f" at {untimed}"
            if untimed else ""))

    detail = "; ".join(f"{p} {ran_at(r)} (slower at {slower[p]} of {len(sizes)} model sizes)"
                       for p, r in ratios.items())
    if not timed:
        detail += ": no mixed-precision step could be timed"
    return Finding("MP-21", verdict, f"{head}; {detail}", evidence, hardware)
