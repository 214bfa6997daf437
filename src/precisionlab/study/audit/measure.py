"""The audit's measurements on a loaded `Subject`, each with the library's own tools.

`run` trains every precision x seed with the Trainer (parity by seed against 32-true), measures
gradient cosines to fp32, per-module ranges against fp16/bf16, underflow against loss scales,
post-training quantization of each seed's fp32 model, and speed and memory per precision.
Every run starts from the same initial weights (`Subject.make_model`); the seed sets the batch
order and dropout, so runs are paired by seed. A "precision" is a run label (`spec.recipe`): a
precision trained with the audit's Adam eps, or a WORKING_PURE recipe such as
"16-true, eps 1e-4" (16-true with that eps).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch
from torch import nn

from precisionlab import bench, gradstats, memory
from precisionlab.amp.emulation import get_matmul16, matmul16, set_matmul16
from precisionlab.amp.policy import get_policy
from precisionlab.amp.scaler import DynamicLossScaler
from precisionlab.amp.trainer import (
    Trainer,
    batch_indices,
    evaluate,
    loss_and_metric,
    make_optimizer,
)
from precisionlab.data import Split
from precisionlab.formats import FORMATS, classify
from precisionlab.provenance import hardware_line, resolve_device
from precisionlab.quant.affine import QuantSpec
from precisionlab.quant.modules import QuantConfig
from precisionlab.quant.ptq import collect_inputs, quantize_ptq, ranges_for
from precisionlab.study import stats
from precisionlab.study.audit.spec import Subject, objective, parse_ptq, recipe

__all__ = ["LOW_FORMATS", "Result", "module_gradients", "cosine", "cosine_table", "eval_split",
           "fp16_forward_inf", "higher_is_better", "histogram_table",
           "metric_of", "module_table", "parity_table", "ptq_config", "ptq_table",
           "resolution", "round_ratio", "run", "speed_table", "train_runs", "underflow_table"]

LOW_FORMATS = ("fp16", "bf16")  # the formats AMP trains in (`formats.FORMATS` names)
FP16_MAX = FORMATS["fp16"].max_finite  # 65504


@dataclass
class Result:
    """Everything an audit measured; the tables are pandas DataFrames (see `run`)."""

    device: str
    hardware: str
    params: dict
    task: str = "classification"
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)
    parity: pd.DataFrame = field(default_factory=pd.DataFrame)
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    cosine: pd.DataFrame = field(default_factory=pd.DataFrame)
    modules: pd.DataFrame = field(default_factory=pd.DataFrame)
    histograms: pd.DataFrame = field(default_factory=pd.DataFrame)
    underflow: pd.DataFrame = field(default_factory=pd.DataFrame)
    ptq: pd.DataFrame = field(default_factory=pd.DataFrame)
    speed: pd.DataFrame = field(default_factory=pd.DataFrame)
    memory: pd.DataFrame = field(default_factory=pd.DataFrame)
    fp16_forward_inf: str | None = None  # first module whose output is inf in a 16-true forward
    matmul16: str = "native"  # how 16-bit CPU matmuls ran in training ('emulated' or 'native')


def higher_is_better(task: str) -> bool:
    """Accuracy (classification) rises with quality; MSE and perplexity fall."""
    return task == "classification"


def metric_of(task: str, loss: float, metric: float) -> float:
    """The audit's metric from the Trainer's (loss, metric): perplexity = exp(loss) for a
    language model, else the Trainer's metric (accuracy or MSE)."""
    if task == "language-model":
        return math.exp(loss) if loss < 700 else math.inf
    return metric


def eval_split(split: Split, eval_examples: int) -> Split:
    """The split with its test part cut to the first `eval_examples` examples."""
    return replace(split, x_test=split.x_test[:eval_examples],
                   y_test=split.y_test[:eval_examples])


def _evaluate(model: nn.Module, data: Split, precision: str, task: str,
              chunk: int) -> tuple[float, float]:
    """(test loss, audit metric) at a precision, in chunks of `chunk` examples."""
    policy = get_policy(precision)
    with matmul16(policy.compute_dtype, data.x_test.device.type):
        loss, metric = evaluate(model, data, policy, chunk, objective(task))
    return loss, metric_of(task, loss, metric)


def train_runs(subject: Subject, params: dict, device: str, progress: bool = False
               ) -> tuple[pd.DataFrame, pd.DataFrame, dict[int, nn.Module]]:
    """Train a fresh model per precision label x seed (torch.manual_seed(seed), then the
    Trainer with the label's precision and Adam eps); evaluate on at most `eval_examples` test
    examples. Returns (runs, history, the 32-true models by seed). A diverged run stays in the
    table with finite=False."""
    data = eval_split(subject.split, params["eval_examples"]).to(device)
    rows, hist, fp32_models = [], [], {}
    for label in params["precisions"]:
        precision, eps = recipe(label, params["eps"])
        for seed in params["seeds"]:
            torch.manual_seed(seed)
            model = subject.make_model()
            trainer = Trainer(precision=precision, optimizer=params["optimizer"],
                              lr=params["lr"], steps=params["steps"],
                              batch_size=params["batch_size"], eval_every=None, device=device,
                              seed=seed, threads=params["threads"], progress=progress,
                              objective=objective(subject.task), eps=eps)
            h = trainer.fit(model, data)
            loss, metric = _evaluate(trainer.model, data, precision, subject.task,
                                     params["batch_size"])
            rows.append({"precision": label, "seed": seed, "test_loss": loss,
                         "metric": metric, "finite": bool(math.isfinite(loss)),
                         "skipped_steps": int(h["skipped"].sum()),
                         "seconds": float(h["seconds"].iloc[-1])})
            hist.append(h[["step", "loss", "loss_scale", "skipped"]].assign(
                precision=label, seed=seed))
            if label == "32-true":
                fp32_models[seed] = trainer.model
    history = pd.concat(hist, ignore_index=True)[["precision", "seed", "step", "loss",
                                                  "loss_scale", "skipped"]]
    return pd.DataFrame(rows), history, fp32_models


def resolution(task: str, split: Split, eval_examples: int) -> float:
    """The metric's smallest step: one evaluated test example's share of accuracy for
    classification; 0 (continuous) for MSE and perplexity."""
    if task != "classification":
        return 0.0
    return 1.0 / min(len(split.x_test), eval_examples)


def parity_table(runs: pd.DataFrame, task: str, margin: float,
                 resolution: float = 0.0) -> pd.DataFrame:
    """Per precision, paired-by-seed differences to 32-true of the test loss and the metric
    (mean, 95 % interval, n) and an outcome: 'diverged' (a run not finite), else the metric's
    comparison with an equivalence margin (absolute accuracy for classification, `margin`
    times the 32-true mean otherwise): 'equivalent', 'better', 'worse', 'inconclusive' or
    'underpowered' (inside the margin, but the seeds could not have detected an effect of the
    margin's size; `detectable` is the smallest they could, at 80 % power, never below the
    metric's `resolution`: one test example's share of accuracy, 0 when continuous)."""
    ref = runs[runs["precision"] == "32-true"]
    ref_metric = float(ref["metric"].mean())
    m = margin if higher_is_better(task) else margin * abs(ref_metric)
    m = m if m > 0 else margin
    rows = []
    for precision in runs["precision"].unique():
        if precision == "32-true":
            continue
        part = runs[runs["precision"] == precision]
        loss = stats.paired(runs, "test_loss", "precision", precision, "32-true")
        comp = stats.compare(runs, "metric", "precision", precision, "32-true", m,
                             resolution=resolution)
        metric = comp.interval
        if not part["finite"].all():
            outcome = "diverged"
        elif comp.outcome in ("higher", "lower"):
            better = (comp.outcome == "higher") == higher_is_better(task)
            outcome = "better" if better else "worse"
        else:
            outcome = comp.outcome
        rows.append({"precision": precision, "metric_mean": float(part["metric"].mean()),
                     "ref_metric_mean": ref_metric,
                     "loss_diff": loss.mean, "loss_low": loss.low, "loss_high": loss.high,
                     "metric_diff": metric.mean, "metric_low": metric.low,
                     "metric_high": metric.high, "n": metric.n, "margin": m,
                     "detectable": comp.detectable,
                     "finite_runs": int(part["finite"].sum()), "outcome": outcome})
    return pd.DataFrame(rows, columns=[
        "precision", "metric_mean", "ref_metric_mean", "loss_diff", "loss_low", "loss_high",
        "metric_diff", "metric_low", "metric_high", "n", "margin", "detectable", "finite_runs",
        "outcome"])


def _first_batch(split: Split, batch_size: int, seed: int, device: str
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    idx = next(batch_indices(len(split.x_train), batch_size, seed, device))
    return split.x_train[idx], split.y_train[idx]


def _gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str, task: str,
              seed: int) -> list[torch.Tensor]:
    """The fp32 parameter gradients of one batch at a precision (16-mixed: the loss scaled by
    the dynamic scaler's initial scale, the gradient unscaled in fp32); zeros where a parameter
    got none."""
    policy = get_policy(precision)
    device = x.device.type
    model = policy.prepare_model(model.to(x.device))
    model.train()
    scale = DynamicLossScaler().get_scale() if policy.needs_loss_scaling else 1.0
    torch.manual_seed(seed)  # the same dropout masks for every precision
    with matmul16(policy.compute_dtype, device):
        with policy.autocast(device):
            loss, _ = loss_and_metric(model(policy.prepare_input(x)), y, objective(task))
        (loss * scale).backward()
    return [p.grad.float() / scale if p.grad is not None
            else torch.zeros_like(p, dtype=torch.float32) for p in model.parameters()]


def cosine(grads: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    """Cosine between two gradients given parameter by parameter, accumulated in float64 one
    parameter at a time (no flat copy of a large model's gradient); NaN if either is not
    finite or is zero."""
    dot = g2 = r2 = 0.0
    for g, r in zip(grads, ref, strict=True):
        if not bool(torch.isfinite(g).all()):
            return math.nan
        g, r = g.double(), r.double()
        dot += float((g * r).sum())
        g2 += float((g * g).sum())
        r2 += float((r * r).sum())
    return dot / math.sqrt(g2 * r2) if g2 > 0 and r2 > 0 else math.nan


def cosine_table(subject: Subject, params: dict, device: str) -> pd.DataFrame:
    """Per precision label and seed: cosine between the parameter gradient of the initial model
    on that seed's first batch at the label's precision and at 32-true (NaN if the gradient is
    not finite or zero). The gradient before any step does not depend on Adam's eps, so labels
    of one precision share it (computed once)."""
    split = subject.split.to(device)
    rows = []
    for seed in params["seeds"]:
        x, y = _first_batch(split, params["batch_size"], seed, device)
        grads = {"32-true": _gradient(subject.make_model(), x, y, "32-true", subject.task, seed)}
        for label in params["precisions"]:
            precision, _ = recipe(label)
            if precision not in grads:
                grads[precision] = _gradient(subject.make_model(), x, y, precision,
                                             subject.task, seed)
            g = grads[precision]
            ok = all(bool(torch.isfinite(t).all()) for t in g)
            rows.append({"precision": label, "seed": seed, "cosine": cosine(g, grads["32-true"]),
                         "finite": ok})
    return pd.DataFrame(rows)


def _name(name: str) -> str:
    return name.removeprefix("module.") if name != "module" else "(model)"


def _first_tensor(out: object) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out if out.is_floating_point() else None
    if isinstance(out, tuple | list):
        for o in out:
            t = _first_tensor(o)
            if t is not None:
                return t
    logits = getattr(out, "logits", None)
    return logits if isinstance(logits, torch.Tensor) else None


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(_name(n), m) for n, m in model.named_modules() if not any(m.children())]


def module_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str,
                     seed: int) -> tuple[pd.DataFrame, dict[str, torch.Tensor]]:
    """One fp32 forward and backward of a batch with hooks on the leaf modules (not training:
    `gradstats.activation_gradients` trains and samples): per module (in
    forward order) name, type, fwd_amax, grad_amax, forward and backward order; and the
    flat output gradients by module."""
    info: dict[str, dict] = {}
    grads: dict[str, list[torch.Tensor]] = {}
    order = {"fwd": 0, "bwd": 0}

    def hook(name: str, module: nn.Module) -> Callable:
        def record(_m: nn.Module, _args: tuple, out: object) -> None:
            t = _first_tensor(out)
            if t is None:
                return
            row = info.setdefault(name, {"name": name, "type": type(module).__name__,
                                         "fwd_amax": 0.0, "grad_amax": 0.0,
                                         "fwd_order": order["fwd"], "bwd_order": math.inf})
            order["fwd"] += 1
            row["fwd_amax"] = max(row["fwd_amax"], float(t.detach().abs().max()))
            if t.requires_grad:
                def keep(g: torch.Tensor) -> None:
                    grads.setdefault(name, []).append(g.detach().float().flatten())
                    row["grad_amax"] = max(row["grad_amax"], float(g.abs().max()))
                    if row["bwd_order"] == math.inf:
                        row["bwd_order"] = order["bwd"]
                        order["bwd"] += 1
                t.register_hook(keep)
        return record

    handles = [m.register_forward_hook(hook(n, m)) for n, m in _leaves(model)]
    try:
        model.train()
        torch.manual_seed(seed)
        loss, _ = loss_and_metric(model(x), y, objective(task))
        loss.backward()
    finally:
        for h in handles:
            h.remove()
    flat = {n: torch.cat(g) for n, g in grads.items()}
    return pd.DataFrame(list(info.values())), flat


def fp16_forward_inf(model: nn.Module, x: torch.Tensor) -> str | None:
    """The first leaf module whose output has an inf in a 16-true forward of `x` (a copy of
    `model` cast to fp16), or None."""
    policy = get_policy("16-true")
    m16 = policy.prepare_model(copy.deepcopy(model))
    m16.eval()
    first: list[str] = []

    def hook(name: str) -> Callable:
        def record(_m: nn.Module, _args: tuple, out: object) -> None:
            t = _first_tensor(out)
            if not first and t is not None and bool(torch.isinf(t).any()):
                first.append(name)
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in _leaves(m16)]
    try:
        with matmul16(torch.float16, x.device.type):
            m16(policy.prepare_input(x))
    finally:
        for h in handles:
            h.remove()
    return first[0] if first else None


def module_table(info: pd.DataFrame, grads: dict[str, torch.Tensor]) -> pd.DataFrame:
    """The per-module table: ranges, fp16 overflow flags, and per format the share of nonzero
    output gradients that flush to 0 when cast without scaling."""
    t = info.copy()
    t["fwd_overflow_fp16"] = t["fwd_amax"] > FP16_MAX
    t["grad_overflow_fp16"] = t["grad_amax"] > FP16_MAX
    for fmt in LOW_FORMATS:
        t[f"grad_flushed_{fmt}"] = [classify(grads[n], fmt)["flushed"] if n in grads
                                    else math.nan for n in t["name"]]
    t["bwd_order"] = t["bwd_order"].replace(math.inf, np.nan)
    return t


def underflow_table(grads: dict[str, torch.Tensor], loss_scales: list[int]) -> pd.DataFrame:
    """Per format and log2 scale k (0 always included): the share of all nonzero activation
    gradients that flush once multiplied by 2^k and rounded (`gradstats.underflow_table`, the
    measurement chapters 01 and 03 use), and whether any overflows."""
    values = torch.cat(list(grads.values())) if grads else torch.zeros(0)
    t = gradstats.underflow_table(values, list(LOW_FORMATS), sorted({0, *loss_scales}))
    t["overflowed"] = t["overflow"] > 0  # NaN (no nonzero gradient) reads as no overflow
    return t[["format", "log2_scale", "flushed", "overflowed"]]


def histogram_table(grads: dict[str, torch.Tensor]) -> pd.DataFrame:
    """Counts of log2|g| of the nonzero activation gradients in bins one binade wide
    (log2_low <= log2|g| < log2_low + 1), plus a row with log2_low=None counting exact zeros."""
    values = torch.cat(list(grads.values())) if grads else torch.zeros(0)
    nonzero = values[values != 0].double().abs()
    rows = []
    if nonzero.numel():
        e = torch.floor(torch.log2(nonzero)).long()
        lo, hi = int(e.min()), int(e.max())
        counts = torch.bincount(e - lo, minlength=hi - lo + 1)
        rows = [{"log2_low": lo + i, "count": int(c)} for i, c in enumerate(counts.tolist())]
    rows.append({"log2_low": None, "count": int((values == 0).sum())})
    return pd.DataFrame(rows, columns=["log2_low", "count"])


def ptq_config(name: str) -> QuantConfig:
    """The QuantConfig a configuration name stands for: symmetric int weights per tensor,
    channel or group; 'aN' adds asymmetric per-tensor N-bit activations (min-max calibrated)."""
    c = parse_ptq(name)
    gran = {"tensor": "per_tensor", "channel": "per_channel", "group": "per_group"}
    weight = QuantSpec(bits=c["weight_bits"], symmetric=True,
                       granularity=gran[c["granularity"]], group_size=c["group_size"])
    act = (None if c["activation_bits"] is None
           else QuantSpec(bits=c["activation_bits"], symmetric=False))
    return QuantConfig(weight=weight, activation=act)


def ptq_table(subject: Subject, params: dict, models: dict[int, nn.Module],
              fp32_metrics: dict[int, float], device: str) -> pd.DataFrame:
    """Per configuration and seed: quantize that seed's fp32-trained model (`quantize_ptq`)
    and score it; drop = how much worse the metric is than the seed's fp32 metric (positive is
    worse: accuracy lost, or MSE/perplexity gained)."""
    columns = ["config", "weight_bits", "granularity", "group_size", "activation_bits", "seed",
               "metric", "fp32_metric", "drop", "fallback"]
    if not params["ptq"]:
        return pd.DataFrame(columns=columns)
    data = eval_split(subject.split, params["eval_examples"]).to(device)
    calib = data.x_train[:params["calibration_examples"]]
    sign = 1.0 if higher_is_better(subject.task) else -1.0
    rows = []
    for seed, model in models.items():
        collected: dict | None = None
        ranges: dict = {}
        for name in params["ptq"]:
            config = ptq_config(name)
            r = None
            if config.activation is not None:
                if collected is None:
                    collected = collect_inputs(model, calib, params["batch_size"])
                key = config.activation.describe()
                if key not in ranges:
                    ranges[key] = ranges_for(collected, config.activation)
                r = ranges[key]
            q, fallback = quantize_ptq(model, config, r)
            _, metric = _evaluate(q, data, "32-true", subject.task, params["batch_size"])
            ref = fp32_metrics[seed]
            rows.append({"config": name, **parse_ptq(name), "seed": seed, "metric": metric,
                         "fp32_metric": ref, "drop": sign * (ref - metric),
                         "fallback": ",".join(_name(f) for f in fallback)})
    table = pd.DataFrame(rows).reindex(columns=columns)
    for c in ("group_size", "activation_bits"):  # ints or None, not floats with NaN
        table[c] = pd.Series([r[c] for r in rows], dtype=object)
    return table


def _step_fns(subject: Subject, params: dict, label: str, x: torch.Tensor,
              y: torch.Tensor) -> tuple[Callable, Callable, nn.Module, torch.optim.Optimizer]:
    """A training step (forward, backward, optimizer step with the Trainer's scaler and the
    label's Adam eps) and an inference forward at the label's precision, on a fresh model."""
    precision, eps = recipe(label, params["eps"])
    trainer = Trainer(precision=precision, optimizer=params["optimizer"], lr=params["lr"],
                      steps=1, batch_size=len(x), device=x.device.type, progress=False,
                      objective=objective(subject.task), eps=eps)
    policy = trainer.policy
    model = policy.prepare_model(subject.make_model().to(x.device))
    opt = make_optimizer(params["optimizer"], [p for p in model.parameters()
                                               if p.requires_grad], params["lr"], eps)
    scaler = trainer.make_scaler()
    device = x.device.type
    xin = policy.prepare_input(x)

    def train_step() -> None:
        model.train()
        with matmul16(policy.compute_dtype, device):
            with policy.autocast(device):
                loss, _ = loss_and_metric(model(xin), y, objective(subject.task))
            scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def infer() -> None:
        model.eval()
        with matmul16(policy.compute_dtype, device), policy.autocast(device):
            model(xin)

    return train_step, infer, model, opt


def round_ratio(seconds: pd.Series, reference: pd.Series) -> tuple[float, float, float]:
    """Time over the reference's, paired by round: the geometric mean of the per-round ratios
    and its 95 % interval (a ratio of medians can fall outside that interval)."""
    iv = stats.interval(np.log(seconds.to_numpy(float) / reference.to_numpy(float)))
    return math.exp(iv.mean), math.exp(iv.low), math.exp(iv.high)


def speed_table(subject: Subject, params: dict, device: str
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Speed and memory per precision on one batch. Speed: a training step and an inference
    forward, all precisions timed interleaved in one run (`bench.interleaved`): median seconds,
    and the ratio to 32-true as the geometric mean of the per-round ratios with its 95 %
    interval (`*_low`, `*_high`), so the ratio always lies inside its interval.
    Memory: bytes of weights, gradients, optimizer state (after one step)
    and saved activations of one forward; on CUDA also the peak of a training step."""
    split = subject.split.to(device)
    x, y = _first_batch(split, params["batch_size"], params["seeds"][0], device)
    candidates, mem_rows = {}, []
    for precision in params["precisions"]:
        train_step, infer, model, opt = _step_fns(subject, params, precision, x, y)
        train_step()  # creates the optimizer state
        policy = get_policy(recipe(precision)[0])
        xin = policy.prepare_input(x)

        def forward(model: nn.Module = model, policy=policy, xin=xin) -> None:
            model.train()
            with matmul16(policy.compute_dtype, device), policy.autocast(device):
                loss_and_metric(model(xin), y, objective(subject.task))

        params_ = [p for p in model.parameters() if p.requires_grad]
        state = [t for s in opt.state.values() for t in s.values()
                 if isinstance(t, torch.Tensor) and t.dim() > 0]
        row = {"precision": precision,
               "weights_bytes": memory.tensor_bytes(model.parameters()),
               "gradients_bytes": memory.tensor_bytes(params_),
               "optimizer_bytes": memory.tensor_bytes(state),
               "activation_bytes": memory.saved_activation_bytes(
                   forward, exclude=list(model.parameters())),
               "peak_cuda_bytes": (memory.peak_cuda_bytes(train_step, device)
                                   if device.startswith("cuda") else None)}
        mem_rows.append(row)
        candidates[f"train {precision}"] = train_step
        candidates[f"infer {precision}"] = infer
    times = bench.interleaved(candidates, repeats=params["speed_repeats"], warmup=1,
                              device=device)
    med = times.groupby("candidate", sort=False)["seconds"].median()
    per_round = times.pivot_table(index="repeat", columns="candidate", values="seconds")
    rows = []
    for precision in params["precisions"]:
        t, i = med[f"train {precision}"], med[f"infer {precision}"]
        row = {"precision": precision, "train_step_s": float(t), "inference_s": float(i)}
        for kind, name in (("train", "train_step_ratio"), ("infer", "inference_ratio")):
            row[name], row[f"{name}_low"], row[f"{name}_high"] = round_ratio(
                per_round[f"{kind} {precision}"], per_round[f"{kind} 32-true"])
        rows.append(row)
    return pd.DataFrame(rows), pd.DataFrame(mem_rows)


def run(subject: Subject, params: dict, progress: bool = False) -> Result:
    """Run every measurement of the audit (see the module docstring) with checked `params`
    (from `audit.parameters`) and return them as a Result. Training, cosines and evaluation
    run with 16-bit CPU matmuls as `params["matmul16"]` says (emulated where torch's kernels
    are slow: same numbers up to fp32 summation order); speed is always timed with torch's
    own kernels, the ones this machine runs."""
    device = resolve_device(params["device"])
    threads = params["threads"]
    if threads is not None:
        torch.set_num_threads(threads)
    task = subject.task
    result = Result(device=device, hardware=hardware_line(device, threads),
                    params=copy.deepcopy(params), task=task)
    before = get_matmul16()
    try:
        result.matmul16 = set_matmul16(params["matmul16"])
        _measure(result, subject, params, device, progress)
        set_matmul16("native")  # speed: the kernels this machine really runs
        result.speed, result.memory = speed_table(subject, params, device)
    finally:
        set_matmul16(before)
    return result


def _measure(result: Result, subject: Subject, params: dict, device: str,
             progress: bool) -> None:
    """Everything but speed and memory, into `result`."""
    task = subject.task
    result.runs, result.history, fp32_models = train_runs(subject, params, device, progress)
    result.parity = parity_table(result.runs, task, params["margin"],
                                 resolution(task, subject.split, params["eval_examples"]))
    result.cosine = cosine_table(subject, params, device)
    split = subject.split.to(device)
    x, y = _first_batch(split, params["batch_size"], params["seeds"][0], device)
    info, grads = module_gradients(subject.make_model().to(device), x, y, task,
                                       params["seeds"][0])
    result.modules = module_table(info, grads)
    result.fp16_forward_inf = fp16_forward_inf(subject.make_model().to(device), x)
    result.underflow = underflow_table(grads, params["loss_scales"])
    result.histograms = histogram_table(grads)
    fp32 = result.runs[result.runs["precision"] == "32-true"].set_index("seed")["metric"]
    result.ptq = ptq_table(subject, params, fp32_models, fp32.to_dict(), device)
