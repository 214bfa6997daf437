"""The quantization chapters' measurements (05 post-training, 06 quantization-aware training),
each returning a tidy DataFrame with one row per run.

Every seed draws its own data split and initial weights through `precisionlab.study.tasks`, trains
one fp32 model, and every quantized, factorized or fine-tuned variant of it is paired with that
fp32 model by seed (columns `fp32_accuracy`, `fp32_loss`).

    trained, fp32 = train_fp32("mlp", seeds=[0, 1, 2], steps=500, batch_size=128, lr=3e-3)
    bits = ptq_sweep(trained, fp32, bits=[8, 4, 2], calibrator="mse", n_calib=256)

Besides the measurements, each chapter's parameter check lives here; its tables, figures and
glued texts are in `precisionlab.study.reports.quantization`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence

import pandas as pd
from torch import nn

from precisionlab.amp import Trainer, trace_dtypes
from precisionlab.data import Split
from precisionlab.quant import QuantConfig, QuantSpec, payload_bytes, ptq
from precisionlab.quant.qat import QATTrainer, finetune_curve, post_training_quantize, recovered
from precisionlab.study import tasks
from precisionlab.study.designs import GRANULARITIES, MODES, SCHEMES, int_weights
from precisionlab.study.designs import QUANT_TASK_NAMES as TASK_NAMES

MODEL_TASKS = {"mlp": "mnist1d", "transformer": "chars"}  # chapter 5's model names -> tasks

Trained = dict[tuple[str, int], tuple[nn.Module, Split]]  # (model, seed) -> (fp32 model, split)


def act_spec(name: str, bits: int) -> QuantSpec:
    """Per-tensor asymmetric activations at `bits`, calibrated by `name` ('pNN': NN-th
    percentile, or minmax | mse | entropy)."""
    if name.startswith("p"):
        return QuantSpec(bits=bits, symmetric=False, observer="percentile",
                         percentile=float(name[1:]))
    return QuantSpec(bits=bits, symmetric=False, observer=name)


def weight_spec(bits: int, granularity: str, symmetric: bool = True,
                group_size: int = 32) -> QuantSpec:
    """Weights at `bits`, min-max range, per tensor, per output channel or per group."""
    return QuantSpec(bits=bits, symmetric=symmetric, granularity=granularity,
                     group_size=group_size if granularity == "per_group" else None)


def train_fp32(name: str, seeds: Iterable[int], steps: int, batch_size: int, lr: float,
               device: str = "cpu", **task_args: object) -> tuple[Trained, pd.DataFrame]:
    """Train one fp32 model of `name` (a key of MODEL_TASKS or a task name) per seed.

    `task_args` go to `tasks.make` (samples, hidden, context, n_test, d_model, n_layers...).
    Returns the trained models with their splits, and one row per seed: model, seed, test_loss,
    test_accuracy, test_examples (the test set's size: one example is the accuracy's
    resolution), weights (Linear weights), fp32_bytes, float_zero_fraction."""
    task = MODEL_TASKS.get(name, name)
    trained: Trained = {}
    rows = []
    for seed in seeds:
        split, model = tasks.make(task, seed, **task_args)
        split, model = split.to(device), model.to(device)
        Trainer(steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device,
                eval_every=None).fit(model, split)
        model.eval()
        loss, acc = ptq.evaluate(model, split)
        trained[name, seed] = (model, split)
        rows.append({"model": name, "seed": seed, "test_loss": loss, "test_accuracy": acc,
                     "test_examples": split.y_test.numel(),
                     "weights": sum(m.weight.numel() for m in model.modules()
                                    if isinstance(m, nn.Linear)),
                     "fp32_bytes": payload_bytes(model),
                     "float_zero_fraction": ptq.float_zero_fraction(model)})
    return trained, pd.DataFrame(rows)


def with_fp32(table: pd.DataFrame, fp32: pd.DataFrame) -> pd.DataFrame:
    """`table` with its seed's fp32 accuracy and loss (and test set size, where logged) beside
    each row, and what was lost: drop_pp (fp32 minus this accuracy, percentage points) and
    loss_increase."""
    keep = ["model", "seed", "test_accuracy", "test_loss"] + (
        ["test_examples"] if "test_examples" in fp32 and "test_examples" not in table else [])
    ref = fp32[keep].rename(
        columns={"test_accuracy": "fp32_accuracy", "test_loss": "fp32_loss"})
    out = table.merge(ref, on=["model", "seed"], how="left", validate="many_to_one")
    out["drop_pp"] = 100 * (out.fp32_accuracy - out.test_accuracy)
    out["loss_increase"] = out.test_loss - out.fp32_loss
    return out


def ptq_sweep(trained: Trained, fp32: pd.DataFrame, bits: Sequence[int], calibrator: str,
              n_calib: dict[str, int] | int, group_size: int = 32,
              granularities: Sequence[str] = GRANULARITIES) -> pd.DataFrame:
    """Every bit width x weight granularity x grid (symmetric, asymmetric) x mode (weights only,
    weights and `bits`-bit activations calibrated by `calibrator` on the first `n_calib`
    training inputs) of every trained model: one row per seed and configuration."""
    rows = []
    for (name, seed), (model, split) in trained.items():
        n = n_calib[name] if isinstance(n_calib, dict) else n_calib
        collected = ptq.collect_inputs(model, split.x_train[:n])
        for b in bits:
            act = act_spec(calibrator, b)
            ranges = ptq.ranges_for(collected, act)
            for granularity in granularities:
                for symmetric in (True, False):
                    w = weight_spec(b, granularity, symmetric, group_size)
                    for mode in MODES:
                        a = act if mode == "weight+activation" else None
                        row = ptq.evaluate_ptq(model, split, QuantConfig(weight=w, activation=a),
                                               ranges if a is not None else None)
                        rows.append({"model": name, "seed": seed, "bits": b, "mode": mode,
                                     "granularity": granularity,
                                     "weights": "symmetric" if symmetric else "asymmetric",
                                     "activations": "float32" if a is None else a.describe(),
                                     **row})
        del collected
    return with_fp32(pd.DataFrame(rows), fp32)


def calibrator_sweep(trained: Trained, fp32: pd.DataFrame, calibrators: Sequence[str],
                     act_bits: Sequence[int], n_calib: dict[str, int],
                     sizes: dict[str, Sequence[int]] | None = None) -> pd.DataFrame:
    """int8 per-channel symmetric weights with activations calibrated by each calibrator, at
    each of `act_bits` on the default calibration set (`n_calib[model]` inputs), and at the
    narrowest of `act_bits` on each extra size in `sizes[model]`. One row per seed and run,
    with the share of calibration activations clipped."""
    w8 = weight_spec(8, "per_channel", True)
    low = min(act_bits)
    rows = []
    for (name, seed), (model, split) in trained.items():
        default = n_calib[name]
        for n in sorted({*(sizes or {}).get(name, []), default}):
            collected = ptq.collect_inputs(model, split.x_train[:n])
            for b in act_bits:
                if n != default and b != low:
                    continue  # the size sweep runs at the lowest width, where calibrators differ
                for cal in calibrators:
                    act = act_spec(cal, b)
                    ranges = ptq.ranges_for(collected, act)
                    row = ptq.evaluate_ptq(model, split, QuantConfig(weight=w8, activation=act),
                                           ranges)
                    rows.append({"model": name, "seed": seed, "calibrator": cal, "act_bits": b,
                                 "calib_examples": n, "default_size": n == default,
                                 "clipped": ptq.clipped_fraction(collected, ranges), **row})
            del collected
    return with_fp32(pd.DataFrame(rows), fp32)


def low_rank_sweep(trained: Trained, fp32: pd.DataFrame, budget_bits: Sequence[int]
                   ) -> pd.DataFrame:
    """Factorize every Linear of each trained model at the bytes of a `budget_bits`-bit weight
    (`quant.ptq.evaluate_low_rank`) and score it. Besides accuracy and bytes, each row records
    the number formats actually stored: `weight_dtype` of the fp32 layers, `factor_dtypes` of
    the stored factors, and `factor_bits`, the widest of them."""
    rows = [{"model": name, "seed": seed, "budget_bits": b,
             **ptq.evaluate_low_rank(model, split, b)}
            for (name, seed), (model, split) in trained.items() for b in budget_bits]
    return with_fp32(pd.DataFrame(rows), fp32)


def zero_table(bits_table: pd.DataFrame) -> pd.DataFrame:
    """Share of exactly-zero integer weights per model, seed and width (`int_weights`)."""
    return int_weights(bits_table)[["model", "seed", "bits", "zero_fraction", "weight_bytes"]]


def amp_step_trace(model: nn.Module, split: Split, batch_size: int, lr: float, seed: int,
                   device: str = "cpu") -> pd.DataFrame:
    """The dtypes of every aten op of one bf16-mixed training step (forward, backward, Adam) of
    a copy of `model`: `amp.trace_dtypes`' table (op, phase, in_dtypes, out_dtype)."""
    step_model = copy.deepcopy(model)
    step = Trainer(precision="bf16-mixed", steps=1, batch_size=batch_size, lr=lr, seed=seed,
                   device=device, eval_every=None, progress=False)
    return trace_dtypes(lambda: step.fit(step_model, split))


def dtype_uses(trace: pd.DataFrame) -> pd.DataFrame:
    """For each dtype in a trace, how many ops take or return it."""
    dtypes = sorted({d for col in ("in_dtypes", "out_dtype") for cell in trace[col]
                     for d in cell.split(",") if d})
    uses = [int((trace.in_dtypes.str.split(",").map(lambda ds, d=d: d in ds)
                 | (trace.out_dtype == d)).sum()) for d in dtypes]
    return pd.DataFrame({"ops using it": uses}, index=pd.Index(dtypes, name="dtype"))


# --- chapter 6: QAT against PTQ and an fp32 control -------------------------------------------

def qat_config(bits: int, scheme: str, act_observer: str = "mse") -> QuantConfig:
    """Chapter 6's scheme: per-channel symmetric min-max weights; with 'weight+activation' also
    per-tensor asymmetric inputs calibrated by `act_observer`."""
    weight = QuantSpec(bits=bits, symmetric=True, granularity="per_channel", observer="minmax")
    act = (QuantSpec(bits=bits, symmetric=False, observer=act_observer)
           if scheme == "weight+activation" else None)
    return QuantConfig(weight=weight, activation=act)


def ptq_widths(trained: Trained, fp32: pd.DataFrame, bits: Sequence[int], n_calibration: int,
               act_observer: str = "mse") -> pd.DataFrame:
    """PTQ of every trained model at each width and scheme (calibrated on the first
    `n_calibration` training inputs): one row per seed, scheme and width, with stored_bytes."""
    rows = []
    for (name, seed), (model, split) in trained.items():
        for b in bits:
            for scheme in SCHEMES:
                q = post_training_quantize(model, qat_config(b, scheme, act_observer),
                                           split.x_train[:n_calibration])
                loss, acc = ptq.evaluate(q, split)
                rows.append({"model": name, "seed": seed, "scheme": scheme, "bits": b,
                             "test_loss": loss, "test_accuracy": acc,
                             "stored_bytes": payload_bytes(q)})
    return with_fp32(pd.DataFrame(rows), fp32)


def qat_runs(trained: Trained, fp32: pd.DataFrame, ptq_table: pd.DataFrame,
             runs: Sequence[tuple[str, str, int, float | None]],
             finetuner: Callable[[int], QATTrainer], n_calibration: int,
             act_observer: str = "mse") -> tuple[pd.DataFrame, list[bool]]:
    """Fine-tune each trained model once per run (method, scheme, bits, momentum): method
    'fp32 control' fine-tunes the float model, any other runs QAT from the calibrated PTQ
    model. `finetuner(seed)` gives the trainer (the same batches for every run of a seed).

    Returns the curves (one row per seed, run and evaluation step, with the PTQ, fp32 and
    control accuracy of the same seed and the shares recovered) and the flags of the
    integer-model == fake-quant-model check of every QAT evaluation."""
    rows, equal = [], []
    for (name, seed), (model, split) in trained.items():
        for method, scheme, b, momentum in runs:
            trainer = finetuner(seed)
            config = None if method == "fp32 control" else qat_config(b, scheme, act_observer)
            tuned, curve = finetune_curve(model, split, trainer, config,
                                          split.x_train[:n_calibration], momentum=momentum)
            equal += trainer.outputs_equal
            rows.append(curve.assign(model=name, seed=seed, method=method, scheme=scheme, bits=b,
                                     stored_bytes=payload_bytes(tuned)))
    curves = pd.concat(rows, ignore_index=True)
    ctrl = (curves[curves.method == "fp32 control"][["model", "seed", "step", "test_accuracy"]]
            .rename(columns={"test_accuracy": "control_accuracy"}))
    ptq_acc = ptq_table[["model", "seed", "scheme", "bits", "test_accuracy"]].rename(
        columns={"test_accuracy": "ptq_accuracy"})
    curves = (curves.merge(ptq_acc, on=["model", "seed", "scheme", "bits"], how="left")
              .merge(ctrl, on=["model", "seed", "step"], how="left"))
    curves = with_fp32(curves, fp32)
    curves["recovered_vs_fp32"] = [recovered(a, p, f) for a, p, f in zip(
        curves.test_accuracy, curves.ptq_accuracy, curves.fp32_accuracy, strict=True)]
    curves["recovered_vs_control"] = [recovered(a, p, c) for a, p, c in zip(
        curves.test_accuracy, curves.ptq_accuracy, curves.control_accuracy, strict=True)]
    return curves, equal


# --- chapter 5: parameters -----------------------------------------------------------------------

CALIBRATORS = ("minmax", "p99", "p99.9", "p99.99", "p99.999", "mse", "entropy")
N_TRAIN_CHARS = 2048  # training windows `tasks.load("chars")` draws by default


def check_ptq_parameters(p: dict[str, object]) -> None:
    """Validate chapter 5's parameters (`p`: name -> value) before any compute: one clear
    error naming the parameter and what is allowed."""
    from precisionlab import validate as v

    v.integers("seeds", p["seeds"], 0, 2**32 - 1)
    models = v.subset_of("models", p["models"], list(TASK_NAMES))
    v.integer("mlp_samples", p["mlp_samples"], 100, 1_000_000)
    if p["mlp_samples"] % 10:
        raise v.ParameterError(f"mlp_samples: must be a multiple of 10 (equal classes); "
                               f"got {p['mlp_samples']}")
    n_train = {"mlp": p["mlp_samples"] * 8 // 10, "transformer": N_TRAIN_CHARS}
    v.integers("mlp_hidden", p["mlp_hidden"], 1, 4096, distinct=False)
    v.integer("mlp_steps", p["mlp_steps"], 1, 1_000_000)
    v.integer("mlp_batch", p["mlp_batch"], 1, n_train["mlp"])
    v.integer("tf_context", p["tf_context"], 1, 1000)
    v.integer("tf_d_model", p["tf_d_model"], 4, 4096)
    if p["tf_d_model"] % 4:
        raise v.ParameterError(f"tf_d_model: must be a multiple of 4 (4 attention heads); "
                               f"got {p['tf_d_model']}")
    v.integer("tf_layers", p["tf_layers"], 1, 64)
    v.integer("tf_steps", p["tf_steps"], 1, 1_000_000)
    v.integer("tf_batch", p["tf_batch"], 1, N_TRAIN_CHARS)
    v.integer("tf_test", p["tf_test"], 1, 100_000)
    v.positive("lr", p["lr"])
    bits = v.integers("bits", p["bits"], 2, 8)
    if 8 not in bits:
        raise v.ParameterError(f"bits: must include 8 (claim Q-1 is about int8); got {bits!r}")
    v.integer("group_size", p["group_size"], 1, 65536)
    v.one_of("sweep_calibrator", p["sweep_calibrator"], CALIBRATORS)
    v.subset_of("calibrators", p["calibrators"], CALIBRATORS)
    v.integer("low_act_bits", p["low_act_bits"], 2, 7)
    v.integer("mlp_calib", p["mlp_calib"], 1, n_train["mlp"])
    v.integer("tf_calib", p["tf_calib"], 1, n_train["transformer"])
    sizes = v.integers("calib_sizes", p["calib_sizes"], 1, 1_000_000)
    size_models = p["calib_size_models"]
    if not isinstance(size_models, list) or any(m not in models for m in size_models):
        raise v.ParameterError(f"calib_size_models: must be a list drawn from models {models!r} "
                               f"(or []); got {size_models!r}")
    for m in size_models:
        if max(sizes) > n_train[m]:
            raise v.ParameterError(f"calib_sizes: {max(sizes)} exceeds the {n_train[m]} "
                                   f"training examples of {m}")
    lowrank = v.integers("lowrank_bits", p["lowrank_bits"], 2, 8)
    if any(b not in bits for b in lowrank):
        raise v.ParameterError(f"lowrank_bits: each must be in bits {bits!r} (compared with "
                               f"those quantized models); got {lowrank!r}")
    v.integer("threads", p["threads"], 1, 256)
    for b in sorted(set(bits) | {p["low_act_bits"]}):  # every spec of the chapter, checked now
        for name in [*p["calibrators"], p["sweep_calibrator"]]:
            act_spec(name, b)
        for g in GRANULARITIES:
            weight_spec(b, g, True, p["group_size"])


# --- chapter 6: parameters -----------------------------------------------------------------------

QAT_OBSERVERS = ("minmax", "percentile", "mse", "entropy")


def check_qat_parameters(p: dict[str, object]) -> None:
    """Validate chapter 6's parameters (`p`: name -> value) before any compute."""
    from precisionlab import validate as v

    def int_list(name: str, low: int, high: int, allow_empty: bool = False) -> list[int]:
        values = p[name]
        if allow_empty and isinstance(values, list) and not values:
            return []
        return v.integers(name, values, low, high)

    int_list("seeds", 0, 2**32 - 1)
    n = v.integer("n_samples", p["n_samples"], 1000, 1_000_000)
    if n % 10:
        raise v.ParameterError(f"n_samples: must be a multiple of 10 (equal classes); got {n}")
    v.integers("hidden", p["hidden"], 1, 4096, distinct=False)
    v.integer("base_steps", p["base_steps"], 1, 1_000_000)
    v.positive("base_lr", p["base_lr"])
    v.integer("batch_size", p["batch_size"], 1, int(0.8 * n))  # at most the training split
    bits = int_list("bits", 2, 8)
    if 8 not in bits:
        raise v.ParameterError(f"bits: must include 8 (claim Q-3 is about INT8); got {bits!r}")
    for name, allow_empty in (("qat_bits", False), ("weight_only_qat_bits", True),
                              ("moving_bits", True)):
        subset = int_list(name, 2, 8, allow_empty)
        if set(subset) - set(bits):
            raise v.ParameterError(f"{name}: every width must also be in bits {bits!r} (its PTQ "
                                   f"reference); got {subset!r}")
    checkpoints = int_list("checkpoints", 1, 1_000_000)
    if sorted(checkpoints) != list(checkpoints):
        raise v.ParameterError(f"checkpoints: list them in increasing order; got {checkpoints!r}")
    v.positive("finetune_lr", p["finetune_lr"])
    v.one_of("act_observer", p["act_observer"], QAT_OBSERVERS)
    v.integer("n_calibration", p["n_calibration"], 1, int(0.8 * n))
    for name in ("act_momentum", "moving_momentum"):
        value = p[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise v.ParameterError(f"{name}: must be a number from 0 to 1; got {value!r}")
    v.integer("threads", p["threads"], 1, 256)
    for b in bits:  # every configuration, checked by the library now
        for scheme in SCHEMES:
            qat_config(b, scheme, p["act_observer"])


def qat_run_list(qat_bits: Sequence[int], weight_only_bits: Sequence[int],
                 moving_bits: Sequence[int], act_momentum: float, moving_momentum: float
                 ) -> list[tuple[str, str, int, float | None]]:
    """Chapter 6's runs per seed: (method, scheme, bits, input-range momentum)."""
    return ([("fp32 control", "none", 32, None)]
            + [("QAT", "weight+activation", b, act_momentum) for b in qat_bits]
            + [("QAT", "weight-only", b, None) for b in weight_only_bits]
            + [("QAT, moving ranges", "weight+activation", b, moving_momentum)
               for b in moving_bits])
