"""Verdict rules of the quantization chapters: Q-1, MP-10, Q-4 (chapter 5) and Q-3 (chapter 6).

Each rule reads the tidy tables of `precisionlab.study.experiments.quantization`. Accuracy
comparisons are paired by seed (`precisionlab.study.stats`): every quantized, factorized or
fine-tuned model is compared with the fp32 model (or PTQ model, or control) of its own seed,
and the 95 % interval of the paired differences decides: beyond noise when it excludes 0,
equivalent when it lies inside the claim's margin.
"""

from __future__ import annotations

import pandas as pd

from precisionlab.study import stats
from precisionlab.study.claims import Finding, sig2

# Q-1 "keeps accuracy": a quantized model whose whole 95 % interval of accuracy lost lies within
# one percentage point of its fp32 model keeps accuracy (the tolerance the chapter declared
# before measuring; a reader deploying a model would notice more than one point).
Q1_MARGIN = 0.01
# Q-3 "trades accuracy": a width trades accuracy when its loss is beyond noise and not within
# one accuracy point (the same point as Q-1: the claims are about the same int8 models).
Q3_MARGIN = 0.01
# Q-4 "low rank vs integers at equal bytes": equal within one accuracy point, as for Q-1.
Q4_MARGIN = 0.01
# MP-10: below this share of exact zeros no sparse format (values plus indices) can store a
# model in fewer bytes than its dense form; one weight in ten is far below any break-even.
ZERO_LIMIT = 0.10
# MP-10: at least half the weights exactly zero, sparsity could really compress the model.
SPARSE_ENOUGH = 0.5
INDEX_DTYPES = ("int64", "bool")  # integer dtypes of labels, token ids, indices and masks
MAX_LISTED = 4  # int8 variants Q-1's reason names when they are not equivalent (one line)


def paired_vs(rows: pd.DataFrame, value: str, reference: str, margin: float) -> stats.Comparison:
    """Paired comparison of column `value` against column `reference` of the same rows (one
    row per seed): e.g. a quantized model's accuracy against its own seed's fp32 accuracy. One
    test example (`test_examples`, where the rows have it) is the accuracy's resolution."""
    long = pd.concat([
        pd.DataFrame({"seed": rows.seed, "arm": "treatment", "x": rows[value]}),
        pd.DataFrame({"seed": rows.seed, "arm": "reference", "x": rows[reference]})])
    resolution = (1.0 / float(rows.test_examples.min()) if "test_examples" in rows
                  and rows.test_examples.notna().any() else 0.0)
    return stats.compare(long, "x", "arm", "treatment", "reference", margin,
                         resolution=resolution)


def _pp(c: stats.Comparison) -> str:
    """A paired accuracy difference in percentage points with what the design could detect:
    '-0.1 [-0.3, +0.1] pp (n=3; detectable 0.4 pp at 80 % power, margin 1 pp)'."""
    return c.text(100, " pp")


def _words(c: stats.Comparison) -> str:
    return {"equivalent": "within the margin", "lower": "lower beyond noise",
            "higher": "higher beyond noise", "inconclusive": "inconclusive",
            "underpowered": "inside the margin, underpowered"}[c.outcome]


# --- Q-1 -------------------------------------------------------------------------------------

def _recipe(bits_table: pd.DataFrame) -> pd.DataFrame:
    """Standard int8: per-channel symmetric weights, calibrated per-tensor activations."""
    t = bits_table
    return t[(t.bits == 8) & (t["mode"] == "weight+activation") & (t.granularity == "per_channel")
             & (t.weights == "symmetric")]


def q1(bits_table: pd.DataFrame, calib_table: pd.DataFrame | None = None) -> Finding:
    """Q-1, "quantization maps floats to integers by range buckets and keeps accuracy".

    refuted   if standard int8 loses accuracy beyond noise and beyond Q1_MARGIN on some model;
    supported if standard int8, every other int8 variant tried (weight schemes, modes, and
              calibrators in `calib_table`) and the best scheme of every narrower width are
              all equivalent to fp32 within Q1_MARGIN on every model;
    nuanced   otherwise (some variant or narrower width loses, or the seeds cannot tell)."""
    models = list(dict.fromkeys(bits_table.model))
    recipe = {m: paired_vs(_recipe(bits_table)[lambda t, m=m: t.model == m], "test_accuracy",
                           "fp32_accuracy", Q1_MARGIN) for m in models}
    i8 = bits_table[bits_table.bits == 8].groupby(["model", "mode", "granularity", "weights"])
    variants = {(m, f"{mode} {g} {w}"): paired_vs(part, "test_accuracy", "fp32_accuracy", Q1_MARGIN)
                for (m, mode, g, w), part in i8}
    if calib_table is not None and len(calib_table):
        c8 = calib_table[calib_table.default_size & (calib_table.act_bits == 8)]
        variants |= {(m, f"activations {c}"): paired_vs(part, "test_accuracy", "fp32_accuracy",
                                                        Q1_MARGIN)
                     for (m, c), part in c8.groupby(["model", "calibrator"])}
    narrow = {}
    for (m, b), part in bits_table[bits_table.bits < 8].groupby(["model", "bits"]):
        keys = ["mode", "granularity", "weights"]
        best = part.groupby(keys).test_accuracy.mean().idxmax()
        rows = part[(part[keys] == pd.Series(best, index=keys)).all(axis=1)]
        narrow[m, int(b)] = paired_vs(rows, "test_accuracy", "fp32_accuracy", Q1_MARGIN)
    recipe_text = "; ".join(f"{m} {_pp(c)} ({_words(c)})" for m, c in recipe.items())
    margin = f"{sig2(100 * Q1_MARGIN)} pp"
    n_eq = sum(c.outcome == "equivalent" for c in variants.values())
    off = [f"{m} {v} ({_words(c)})" for (m, v), c in variants.items() if c.outcome != "equivalent"]
    off_text = f" (not: {', '.join(off[:MAX_LISTED])}{', ...' if len(off) > MAX_LISTED else ''})"
    lost = [f"{m} at {b} bits ({_words(c)})" for (m, b), c in sorted(narrow.items(),
                                                                      key=lambda kv: -kv[0][1])
            if c.outcome != "equivalent"]
    head = f"standard int8 (per-channel weights, calibrated activations) vs fp32: {recipe_text}"
    if any(c.outcome == "lower" for c in recipe.values()):
        return Finding("Q-1", "refuted", f"{head}, with a margin of {margin}", "tbl-ptq-bits")
    if (all(c.outcome == "equivalent" for c in recipe.values()) and n_eq == len(variants)
            and not lost):
        return Finding("Q-1", "supported", f"{head}; all {len(variants)} int8 variants and the "
                       f"best scheme of every narrower width stay within {margin} of fp32",
                       "tbl-ptq-bits")
    where = (f"the best scheme of a narrower width is not shown equivalent at: "
             f"{', '.join(lost)}" if lost else "every narrower width's best scheme is equivalent")
    return Finding("Q-1", "nuanced", f"{n_eq} of {len(variants)} int8 variants are equivalent "
                   f"to fp32 within {margin}{off_text if off else ''}, and {where}; {head}",
                   "tbl-ptq-bits")


# --- MP-10 -----------------------------------------------------------------------------------

def integer_ops(trace: pd.DataFrame, index_dtypes: tuple[str, ...] = INDEX_DTYPES
                ) -> pd.DataFrame:
    """Rows of a `trace_dtypes` table whose inputs or output include an integer dtype other
    than `index_dtypes`: the mark of a quantized kernel."""
    def other_int(dtypes: str) -> bool:
        return any(d and d not in index_dtypes and d.startswith(("int", "uint", "qint", "quint"))
                   for d in dtypes.split(","))
    return trace[trace.in_dtypes.map(other_int) | trace.out_dtype.map(other_int)]


def mp10(trace: pd.DataFrame, zeros: pd.DataFrame) -> Finding:
    """MP-10, "mixed precision computes in INT8 and FP16 side by side; INT8's sparsity
    compresses the model". `trace`: the dtypes of one mixed-precision training step;
    `zeros`: zero_fraction per model, seed and bits (int8 rows needed).

    refuted   if no op of the step uses an integer type beyond indices/labels/masks and int8
              leaves fewer than ZERO_LIMIT of the weights exactly zero on every model;
    supported if integer ops appear and int8 zeroes at least SPARSE_ENOUGH on every model;
    nuanced   otherwise."""
    ops = integer_ops(trace)
    z8 = zeros[zeros.bits == 8].groupby("model", sort=False).zero_fraction.mean()
    if z8.empty:
        raise ValueError("zeros: needs int8 rows (bits == 8)")
    low = zeros[zeros.bits == zeros.bits.min()].groupby("model", sort=False).zero_fraction.mean()
    zero_text = ", ".join(f"{m} {sig2(100 * z)} %" for m, z in z8.items())
    reason = (f"{len(ops)} of the {len(trace)} aten ops of a mixed-precision training step use an "
              f"integer type other than {'/'.join(INDEX_DTYPES)}; int8 per-channel quantization "
              f"makes {zero_text} of the weights exactly zero (at {int(zeros.bits.min())} bits: "
              + ", ".join(f"{m} {sig2(100 * z)} %" for m, z in low.items()) + ")")
    if len(ops) == 0 and (z8 < ZERO_LIMIT).all():
        return Finding("MP-10", "refuted", reason + ", so int8 compresses by its 8-bit storage, "
                       "not by sparsity, and plays no part in the training step", "tbl-ptq-zeros")
    if len(ops) > 0 and (z8 >= SPARSE_ENOUGH).all():
        return Finding("MP-10", "supported", reason, "tbl-ptq-zeros")
    return Finding("MP-10", "nuanced", reason, "tbl-ptq-zeros")


# --- Q-4 -------------------------------------------------------------------------------------

def q4(low_rank: pd.DataFrame, bits_table: pd.DataFrame) -> Finding:
    """Q-4, "matrix factorization is a low-precision training method". `low_rank`: rows of
    `low_rank_sweep` (accuracy, bytes and stored dtypes per seed and byte budget); the integer
    models at the same budget are the weight-only per-channel symmetric rows of `bits_table`.

    A low-precision method stores numbers in fewer bits. Measured: whether any stored factor
    has another number format than the fp32 weights, and low rank vs integers at equal bytes
    (paired by seed, margin Q4_MARGIN).
    refuted   if no stored format changes and low rank is below the integers beyond noise in
              some comparison (neither fewer bits nor a substitute for them);
    supported if some factor is stored in fewer bits and low rank is never below the integers;
    nuanced   otherwise (e.g. float32 factors that match the integers' accuracy)."""
    ints = bits_table[(bits_table["mode"] == "weight-only")
                      & (bits_table.granularity == "per_channel")
                      & (bits_table.weights == "symmetric")]
    changed = low_rank[low_rank.factor_dtypes != low_rank.weight_dtype]
    cmp, texts = [], []
    for (m, b), part in low_rank.groupby(["model", "budget_bits"], sort=False):
        q = ints[(ints.model == m) & (ints.bits == b)][["seed", "test_accuracy", "weight_bytes"]]
        if q.empty:
            raise ValueError(f"bits_table: no int{b} weight-only per-channel rows for {m}")
        rows = part.merge(q, on="seed", suffixes=("", "_int"), validate="one_to_one")
        c = paired_vs(rows, "test_accuracy", "test_accuracy_int", Q4_MARGIN)
        cmp.append(c)
        ratio = rows.weight_bytes.mean() / rows.weight_bytes_int.mean()
        texts.append(f"{m} at int{b} bytes (x{sig2(ratio)}): {_pp(c)} ({_words(c)})")
    lower = any(c.outcome == "lower" for c in cmp)
    fmt = (f"{len(changed)} of {len(low_rank)} factorized models store a factor in another format "
           f"than their {', '.join(sorted(set(low_rank.weight_dtype)))} weights (factors: "
           f"{', '.join(sorted(set(low_rank.factor_dtypes)))}, "
           f"{int(low_rank.factor_bits.max())} bits per value)")
    reason = f"{fmt}; low rank minus integer weights at equal bytes: {'; '.join(texts)}"
    if changed.empty and lower:
        verdict = "refuted"
    elif not changed.empty and not lower:
        verdict = "supported"
    else:
        verdict = "nuanced"
    return Finding("Q-4", verdict, reason, "fig-ptq-lowrank")


# --- Q-3 -------------------------------------------------------------------------------------

def q3(ptq_table: pd.DataFrame, curves: pd.DataFrame | None = None) -> Finding:
    """Q-3, "the more accuracy a task needs, the less suited INT8; low bit widths trade
    accuracy". `ptq_table`: weight+activation PTQ rows per seed and width with fp32_accuracy;
    `curves`: the QAT curves (for the reason only: QAT does not decide the verdict).

    A width *trades accuracy* when its paired loss against fp32 is beyond noise and not within
    Q3_MARGIN ('lower').
    supported if int8 trades accuracy and some narrower width does too;
    nuanced   if some narrower width trades accuracy but int8 does not (or the seeds cannot
              tell at int8), or if nothing trades accuracy but some width is inconclusive;
    refuted   if every width tested is equivalent to fp32 within Q3_MARGIN."""
    wa = ptq_table[ptq_table.scheme == "weight+activation"]
    by_bits = {int(b): paired_vs(part, "test_accuracy", "fp32_accuracy", Q3_MARGIN)
               for b, part in sorted(wa.groupby("bits"), key=lambda kv: -kv[0])}
    if 8 not in by_bits:
        raise ValueError("ptq_table: needs weight+activation rows at 8 bits (the claim is "
                         "about INT8)")
    costly = [b for b, c in by_bits.items() if b < 8 and c.outcome == "lower"]
    int8 = by_bits[8]
    margin = f"{sig2(100 * Q3_MARGIN)} pp"
    text = (f"weight+activation PTQ minus fp32: int8 {_pp(int8)} ({_words(int8)}, margin "
            f"{margin})" + "".join(f"; {b} bits {_pp(c)} ({_words(c)})" for b, c in by_bits.items()
                             if b < 8))
    if curves is not None and costly:
        text += _qat_text(curves, costly)
    if int8.outcome == "lower" and costly:
        verdict = "supported"
    elif costly:
        verdict = "nuanced"
    elif all(c.outcome == "equivalent" for c in by_bits.values()):
        verdict = "refuted"
    else:
        verdict = "nuanced"
    return Finding("Q-3", verdict, text, "fig-acc-vs-bits")


def _qat_text(curves: pd.DataFrame, widths: list[int]) -> str:
    """'; after 300 QAT steps, QAT minus PTQ: ... ; QAT minus fp32 control: ...'."""
    qat = curves[(curves.method == "QAT") & (curves.scheme == "weight+activation")]
    if qat.empty:
        return ""
    qat = qat[qat.step == qat.step.max()]
    gains, gaps = [], []
    for b in widths:
        rows = qat[qat.bits == b]
        if rows.empty:
            continue
        gains.append(f"{b} bits {_pp(paired_vs(rows, 'test_accuracy', 'ptq_accuracy', Q3_MARGIN))}")
        gaps.append(f"{b} bits "
                    f"{_pp(paired_vs(rows, 'test_accuracy', 'control_accuracy', Q3_MARGIN))}")
    if not gains:
        return ""
    return (f"; after {int(qat.step.max())} QAT steps, QAT minus PTQ: {', '.join(gains)}; "
            f"QAT minus the fp32 control: {', '.join(gaps)}")
