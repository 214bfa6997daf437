"""Chapter 02's measurements (mixed precision): each returns a tidy DataFrame, one row per run,
probe or op, for the rules in `precisionlab.study.rules.mixed` and the chapter's figures, tables and
glued texts in `precisionlab.study.reports.mixed`.

Every multi-seed experiment builds its data and model from the seed (`tasks.make`, or
`data.close_pairs(seed)`), so runs that share a seed form a pair and seeds differ in both
data split and weights.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from precisionlab import bench, formats, memory
from precisionlab.amp.anatomy import (
    autocast_probe,
    autocast_results,
    half_update_losses,
    step_dtypes,
    summarize,
)
from precisionlab.amp.emulation import applied_in
from precisionlab.amp.policy import get_policy
from precisionlab.amp.trace import trace_dtypes
from precisionlab.amp.trainer import Trainer, loss_and_accuracy, plain_loop
from precisionlab.data import close_pairs
from precisionlab.formats import adam_underflow as adam_underflow
from precisionlab.models import MLP, FP32Island
from precisionlab.study import stats, tasks
from precisionlab.study.designs import MIXED, WORKING_PURE, device_independent, finals
from precisionlab.study.designs import PURE as PURE  # `NAME as NAME`: re-exported for callers
from precisionlab.study.designs import SPACING as SPACING
from precisionlab.study.designs import fine_accuracy as fine_accuracy
from precisionlab.study.store import stored

INT_TYPES = {"int8", "int16", "int32", "int64", "uint8", "bool"}


# ------------------------------------------------------------------------------ parameters ---

LIMITS = {"digits_steps": (1, 10**5), "mnist1d_steps": (1, 10**5), "pure_steps": (1, 10**5),
          "pairs_steps": (1, 10**5), "bench_steps": (1, 10**4), "mnist1d_samples": (100, 10**5),
          "batch_size": (1, 1347), "bench_batch": (1, 1347),  # digits' train split: 1347 images
          "bench_width": (1, 16384), "bench_repeats": (5, 1000), "threads": (1, 256)}
RATES = ("lr", "sgd_lr", "stall_lr")


def check_parameters(params: dict[str, object]) -> None:
    """Check the chapter's parameters (a dict holding at least them, e.g. `globals()`) before
    any compute: the first bad one raises a `ParameterError` naming it and what is allowed."""
    from precisionlab import validate as v
    from precisionlab.amp.policy import PRECISIONS

    v.subset_of("precisions", params["precisions"], PRECISIONS)
    v.integers("seeds", params["seeds"], 0)
    v.integers("hidden", params["hidden"], 1, 8192, distinct=False)
    for name, (low, high) in LIMITS.items():
        v.integer(name, params[name], low, high)
    for name in RATES:
        v.positive(name, params[name])
    for needed in ("32-true", "16-mixed", "bf16-mixed"):
        if needed not in params["precisions"]:
            raise v.ParameterError(f"precisions: must include {needed!r} (the comparisons need "
                                   f"it); got {params['precisions']!r}")


# ---------------------------------------------------------------------------------- anatomy ---

def op_traces(precisions: Sequence[str] = MIXED, seed: int = 0) -> pd.DataFrame:
    """Every aten op of one Adam step of a 64-32-10 MLP on 16 digits, per precision (on the CPU:
    this is CPU autocast). Columns: precision, order, op, phase, in_dtypes, out_dtype."""
    split = tasks.load("digits", seed)
    x, y = split.x_train[:16], split.y_train[:16]
    out = []
    for precision in precisions:
        torch.manual_seed(seed)
        model, policy = MLP([64, 32, 10]), get_policy(precision)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(model=model, policy=policy, opt=opt) -> None:
            with policy.autocast("cpu"):
                loss, _ = loss_and_accuracy(model(policy.prepare_input(x)), y)
            loss.backward()
            opt.step()
        out.append(trace_dtypes(step).assign(precision=precision))
    return pd.concat(out, ignore_index=True)


def casts(trace: pd.DataFrame) -> pd.DataFrame:
    """The cast ops of a trace, with `pair` ('fp32->bf16') and `to_integer` (a float value
    turned into an integer type; the one bool->fp32 cast is the accuracy count)."""
    c = trace[trace.op.str.startswith("aten._to_copy")].copy()
    c["pair"] = c.in_dtypes + "->" + c.out_dtype
    c["to_integer"] = c.out_dtype.isin(INT_TYPES) & ~c.in_dtypes.isin(INT_TYPES)
    return c


def tensor_dtypes(precisions: Sequence[str] = ("bf16-mixed", "16-mixed", "16-true"),
                  seed: int = 0) -> pd.DataFrame:
    """Tensor kind x precision: the dtypes of activations, their gradients, .grad, master weights
    and optimizer state after one real Adam step (CPU)."""
    split = tasks.load("digits", seed)
    cols = {}
    for precision in precisions:
        torch.manual_seed(seed)
        t = step_dtypes(MLP([64, 32, 10]), split.x_train[:16], split.y_train[:16], precision)
        cols[precision] = summarize(t)["dtypes"]
    return pd.concat(cols, axis=1)


def probe_devices(device: str) -> list[str]:
    """The device types the dtype probes run on: always the CPU (the chapter's checked tables),
    and CUDA too when the chapter runs on it."""
    return ["cpu"] + (["cuda"] if device.startswith("cuda") else [])


def autocast_table(device_types: Sequence[str] = ("cpu",)) -> pd.DataFrame:
    """Tidy autocast probe: device, autocast (bf16/fp16), op, input (fp32 or low), output dtype."""
    rows = []
    for device_type in device_types:
        for dtype in (torch.bfloat16, torch.float16):
            wide = autocast_probe(device_type, dtype)
            low = "bf16" if dtype == torch.bfloat16 else "fp16"
            for op, r in wide.iterrows():
                for label, out in r.items():
                    rows.append({"device": device_type, "autocast": low, "op": op,
                                 "input": label.removesuffix(" input"), "output": out})
    return pd.DataFrame(rows)


def result_dtypes(device_types: Sequence[str] = ("cpu",)) -> pd.DataFrame:
    """Tidy `autocast_results` per device and autocast dtype: device, autocast (bf16/fp16), op,
    input (fp32 or low), computed (what the arithmetic ran in), output (the dtype returned)."""
    out = []
    for device_type in device_types:
        for dtype in (torch.bfloat16, torch.float16):
            low = "bf16" if dtype == torch.bfloat16 else "fp16"
            out.append(autocast_results(device_type, dtype).assign(device=device_type,
                                                                   autocast=low))
    cols = ["device", "autocast", "op", "input", "computed", "output"]
    return pd.concat(out, ignore_index=True)[cols]


def check_device_independent(results: pd.DataFrame) -> None:
    """Raise if the devices of `result_dtypes` disagree on a row `device_independent` keeps:
    a checked cell prints those rows from one device as holding on every device."""
    part = device_independent(results)
    tables = {d: g.drop(columns="device").reset_index(drop=True)
              for d, g in part.groupby("device", sort=False)}
    first, reference = next(iter(tables.items()))
    for d, table in tables.items():
        if not table.equals(reference):
            raise ValueError(f"results: the fp32-input rows under {d} autocast differ from "
                             f"those under {first} autocast; print only rows both agree on")


def step_flops(precisions: Sequence[str], hidden: Sequence[int] = (256, 256),
               batch_size: int = 64, seed: int = 0) -> pd.DataFrame:
    """One training step (forward, backward) of the chapter's digits MLP on one batch, per
    precision: matmul FLOPs counted by torch's FlopCounterMode (`memory.matmul_flops`) forward
    and backward, and from a dtype trace of the same step the aten ops and casts it runs.

    Columns: precision, forward_flops, backward_flops, step_flops, aten_ops, casts."""
    split = tasks.load("digits", seed)
    x, y = split.x_train[:batch_size], split.y_train[:batch_size]
    rows = []
    for precision in precisions:
        policy = get_policy(precision)
        torch.manual_seed(seed)
        model = policy.prepare_model(MLP([64, *hidden, 10]))
        box: list[torch.Tensor] = []

        def forward(model=model, policy=policy, box=box) -> None:
            with policy.autocast("cpu"):
                box.append(loss_and_accuracy(model(policy.prepare_input(x)), y)[0])
        fwd = memory.matmul_flops(forward)
        bwd = memory.matmul_flops(box.pop().backward)
        model.zero_grad(set_to_none=True)
        trace = trace_dtypes(lambda forward=forward, box=box: (forward(), box.pop().backward()))
        rows.append({"precision": precision, "forward_flops": fwd, "backward_flops": bwd,
                     "step_flops": fwd + bwd, "aten_ops": len(trace),
                     "casts": int(trace.op.str.startswith("aten._to_copy").sum())})
    return pd.DataFrame(rows)


def vanishing_update(weight: float = 1.0, update: float = -1e-4) -> dict[str, float]:
    """`weight + update` with the update applied in fp32, bf16 and fp16 (`applied_in`), as
    float64 numbers: the exact values each format gives."""
    w = torch.tensor([weight])
    return {fmt: float(applied_in(w, w + update, dtype)) for fmt, dtype in
            [("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)]}


# ------------------------------------------------------------------------ updates and errors ---

def _step(model: nn.Module, precision: str, x: torch.Tensor, y: torch.Tensor,
          lr: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One real SGD step of a copy of `model` at `precision`: (update, gradient, the forward
    pass's outputs), flat fp64. 16-mixed scales the loss by 2^16 and unscales the gradient
    before the step, as AMP does."""
    m = get_policy(precision).prepare_model(copy.deepcopy(model))
    policy = get_policy(precision)
    params = list(m.parameters())
    before = torch.cat([p.detach().double().flatten() for p in params])
    scale = 2.0**16 if policy.needs_loss_scaling else 1.0
    with policy.autocast(x.device.type):
        logits = m(policy.prepare_input(x))
        loss, _ = loss_and_accuracy(logits, y)
    (loss * scale).backward()
    for p in params:
        p.grad.div_(scale)
    grad = torch.cat([p.grad.double().flatten() for p in params])
    torch.optim.SGD(params, lr=lr).step()
    after = torch.cat([p.detach().double().flatten() for p in params])
    return after - before, grad, logits.detach().double().flatten()


@stored
def one_step_updates(seeds: Sequence[int], sgd_lr: float, lr: float = 1e-3,
                     warm_steps: int = 100, batch_size: int = 64,
                     hidden: Sequence[int] = (256, 256), device: str = "cpu") -> pd.DataFrame:
    """From an fp32-trained state (Adam, `warm_steps`), one measured SGD step per variant on one
    batch: 32-true, bf16-mixed and 16-mixed at `sgd_lr`, and 32-true at `sgd_lr / 2`.

    Columns: seed, step, step_ratio (<update, fp32 update> / |fp32 update|^2: 1 = the fp32 step,
    0.5 = half of it), update_rel_diff_vs_fp32, and for the three precisions at full lr the
    gradient's relative error and norm ratio against the fp64 gradient of the same batch, and
    the relative error of the forward pass's outputs (logits) against fp64's
    (out_rel_err_vs_fp64)."""
    rows = []
    for seed in seeds:
        split, base = tasks.make("digits", seed, hidden=list(hidden))
        split = split.to(device)
        Trainer(precision="32-true", steps=warm_steps, lr=lr, seed=seed, device=device,
                progress=False, eval_every=None).fit(base, split)
        g = torch.Generator().manual_seed(1000 + seed)
        idx = torch.randint(len(split.x_train), (batch_size,), generator=g).to(device)
        x, y = split.x_train[idx], split.y_train[idx]
        _, g64, o64 = _step(base, "64-true", x, y, sgd_lr)
        d32, _, _ = _step(base, "32-true", x, y, sgd_lr)
        variants = [("32-true, lr", "32-true", sgd_lr), ("bf16-mixed, lr", "bf16-mixed", sgd_lr),
                    ("16-mixed, lr", "16-mixed", sgd_lr), ("32-true, lr/2", "32-true", sgd_lr / 2)]
        for name, precision, rate in variants:
            d, gp, out = _step(base, precision, x, y, rate)
            full = name.endswith(", lr")
            rows.append({
                "seed": seed, "step": name, "precision": precision,
                "step_ratio": float(d @ d32 / (d32 @ d32)),
                "update_rel_diff_vs_fp32": float((d - d32).norm() / d32.norm()),
                "grad_rel_err_vs_fp64": float((gp - g64).norm() / g64.norm()) if full else math.nan,
                "grad_norm_ratio_vs_fp64": float(gp.norm() / g64.norm()) if full else math.nan,
                "out_rel_err_vs_fp64": float((out - o64).norm() / o64.norm()) if full else math.nan,
                "unit_roundoff": formats.FORMATS[{"32-true": "fp32", "bf16-mixed": "bf16",
                                                  "16-mixed": "fp16"}[precision]].unit_roundoff,
            })
    return pd.DataFrame(rows)


@stored
def lr_curves(seeds: Sequence[int], sgd_lr: float, steps: int,
              hidden: Sequence[int] = (256, 256), device: str = "cpu") -> pd.DataFrame:
    """SGD on digits: 32-true, bf16-mixed, 16-mixed at `sgd_lr` and 32-true at `sgd_lr / 2`;
    the Trainer's history with `run` and `seed` columns."""
    out = []
    for seed in seeds:
        split = tasks.load("digits", seed)  # once per seed: loading costs more than a short run
        for name, precision, rate in [("32-true, lr", "32-true", sgd_lr),
                                      ("bf16-mixed, lr", "bf16-mixed", sgd_lr),
                                      ("16-mixed, lr", "16-mixed", sgd_lr),
                                      ("32-true, lr/2", "32-true", sgd_lr / 2)]:
            model = tasks.model_for("digits", split, seed, hidden=list(hidden))
            h = Trainer(precision=precision, optimizer="sgd", lr=rate, steps=steps, seed=seed,
                        device=device, progress=False).fit(model, split)
            out.append(h.assign(run=name, seed=seed))
    return _smoothed(pd.concat(out, ignore_index=True), "run", 20)


def _smoothed(history: pd.DataFrame, by: str, window: int) -> pd.DataFrame:
    """`history` with `smooth`: each run's training loss, averaged over `window` steps."""
    return history.assign(smooth=history.groupby([by, "seed"]).loss.transform(
        lambda s: s.rolling(window, min_periods=1).mean()))


# ------------------------------------------------------------------------------ training ---

@stored
def precision_runs(steps: dict[str, int], precisions: Sequence[str], seeds: Sequence[int],
                   lr: float = 1e-3, batch_size: int = 64, hidden: Sequence[int] = (256, 256),
                   samples: int = 4000, device: str = "cpu") -> pd.DataFrame:
    """Adam on each task of `steps` (task -> optimizer steps) at each precision and seed; the
    Trainer's history with task, precision, seed (test metrics at 20 points per run)."""
    out = []
    for task, n in steps.items():
        for seed in seeds:
            split = tasks.load(task, seed, samples=samples)  # once per seed: MNIST-1D is slow
            for precision in precisions:
                model = tasks.model_for(task, split, seed, hidden=list(hidden))
                h = Trainer(precision=precision, optimizer="adam", lr=lr, steps=n,
                            batch_size=batch_size, seed=seed, eval_every=max(n // 20, 1),
                            device=device, progress=False).fit(model, split)
                out.append(h.assign(task=task, precision=precision, seed=seed,
                                    test_examples=split.y_test.numel()))
    return pd.concat(out, ignore_index=True)


def final_table(final: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Per group of `by`: test accuracy's mean and 95 % interval over seeds (`stats.summarize`),
    mean test loss, the number of diverged runs and, if tracked, the mean stalled share."""
    table = stats.summarize(final, "test_metric", list(by))
    g = final.groupby(list(by), sort=False)
    extra = {"test_loss": g.test_loss.mean(), "diverged": g.diverged.sum()}
    if "stalled" in final:
        extra["stalled"] = g.stalled.mean()
    return table.assign(**{k: v.to_numpy() for k, v in extra.items()})


def final_summary(runs: pd.DataFrame, by: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The last step of each run (`finals`) and its `final_table` per group of `by`: the pair
    the chapter saves, shows and hands to the rules."""
    final = finals(runs, list(by))
    return final, final_table(final, by)


@stored
def pure_runs(seeds: Sequence[int], sgd_lr: float, lr: float, steps: int,
              hidden: Sequence[int] = (256, 256), device: str = "cpu") -> pd.DataFrame:
    """Digits MLP trained with SGD and with Adam at 16-true, bf16-true and their AMP twins (and,
    with Adam, the working pure-fp16 recipe of `WORKING_PURE`: an eps fp16 can hold), logging
    the share of weights with a gradient that did not move (`stalled`) every step, and for the
    AMP runs the share whose update would have been lost had the step been applied in fp16 and
    cast back (`lost_fp16_scheme`, `anatomy.half_update_losses`; NaN on skipped steps and in the
    pure runs). `test_examples` is the test set's size."""
    out = []
    splits = {seed: tasks.load("digits", seed) for seed in seeds}
    for opt, rate in [("sgd", sgd_lr), ("adam", lr)]:
        for seed in seeds:
            recipes = ("16-true", "bf16-true", "16-mixed", "bf16-mixed",
                       *(WORKING_PURE if opt == "adam" else ()))
            for precision in recipes:
                model = tasks.model_for("digits", splits[seed], seed, hidden=list(hidden))
                split = splits[seed]
                policy, eps = WORKING_PURE.get(precision, (precision, None))
                mixed = get_policy(policy).mixed
                count = half_update_losses(torch.float16) if mixed else contextlib.nullcontext()
                with count as lost:
                    h = Trainer(precision=policy, optimizer=opt, lr=rate, steps=steps, eps=eps,
                                seed=seed, track_stalled=True, eval_every=max(steps // 10, 1),
                                device=device, progress=False).fit(model, split)
                h["lost_fp16_scheme"] = math.nan
                if mixed:  # the hooks fire on the steps taken, not on skipped ones
                    h.loc[~h.skipped.astype(bool), "lost_fp16_scheme"] = lost
                out.append(h.assign(optimizer=opt, precision=precision, seed=seed,
                                    test_examples=split.y_test.numel()))
    return pd.concat(out, ignore_index=True)


def update_losses(pure: pd.DataFrame) -> pd.DataFrame:
    """Per AMP run of `pure_runs` (optimizer, precision, seed): the mean share of wanted updates
    lost per step by the real step (`stalled`) and by the fp16 scheme on the same states
    (`lost_fp16_scheme`), over the steps taken (skipped ones left out of both)."""
    amp = pure[pure.precision.isin(MIXED) & ~pure.skipped.astype(bool)]
    return (amp.groupby(["optimizer", "precision", "seed"], sort=False)
            [["stalled", "lost_fp16_scheme"]].mean().reset_index())


# ------------------------------------------------------------------- the articles' layers ---

def mp13_probe(device: str = "cpu", steps: int = 10) -> dict[str, object]:
    """The article's recipe (fp16 inputs into an fp32 nn.Linear(2, 1)) and the minimal AMP fix
    (fp32 inputs, fp16 autocast, GradScaler). Returns error (str or None) and the fix's losses."""
    torch.manual_seed(0)
    x, y = torch.randn(100, 2), torch.randn(100, 1)
    try:
        nn.Linear(2, 1)(x.half())  # on the CPU: the error's wording is the CPU kernel's
        error = None
    except RuntimeError as err:
        error = f"{type(err).__name__}: {str(err).splitlines()[0]}"
    torch.manual_seed(0)
    model = nn.Linear(2, 1).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler(device.split(":")[0])
    xs, ys, losses = x.half().float().to(device), y.to(device), []
    for _ in range(steps):
        with torch.autocast(device.split(":")[0], dtype=torch.float16):
            loss = F.mse_loss(model(xs).float(), ys)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return {"error": error, "losses": losses,
            "fixed_trains": all(map(math.isfinite, losses)) and losses[-1] < losses[0]}


class ArticleStyleLinear(nn.Linear):
    """Our reconstruction of the article's layer as described (not its code): fp16 weight and
    bias, `matmul(x, weight) + bias`."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features)
        self.weight = nn.Parameter(self.weight.detach().half())
        self.bias = nn.Parameter(self.bias.detach().half())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x, self.weight) + self.bias


class FixedHalfLinear(ArticleStyleLinear):
    """The same fp16 parameters, shapes and dtypes made consistent: x W^T + b in fp16."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.half() @ self.weight.t() + self.bias  # (B, in) @ (in, out)


def article_layer_errors() -> dict[str, str]:
    """Run the article-style layer on three inputs (CPU): the error it raises, or whether what it
    computes is the intended x W^T + b (within 1) or not."""
    out = {}
    for label, n_out, x in [("fp32 input, 64 -> 10", 10, torch.randn(8, 64)),
                            ("fp32 input, 64 -> 64", 64, torch.randn(8, 64)),
                            ("fp16 input, 64 -> 64", 64, torch.randn(8, 64).half())]:
        torch.manual_seed(0)
        layer = ArticleStyleLinear(64, n_out)
        try:
            got = layer(x).float()
        except RuntimeError as err:
            out[label] = f"{type(err).__name__}: {str(err).splitlines()[0]}"
            continue
        intended = x.float() @ layer.weight.float().t() + layer.bias.float()
        out[label] = ("runs, but computes x W: at least 1 away from the intended x W^T + b"
                      if (got - intended).abs().max() >= 1 else
                      "runs, within 1 of the intended x W^T + b")
    return out


@stored
def article_layer_runs(seeds: Sequence[int], lr: float, steps: int,
                       device: str = "cpu") -> pd.DataFrame:
    """Softmax regression on digits with SGD: the repaired fp16 layer (16-true) against
    nn.Linear under 16-mixed, same seed, split and batches; history with layer, seed, stalled."""
    out = []
    for seed in seeds:
        split = tasks.load("digits", seed)
        for label, precision, make in [("fixed fp16 layer (16-true)", "16-true", FixedHalfLinear),
                                       ("nn.Linear, 16-mixed", "16-mixed", nn.Linear)]:
            torch.manual_seed(seed)
            h = Trainer(precision=precision, optimizer="sgd", lr=lr, steps=steps, seed=seed,
                        track_stalled=True, eval_every=max(steps // 10, 1), device=device,
                        progress=False).fit(make(64, 10), split)
            out.append(h.assign(layer=label, seed=seed))
    return _smoothed(pd.concat(out, ignore_index=True), "layer", 10)


# ----------------------------------------------------------------- precision-sensitive task ---

def resolution_probe(device: str = "cpu", seed: int = 0) -> pd.DataFrame:
    """An exact a - b layer (weights 1, -1; no training) on close pairs near 0.75, per autocast
    variant and gap decade: variant, gap_low, gap_high, pairs, accuracy (sign right)."""
    pairs = close_pairs(seed=seed, n_samples=20_000, test_fraction=0.5)
    x = pairs.x_test.to(device)
    gap = (pairs.x_test[:, 0].double() - pairs.x_test[:, 1].double()).abs().numpy()
    comparator = nn.Linear(2, 1, bias=False).to(device)
    with torch.no_grad():
        comparator.weight.copy_(torch.tensor([[1.0, -1.0]]))
    variants = {"32-true": (comparator, None), "16-mixed": (comparator, torch.float16),
                "bf16-mixed": (comparator, torch.bfloat16),
                "bf16-mixed, layer in FP32Island": (FP32Island(comparator), torch.bfloat16)}
    edges = np.logspace(-6, -1, 11)
    rows = []
    for name, (layer, dtype) in variants.items():
        with torch.no_grad(), torch.autocast(device.split(":")[0], dtype=dtype or torch.float32,
                                             enabled=dtype is not None):
            pred = (layer(x).float().squeeze(1) > 0).long().cpu()
        correct = (pred == pairs.y_test).numpy()
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            sel = (gap >= lo) & (gap < hi)
            rows.append({"variant": name, "gap_low": lo, "gap_high": hi, "pairs": int(sel.sum()),
                         "accuracy": float(correct[sel].mean())})
    return pd.DataFrame(rows)


class PairComparator(nn.Module):
    """Scores a pair (a, b) as g(a) - g(b) with one small learned g (1 -> width -> 1): the
    ordering is right wherever g has learned to increase, if the arithmetic can resolve it."""

    def __init__(self, width: int = 16, island: bool = False) -> None:
        super().__init__()
        g = MLP([1, width, 1])
        self.g = FP32Island(g) if island else g

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 2) -> (B, 2) logits
        s = self.g(x[:, :1]) - self.g(x[:, 1:])  # (B, 1)
        return torch.cat([-s, s], dim=1)


CLOSE_PAIR_VARIANTS = {"32-true": ("32-true", False), "16-mixed": ("16-mixed", False),
                       "bf16-mixed": ("bf16-mixed", False),
                       "bf16-mixed, g in FP32Island": ("bf16-mixed", True)}


@stored
def close_pairs_runs(seeds: Sequence[int], steps: int = 200, lr: float = 1e-2,
                     batch_size: int = 256, samples: int = 8000,
                     device: str = "cpu") -> pd.DataFrame:
    """A trained precision-sensitive task: learn which of two numbers near 0.75 is larger (gaps
    log-uniform in 1e-6..1e-1; each seed its own pairs and weights), per variant of
    `CLOSE_PAIR_VARIANTS`, Adam. One row per run: variant, seed, test_metric, test_loss, loss,
    diverged."""
    out = []
    for seed in seeds:
        split = close_pairs(seed, n_samples=samples)
        for variant, (precision, island) in CLOSE_PAIR_VARIANTS.items():
            torch.manual_seed(seed)
            h = Trainer(precision=precision, optimizer="adam", lr=lr, steps=steps,
                        batch_size=batch_size, seed=seed, device=device,
                        progress=False).fit(PairComparator(island=island), split)
            out.append(h.assign(variant=variant, seed=seed, test_examples=split.y_test.numel()))
    return finals(pd.concat(out, ignore_index=True), ["variant"])


# ------------------------------------------------------------------------------- overhead ---

@stored
def policy_step_times(precisions: Sequence[str], width: int, batch: int, steps: int,
                      repeats: int, device: str = "cpu") -> pd.DataFrame:
    """The Trainer's time per step at each precision, interleaved in one run on a digits MLP of
    `width` (Adam): precision, median_s, iqr_over_median, ratio_to_32-true, ms_per_step.
    On a CPU the 16-bit matmuls run as the Trainer runs them (`set_matmul16`)."""
    split = tasks.load("digits", 0).to(device)
    candidates = {}
    for precision in precisions:
        torch.manual_seed(0)
        net = MLP([64, width, width, 10]).to(device)
        candidates[precision] = lambda net=net, p=precision: Trainer(
            precision=p, steps=steps, batch_size=batch, lr=1e-4, eval_every=None, device=device,
            progress=False).fit(net, split)
    times = bench.interleaved(candidates, repeats=repeats, warmup=1, device=device)
    table = bench.ratios(times, "32-true").rename_axis("precision").reset_index()
    table["ms_per_step"] = 1000 * table.median_s / steps
    return table


@stored
def trainer_overhead(precisions: Sequence[str], width: int, batch: int, steps: int,
                     repeats: int, device: str = "cpu") -> pd.DataFrame:
    """Trainer against `plain_loop`, interleaved timings on a digits MLP of `width`: precision,
    candidate, median_s, iqr_over_median, ratio_to_plain loop, ms_per_step."""
    split = tasks.load("digits", 0).to(device)
    out = []
    for precision in precisions:
        torch.manual_seed(0)
        net = MLP([64, width, width, 10]).to(device)
        candidates = {
            "plain loop": lambda net=net, p=precision: plain_loop(
                net, split, steps=steps, batch_size=batch, lr=1e-4, seed=0, precision=p),
            "Trainer": lambda net=net, p=precision: Trainer(
                precision=p, steps=steps, batch_size=batch, lr=1e-4, eval_every=None,
                device=device, progress=False).fit(net, split),
        }
        times = bench.interleaved(candidates, repeats=repeats, warmup=1, device=device)
        out.append(bench.ratios(times, "plain loop").assign(precision=precision).reset_index())
    table = pd.concat(out, ignore_index=True)
    table["ms_per_step"] = 1000 * table.median_s / steps
    return table
