"""Chapter 1's measurements: format constants against references, what the same 16-bit
computation does in fp16 and bf16, rounding error and spacing across magnitudes, the softmax
of raw scores in fp16, and the activation gradients of an fp32-trained MLP.

Every function returns a tidy DataFrame (one row per probe or run); the rules in
`precisionlab.study.rules.formats` read them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from precisionlab import formats as F
from precisionlab import gradstats
from precisionlab import validate as v
from precisionlab.study import tasks
from precisionlab.study.store import stored

SOFTMAX_METHODS = ("naive exp, fp16", "max-subtracted, fp16", "torch.softmax, fp16")
"""The three ways `softmax_probe` computes a softmax in fp16."""

DIGITS_TRAIN = 1347  # images in the smallest digits training split: the largest batch


PARAMETERS = ("formats", "matmul_log2_scales", "matmul_trials", "softmax_lengths", "softmax_trials",
              "gradient_formats", "log2_scales", "seeds", "hidden", "train_steps", "batch_size",
              "lr", "record_every", "threads")
"""The names of chapter 1's parameters that `check_parameters` checks (all but `device`)."""


def check_parameters(*, formats: Sequence[str], matmul_log2_scales: Sequence[int],
                     matmul_trials: int, softmax_lengths: Sequence[int], softmax_trials: int,
                     gradient_formats: Sequence[str], log2_scales: Sequence[int],
                     seeds: Sequence[int], hidden: Sequence[int], train_steps: int,
                     batch_size: int, lr: float, record_every: int, threads: int) -> None:
    """Chapter 1's parameters, checked before any compute: a `validate.ParameterError` names
    the first bad one and what is allowed."""
    v.subset_of("formats", formats, F.FLOAT_FORMATS)
    v.integers("matmul_log2_scales", matmul_log2_scales, -40, 40)
    v.integer("matmul_trials", matmul_trials, 1, 1000)
    v.integers("softmax_lengths", softmax_lengths, 2, 65536)
    v.integer("softmax_trials", softmax_trials, 1, 10_000)
    v.subset_of("gradient_formats", gradient_formats,
                [n for n in F.FLOAT_FORMATS if F.FORMATS[n].bits <= 16])
    v.integers("log2_scales", log2_scales, 0, 64)
    if "fp16" not in gradient_formats or 0 not in log2_scales:
        raise v.ParameterError("gradient_formats, log2_scales: must include 'fp16' and 0 (the "
                               "unscaled fp16 baseline); got "
                               f"{gradient_formats!r}, {log2_scales!r}")
    v.integers("seeds", seeds, 0)
    v.integers("hidden", hidden, 1, 4096, distinct=False)
    v.integer("train_steps", train_steps, 1, 100_000)
    v.integer("batch_size", batch_size, 1, DIGITS_TRAIN)
    v.positive("lr", lr)
    v.integer("record_every", record_every, 1, train_steps)
    v.integer("threads", threads, 1, 256)


@stored
def round_to_check(n: int = 1_000_000, seed: int = 0) -> pd.DataFrame:
    """`formats.round_to` against torch's own cast on `n` random float32 bit patterns (every
    binade, specials included), for each format of <= 16 bits with a torch dtype: one row per
    format with the count compared and whether every result is bit-identical (NaN = NaN)."""
    gen = torch.Generator().manual_seed(seed)
    bits = torch.randint(-2**31, 2**31 - 1, (n,), generator=gen, dtype=torch.int64)
    sweep = bits.to(torch.int32).view(torch.float32)
    rows = []
    for name in F.FLOAT_FORMATS:
        f = F.FORMATS[name]
        if f.torch_dtype is None or f.bits > 16:
            continue
        ours, theirs = F.round_to(sweep, name), sweep.to(f.torch_dtype).float()
        same = ((ours.view(torch.int32) == theirs.view(torch.int32))
                | (ours.isnan() & theirs.isnan()))
        rows.append({"format": name, "patterns": n, "identical": bool(same.all())})
    return pd.DataFrame(rows)


_NUMPY_DTYPES = {"fp64": np.float64, "fp32": np.float32, "fp16": np.float16}
_ML_DTYPES = {"bf16": "bfloat16", "fp8_e4m3fn": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2",
              "fp6_e2m3": "float6_e2m3fn", "fp6_e3m2": "float6_e3m2fn",
              "fp4_e2m1": "float4_e2m1fn"}


def _reference_finfo(name: str) -> tuple[str, object] | None:
    """An independent finfo for `name`: numpy's for IEEE types, ml_dtypes' for bf16, fp8 and MX
    (None for a format neither has, e.g. tf32)."""
    import ml_dtypes

    if name in _NUMPY_DTYPES:
        return "numpy.finfo", np.finfo(_NUMPY_DTYPES[name])
    dtype = getattr(ml_dtypes, _ML_DTYPES.get(name, ""), None)
    return ("ml_dtypes.finfo", ml_dtypes.finfo(dtype)) if dtype is not None else None


def layout_check(names: Sequence[str] = F.FLOAT_FORMATS) -> pd.DataFrame:
    """Each format's constants derived from its bit layout against every reference available:
    torch.finfo, numpy/ml_dtypes finfo and the value of bit pattern 0..01 (smallest subnormal).

    One row per (format, quantity, reference): derived, reference_value, equal. A format with
    no torch dtype (tf32) has no reference and no row."""
    rows = []
    for name in names:
        f = F.get_format(name)
        if not isinstance(f, F.FloatFormat):
            raise ValueError(f"names: {name!r} is not a float format")
        derived = {"bits": f.bits, "max": f.max_finite, "smallest_normal": f.min_normal,
                   "smallest_subnormal": f.min_subnormal, "eps": f.eps}
        refs: list[tuple[str, dict[str, float]]] = []
        if f.torch_dtype is not None:
            fi = torch.finfo(f.torch_dtype)
            refs.append(("torch.finfo", {"bits": fi.bits, "max": fi.max, "eps": fi.eps,
                                         "smallest_normal": fi.smallest_normal}))
            view = {64: torch.int64, 32: torch.int32, 16: torch.int16, 8: torch.uint8}[f.bits]
            one = torch.tensor([1], dtype=view).view(f.torch_dtype).to(torch.float64).item()
            refs.append(("bit pattern 0..01", {"smallest_subnormal": one}))
        other = _reference_finfo(name)
        if other is not None:
            label, fi = other
            refs.append((label, {"bits": fi.bits, "max": float(fi.max), "eps": float(fi.eps),
                                 "smallest_normal": float(fi.smallest_normal),
                                 "smallest_subnormal": float(fi.smallest_subnormal)}))
        for label, values in refs:
            for quantity, value in values.items():
                rows.append({"format": name, "quantity": quantity, "reference": label,
                             "derived": float(derived[quantity]), "reference_value": float(value),
                             "equal": float(derived[quantity]) == float(value)})
    return pd.DataFrame(rows)


def matmul_probe(log2_scales: Sequence[int], formats: Sequence[str] = ("fp16", "bf16"),
                 trials: int = 5, inner: int = 256, seed: int = 0) -> pd.DataFrame:
    """The same matrix product (32 x `inner` times `inner` x 32, entries N(0, 1) * 2**k) computed
    in each 16-bit dtype, against fp64: is it finite, and its relative (Frobenius) error.

    One row per (format, log2_scale, trial). Small k underflows fp16, large k overflows it;
    bf16 keeps fp32's range with 3 fewer mantissa bits."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for k in log2_scales:
        for trial in range(trials):
            a = torch.randn(32, inner, generator=gen, dtype=torch.float64) * 2.0**k
            b = torch.randn(inner, 32, generator=gen, dtype=torch.float64) * 2.0**k
            ref = a @ b
            for name in formats:
                dtype = F.get_format(name).torch_dtype
                out = (a.to(dtype) @ b.to(dtype)).double()
                finite = bool(torch.isfinite(out).all())
                err = float((out - ref).norm() / ref.norm()) if finite else math.nan
                rows.append({"format": name, "log2_scale": int(k), "trial": trial,
                             "finite": finite, "rel_error": err})
    return pd.DataFrame(rows)


def spacing_table(formats: Sequence[str], low: int = -45, high: int = 40,
                  points: int = 2000) -> pd.DataFrame:
    """Gap to the next representable value at log-spaced magnitudes 2**low..2**high, per format
    (only where the format has values: from its smallest subnormal to its largest finite)."""
    mags = torch.logspace(low, high, points, base=2.0, dtype=torch.float64)
    parts = []
    for name in formats:
        gap = F.spacing(mags.float(), name)
        ok = torch.isfinite(gap) & (mags >= F.get_format(name).min_subnormal)
        parts.append(pd.DataFrame({"format": name, "magnitude": mags[ok].numpy(),
                                   "spacing": gap[ok].numpy()}))
    return pd.concat(parts, ignore_index=True)


def relative_error_table(formats: Sequence[str], n: int = 400_000, low: int = -40,
                         high: int = 20, seed: int = 1) -> pd.DataFrame:
    """Largest relative rounding error per binade: `n` float64 values log-uniform over
    2**low..2**high, rounded to each format (fp32 by torch's cast; narrower formats by
    `round_to` of that fp32 value) and compared with the float64 value."""
    gen = torch.Generator().manual_seed(seed)
    log2x = torch.empty(n, dtype=torch.float64).uniform_(low, high, generator=gen)
    x = torch.exp2(log2x)
    binade = np.floor(log2x.numpy()).astype(int)
    parts = []
    for name in formats:
        r = F.round_to(x.float(), name).double()
        rel = ((r - x).abs() / x).numpy()
        worst = pd.Series(rel).groupby(binade).max()
        parts.append(pd.DataFrame({"format": name, "log2_magnitude": worst.index + 0.5,
                                   "max_relative_error": worst.to_numpy()}))
    return pd.concat(parts, ignore_index=True)


def softmax_probe(lengths: Sequence[int] = (8, 64, 512), peaks: Sequence[float] | None = None,
                  trials: int = 20, spread: float = 2.0, seed: int = 2) -> pd.DataFrame:
    """Softmax of a row of `n` scores (N(0, spread**2), shifted so the largest is `peak`) in
    fp16 three ways (`SOFTMAX_METHODS`), against the fp64 softmax of the same scores.

    One row per (n, peak_score, trial, method): finite (no inf/NaN), max_abs_error (NaN when
    not finite)."""
    peaks = np.arange(1.0, 20.5, 0.5) if peaks is None else peaks
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for n in lengths:
        for peak in peaks:
            s = torch.randn(trials, n, generator=gen, dtype=torch.float64) * spread
            s = s - s.amax(1, keepdim=True) + float(peak)
            ref = torch.softmax(s, 1)
            h = s.half()
            e = torch.exp(h)
            shifted = torch.exp(h - h.amax(1, keepdim=True))
            outs = [e / e.sum(1, keepdim=True), shifted / shifted.sum(1, keepdim=True),
                    torch.softmax(h, 1)]
            for method, out in zip(SOFTMAX_METHODS, outs, strict=True):
                finite = torch.isfinite(out).all(1)
                err = (out.double() - ref).abs().amax(1).where(finite, math.nan)
                rows += [{"n": int(n), "peak_score": float(peak), "trial": t, "method": method,
                          "finite": bool(finite[t]), "max_abs_error": float(err[t])}
                         for t in range(trials)]
    return pd.DataFrame(rows)


def gradient_runs(seeds: Sequence[int], task: str = "digits", hidden: Sequence[int] = (256, 256),
                  steps: int = 600, batch_size: int = 64, lr: float = 1e-3,
                  record_every: int = 20, device: str = "cpu"
                  ) -> tuple[pd.DataFrame, dict[int, torch.Tensor]]:
    """Train one fp32 model of `task` per seed (its own split and weights, `tasks.make`) and
    record its activation gradients: a table of runs and the gradients by seed (on the CPU)."""
    rows, samples = [], {}
    for seed in seeds:
        split, model = tasks.make(task, seed, hidden=list(hidden))
        s = gradstats.activation_gradients(model.to(device), split.to(device), steps=steps,
                                           batch_size=batch_size, lr=lr, seed=seed,
                                           record_every=record_every)
        samples[seed] = s.values.cpu()
        rows.append({"seed": seed, "task": task, "gradients": s.values.numel(),
                     "exact_zero": float((s.values == 0).float().mean()),
                     "final_train_loss": s.final_train_loss, "test_accuracy": s.test_accuracy})
    return pd.DataFrame(rows), samples


@stored
def underflow(samples: dict[int, torch.Tensor], formats: Sequence[str],
              log2_scales: Sequence[int]) -> pd.DataFrame:
    """`gradstats.underflow_table` for each seed's gradients, with a seed column."""
    return pd.concat([gradstats.underflow_table(v, formats, log2_scales).assign(seed=seed)
                      for seed, v in samples.items()], ignore_index=True)


def underflow_summary(under: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of an `underflow` table, per (format, log2_scale):
    columns (share, 'mean'|'std') for share in flushed, subnormal, normal, overflow."""
    shares = ["flushed", "subnormal", "normal", "overflow"]
    return under.groupby(["format", "log2_scale"])[shares].agg(["mean", "std"])


def gradient_histogram(samples: dict[int, torch.Tensor], top: int = 18) -> pd.DataFrame:
    """Share (%) of the nonzero gradients (all seeds pooled) per binade of log2 |g|, up to
    2**top: one row per bin (log2_bin_left, percent)."""
    pooled = torch.cat(list(samples.values()))
    lg = torch.log2(pooled[pooled != 0].abs().double()).numpy()
    bins = np.arange(math.floor(lg.min()) - 2, top)
    percent = np.histogram(lg, bins=bins, weights=np.full(lg.shape, 100.0 / lg.size))[0]
    return pd.DataFrame({"log2_bin_left": bins[:-1], "percent": percent})
