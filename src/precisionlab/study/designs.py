"""The names and small pure helpers that a chapter's experiments write into their tables and its
rules and reports read back: one place, so rules and reports need not import the experiments
that compute.

Nothing here trains or measures, and nothing imports torch: each experiments module imports its
names from here (and still offers them as its own), each rule or report reads them from here.
Where two chapters use one name for different things, the name here carries the chapter's prefix
and the experiments module keeps its own name for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

# -- chapter 02, mixed precision ------------------------------------------------------------------

MIXED = ("16-mixed", "bf16-mixed")
PURE = {"16-true": "16-mixed", "bf16-true": "bf16-mixed"}  # each pure policy and its AMP twin
# The pure-fp16 Adam recipe a practitioner would use beside the naive one: Adam's default eps,
# 1e-8, rounds to 0 in fp16, so the naive recipe divides by ~0; 1e-4 is a normal fp16 number.
# Recipe label -> (precision, Adam eps); its AMP twin is PURE[precision].
WORKING_PURE = {"16-true, eps 1e-4": ("16-true", 1e-4)}
SPACING = {"fp16": 2.0**-11, "bf16": 2.0**-8}  # neighbouring values' distance in [0.5, 1)


def device_independent(results: pd.DataFrame) -> pd.DataFrame:
    """The rows of `result_dtypes` that come out the same under CPU and CUDA autocast: those
    with an fp32 input. Both devices lower the same matmul-class ops here and leave the others
    in fp32; what they do with a 16-bit input differs (CUDA runs softmax, log_softmax,
    layer_norm, exp and sum in fp32, the CPU in the input's dtype), so those rows are not
    printed where a checked cell must match on any device."""
    return results[results.input == "fp32"]


def finals(history: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """One row per run (`by` + seed): its last test accuracy and loss (and `test_examples`, the
    test set's size, where logged: one example is the accuracy's resolution), its last training
    loss, `diverged` (a non-finite training loss at any step: `last()` would skip it) and the mean
    `stalled` share if tracked."""
    keys = [*by, "seed"]
    g = history.groupby(keys, sort=False)  # each run's rows are in step order
    kept = ["test_metric", "test_loss", "loss"] + (["test_examples"] if "test_examples" in
                                                    history else [])
    out = g.tail(1).set_index(keys)[kept]
    out["diverged"] = g.loss.apply(lambda s: bool((~np.isfinite(s)).any()))
    if "stalled" in history:
        out["stalled"] = g.stalled.mean()
    return out.reset_index()


def fine_accuracy(resolution: pd.DataFrame, limit: float) -> pd.Series:
    """Per variant of `resolution_probe`: the share of pairs ordered right among gaps < limit."""
    part = resolution[resolution.gap_high <= limit]
    right = (part.accuracy * part.pairs).groupby(part.variant, sort=False).sum()
    return right / part.groupby("variant", sort=False).pairs.sum()


# -- chapter 03, loss scaling ---------------------------------------------------------------------

SCALING_TASK_NAMES = {"mlp": "MLP on MNIST-1D", "transformer": "TinyTransformer on characters"}
NONE, DYNAMIC = "16-mixed, no scaling", "16-mixed, dynamic"


def configs(log2_scales: Sequence[int]) -> list[tuple[str, str | float]]:
    """(precision, loss_scaler) of the sweep: references, no scaling, each static 2^k, dynamic,
    and 16-true (the model cast to fp16: no fp32 master copy, so no scaler)."""
    return ([("32-true", "none"), ("bf16-mixed", "none"), ("16-mixed", "none")]
            + [("16-mixed", 2.0**k) for k in log2_scales] + [("16-mixed", "dynamic"),
                                                              ("16-true", "none")])


def label(precision: str, scaler: str | float) -> str:
    """The configuration's name in tables and figures, e.g. '16-mixed, 2^16'."""
    if precision != "16-mixed":
        return precision
    if scaler in ("none", "dynamic"):
        return NONE if scaler == "none" else DYNAMIC
    return f"16-mixed, 2^{math.log2(float(scaler)):g}"


# -- chapters 05 and 06, post-training and quantization-aware training ----------------------------

GRANULARITIES = ("per_tensor", "per_channel", "per_group")
MODES = ("weight-only", "weight+activation")
SCHEMES = ("weight+activation", "weight-only")  # chapter 6: what QAT quantizes
QUANT_TASK_NAMES = {"mlp": "MLP on MNIST-1D", "transformer": "TinyTransformer on characters"}


def int_weights(bits_table: pd.DataFrame) -> pd.DataFrame:
    """The integer-weight models of a PTQ sweep that low rank and sparsity are compared with:
    weight-only, per-channel, symmetric (one row per model, seed and width)."""
    t = bits_table
    return t[(t["mode"] == "weight-only") & (t.granularity == "per_channel")
             & (t.weights == "symmetric")].reset_index(drop=True)


# -- chapter 07, size and speed -------------------------------------------------------------------

SIM_INT8 = "int8 simulated (ours)"  # our quantized layers: int8 storage, fp32 compute
TORCHAO_EAGER = "int8 torchao (eager)"


# -- chapter 08, speed and memory -----------------------------------------------------------------

def bytes_over_32(mem: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Per model size and precision other than 32-true: each of `columns` over 32-true's."""
    rows = []
    for (family, size), g in mem.groupby(["family", "size"], sort=False):
        g = g.set_index("precision")
        for p in g.index.drop("32-true"):
            rows.append({"family": family, "size": size, "precision": p,
                         **{col: g.loc[p, col] / g.loc["32-true", col] for col in columns}})
    return pd.DataFrame(rows)


# -- chapter 12, language model training ----------------------------------------------------------

LM_PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true")
LM_BASELINE = "32-true"


# -- chapter 13, pretrained precision -------------------------------------------------------------

INT8 = "int8-dynamic"  # torch.ao dynamic quantization of every nn.Linear (CPU kernels only)


# -- chapter 15, low-precision training -----------------------------------------------------------

RECIPE_BASELINE = "bf16-mixed"


@dataclass(frozen=True)
class Recipe:
    """How one recipe trains: the Trainer's precision, the FP8/MX scaling of the swapped Linears
    (None: no swap), the pure-bf16 update rule (None: the policy's own weights) and Adam's eps
    (None: torch's 1e-8)."""

    precision: str
    float8: str | None = None
    pure16: str | None = None
    family: str = ""
    eps: float | None = None


RECIPE_SPECS: dict[str, Recipe] = {
    "32-true": Recipe("32-true", family="fp32 reference"),
    "bf16-mixed": Recipe("bf16-mixed", family="fp32 master weights (baseline)"),
    "fp8-current": Recipe("bf16-mixed", float8="current", family="fp8"),
    "fp8-delayed": Recipe("bf16-mixed", float8="delayed", family="fp8"),
    "fp8-rowwise": Recipe("bf16-mixed", float8="rowwise", family="fp8"),
    "mxfp8": Recipe("bf16-mixed", float8="mxfp8", family="mx"),
    "mxfp4": Recipe("bf16-mixed", float8="mxfp4", family="mx"),
    "bf16-true": Recipe("bf16-true", family="naive pure 16-bit"),
    "16-true": Recipe("16-true", family="naive pure 16-bit"),
    **{label: Recipe(precision, eps=eps, family="pure fp16, an eps fp16 holds")
       for label, (precision, eps) in WORKING_PURE.items()},
    "bf16-stochastic": Recipe("bf16-mixed", pure16="stochastic", family="pure bf16, no master"),
    "bf16-kahan": Recipe("bf16-mixed", pure16="kahan", family="pure bf16, no master"),
}
RECIPES = tuple(RECIPE_SPECS)
# The scripted range change: the input's scale by step. Steps before JUMP_AT see scale 1, steps
# from JUMP_AT to DROP_AT see JUMP times larger values, the rest scale 1 again. The drop comes
# after more steps than the delayed history holds, so the history forgets the small values.
JUMP = 16.0
