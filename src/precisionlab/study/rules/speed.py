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

import pandas as pd

from precisionlab.study.claims import Finding, sig2

# Q-2 ------------------------------------------------------------------------------------------
Q2_CLAIMED_GAIN = 2.0  # the claim: int8 "doubles" speed and storage efficiency
# A 2x gain counts as met down to 1.8x: file-format overhead and per-channel scales take a few
# per cent of the bytes, and repeated timings on a shared machine scatter by about as much.
Q2_TOLERANCE = 0.1


def span(values: pd.Series | list[float]) -> str:
    """'a' when every value rounds alike to 2 significant digits, else 'lo-hi'."""
    lo, hi = sig2(min(values)), sig2(max(values))
    return lo if lo == hi else f"{lo}-{hi}"


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
    reason = (f"{store}; {int8} ran {span(speed)}x as fast as fp32, at least {sig2(bar)}x "
              f"in "
              f"{at_bar} of {len(speed)} (width, batch) cases (widths "
              f"{', '.join(map(str, sorted(cells.width.unique())))}; batches "
              f"{', '.join(map(str, sorted(cells.batch.unique())))})"
              + (": never faster than fp32" if never_faster else "")
              + ("" if store_ok else f": storage gains less than {sig2(bar)}x") + " (tbl-latency)")
    return Finding("Q-2", verdict, reason, evidence, hardware)


# MP-7 -----------------------------------------------------------------------------------------
MP7_FAST = 1.5  # "greatly speeds up": at least 1.5x, far beyond how repeated timings scatter
# Slower means a step speed below 0.95x of 32-true: repeated interleaved timings on a shared
# machine scatter by a few per cent, so a smaller shortfall is not told apart from a tie.
MP7_SLOWER = 0.95
# Memory counts as cut when the whole step holds at most 0.9x of 32-true's bytes: byte counts are
# exact, but a cut under 10 % changes no model a reader could fit.
MP7_MEMORY_CUT = 0.9


def mp7(speed: pd.DataFrame, memory: pd.DataFrame, hardware: str,
        evidence: str = "fig-step") -> Finding:
    """MP-7 from step speed-ups and counted step memory, per model size.

    `speed`: columns family, size, precision, speedup (a mixed precision's step speed over
    32-true's at that size, median over seeds; a precision too slow to time has no row).
    `memory`: columns family, size, precision, activation_bytes, total_bytes (32-true included).
    Per size, the best mixed precision counts. supported: >= MP7_FAST at every size and memory
    cut (<= MP7_MEMORY_CUT of 32-true's total) at every size; refuted: slower (< MP7_SLOWER) at
    every size, or memory cut at no size; nuanced: in between."""
    mem = memory.set_index(["family", "size", "precision"])
    sizes = list(dict.fromkeys(zip(memory.family, memory["size"], strict=True)))
    mixed = [p for p in dict.fromkeys(memory.precision) if p != "32-true"]
    if not mixed or not sizes:
        raise ValueError("memory: needs 32-true and at least one mixed precision at some size")
    sp = speed[speed.precision.isin(mixed)].set_index(["family", "size", "precision"]).speedup
    best_speed, tot, act = [], [], []
    for family, size in sizes:
        ref = mem.loc[(family, size, "32-true")]
        here = [p for p in mixed if (family, size, p) in mem.index]
        tot.append(min(mem.loc[(family, size, p), "total_bytes"] for p in here) / ref.total_bytes)
        act.append(min(mem.loc[(family, size, p), "activation_bytes"] for p in here)
                   / ref.activation_bytes)
        timed = [sp[(family, size, p)] for p in mixed if (family, size, p) in sp.index]
        best_speed.append(max(timed) if timed else math.nan)
    n = len(sizes)
    timed = [s for s in best_speed if not math.isnan(s)]
    fast = all(s >= MP7_FAST for s in best_speed)  # NaN (too slow to time) is never fast
    slower = [s for s in best_speed if math.isnan(s) or s < MP7_SLOWER]
    cut = sum(t <= MP7_MEMORY_CUT for t in tot)
    if len(slower) == n or cut == 0:
        verdict = "refuted"
    elif fast and cut == n:
        verdict = "supported"
    else:
        verdict = "nuanced"
    all_speed = sp.dropna()
    where = "" if len(timed) == n else f", at the {len(timed)} timed"
    ratios = f" ({span(all_speed)}x the speed of 32-true{where})" if len(all_speed) else ""
    if len(slower) == n:
        speed_part = (f"mixed precision was slower than 32-true at every one of {n} model "
                      f"sizes{ratios}")
    elif fast:
        speed_part = f"mixed precision trained >= {sig2(MP7_FAST)}x faster at all {n} sizes{ratios}"
    else:
        n_fast = sum(s >= MP7_FAST for s in timed)
        speed_part = (f"mixed precision was >= {sig2(MP7_FAST)}x faster at {n_fast} of {n} model "
                      f"sizes and slower at {len(slower)}{ratios}")
    if len(timed) < n:
        speed_part += f"; too slow to time at the other {n - len(timed)}"
    mem_part = (f"the whole step held {span(tot)}x of 32-true's bytes (cut to <= "
                f"{sig2(MP7_MEMORY_CUT)}x at {cut} of {n} sizes; weights, grads and Adam state "
                f"stay fp32), saved activations {span(act)}x")
    if max(act) >= 1:
        mem_part += " (autocast also saves 16-bit weight copies)"
    return Finding("MP-7", verdict, f"{speed_part}; {mem_part}", evidence, hardware)


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
        return f"{span(got)}x the step speed of 32-true" if got else "too slow to time"

    detail = "; ".join(f"{p} {ran_at(r)} (slower at {slower[p]} of {len(sizes)} model sizes)"
                       for p, r in ratios.items())
    if not timed:
        detail += ": no mixed-precision step could be timed"
    return Finding("MP-21", verdict, f"{head}; {detail}", evidence, hardware)
