"""One readable training loop for every precision policy (in the spirit of nanoGPT's train.py).

Each optimizer step: draw `batch_size` examples, split them into `accumulation_steps`
micro-batches; for each, forward under the policy's autocast and backward on the scaled loss
divided by the number of micro-batches; then unscale, clip, step (skipped on inf/NaN gradients),
update the scale, zero the gradients. The history comes back as a pandas DataFrame.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from precisionlab.amp.emulation import matmul16
from precisionlab.amp.policy import PRECISIONS, Policy, get_policy
from precisionlab.amp.scaler import DynamicLossScaler, NoLossScaler, StaticLossScaler
from precisionlab.data import Split
from precisionlab.provenance import resolve_device

OPTIMIZERS = ("sgd", "adam", "adamw")
SCALERS = ("auto", "dynamic", "none")
# What the loop minimizes: cross-entropy over classes (metric: accuracy), or mean squared error
# for regression (metric: the same MSE, computed in fp32 as autocast does for mse_loss).
OBJECTIVES = ("cross-entropy", "mse")


def loss_and_accuracy(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy and accuracy for (B, C) or (B, T, C) logits against (B,) or (B, T)."""
    flat = logits.flatten(0, -2)  # (N, C)
    target = y.flatten()  # (N,)
    return F.cross_entropy(flat, target), (flat.argmax(-1) == target).float().mean()


def loss_and_metric(output: torch.Tensor, y: torch.Tensor,
                    objective: str = "cross-entropy") -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, metric) for an objective: cross-entropy and accuracy (`loss_and_accuracy`), or
    MSE twice for regression (`output` and `y` of one shape)."""
    if objective == "mse":
        loss = F.mse_loss(output.float(), y.float())
        return loss, loss.detach()
    return loss_and_accuracy(output, y)


def batch_indices(n: int, batch_size: int, seed: int,
                  device: str | torch.device = "cpu") -> Iterator[torch.Tensor]:
    """The batches every loop here draws: `batch_size` indices into `n` examples, with
    replacement, from a CPU generator seeded with `seed` (the same batches for every precision
    and device), moved to `device`."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield torch.randint(n, (batch_size,), generator=generator).to(device)


def make_optimizer(name: str, params, lr: float, eps: float | None = None) -> torch.optim.Optimizer:
    """SGD (no momentum), Adam or AdamW with torch defaults otherwise; `eps` replaces Adam's
    default 1e-8 (which rounds to 0 in fp16, so pure-fp16 Adam divides by ~0: a working
    pure-fp16 recipe raises it to one fp16 can hold, e.g. 1e-4)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    extra = {} if eps is None else {"eps": eps}
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, **extra)
    return torch.optim.AdamW(params, lr=lr, **extra)


@dataclass
class Trainer:
    """Train a classifier or a next-token model at one precision; `fit` returns the history.

    Example: `Trainer(precision="bf16-mixed", steps=300, lr=1e-3).fit(MLP([64, 256, 10]),
    digits(0))`. Every argument is checked when the Trainer is made, before any compute.
    """

    precision: str = "32-true"
    optimizer: str = "adam"
    lr: float = 1e-3
    steps: int = 300
    batch_size: int = 64
    accumulation_steps: int = 1
    clip_norm: float | None = None
    loss_scaler: str | float = "auto"  # auto: dynamic for 16-mixed, none otherwise; or a number
    init_scale: float = 2.0**16  # the dynamic scaler's start
    growth_interval: int = 2000
    eval_every: int | None = 0  # test-split evaluation every this many steps; 0: after the
    # last step only; None: never (for timing)
    track_stalled: bool = False  # log the share of weights with a gradient that did not move
    device: str = "auto"
    seed: int = 0
    threads: int | None = None
    progress: bool = True
    objective: str = "cross-entropy"  # or "mse" (regression); see OBJECTIVES
    eps: float | None = None  # Adam/AdamW's eps; None: torch's 1e-8 (see `make_optimizer`)

    def __post_init__(self) -> None:
        self.policy: Policy = get_policy(self.precision)
        _check(self.objective in OBJECTIVES,
               f"objective: must be one of {', '.join(OBJECTIVES)}; got {self.objective!r}")
        _check(self.optimizer in OPTIMIZERS,
               f"optimizer: must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        _check(_number(self.lr) and self.lr > 0, f"lr: must be a number > 0; got {self.lr!r}")
        for name in ("steps", "batch_size", "accumulation_steps", "growth_interval"):
            value = getattr(self, name)
            _check(_integer(value) and value >= 1,
                   f"{name}: must be an integer >= 1; got {value!r}")
        _check(self.batch_size % self.accumulation_steps == 0,
               f"accumulation_steps: must divide batch_size ({self.batch_size}) into equal "
               f"micro-batches; got {self.accumulation_steps}")
        _check(self.eps is None or (_number(self.eps) and 0 < self.eps < 1),
               f"eps: must be None or a number in (0, 1); got {self.eps!r}")
        _check(self.eps is None or self.optimizer != "sgd",
               "eps: only Adam and AdamW have an eps; SGD takes eps=None")
        _check(self.clip_norm is None or (_number(self.clip_norm) and self.clip_norm > 0),
               f"clip_norm: must be None or a number > 0; got {self.clip_norm!r}")
        _check(self.loss_scaler in SCALERS or (_number(self.loss_scaler) and
                                               0 < self.loss_scaler < math.inf),
               f"loss_scaler: must be one of {', '.join(SCALERS)} or a scale > 0; "
               f"got {self.loss_scaler!r}")
        _check(not (self.precision == "16-true" and self.loss_scaler not in ("auto", "none")),
               "loss_scaler: 16-true keeps fp16 weights and gradients, with no fp32 master copy "
               "to unscale into; use 16-mixed for loss scaling, or loss_scaler='none'")
        _check(self.eval_every is None or (_integer(self.eval_every) and self.eval_every >= 0),
               f"eval_every: must be None or an integer >= 0; got {self.eval_every!r}")
        _check(_integer(self.seed) and self.seed >= 0,
               f"seed: must be an integer >= 0; got {self.seed!r}")
        _check(self.threads is None or (_integer(self.threads) and self.threads >= 1),
               f"threads: must be None or an integer >= 1; got {self.threads!r}")
        resolve_device(self.device)  # checks the name

    def make_scaler(self) -> NoLossScaler | StaticLossScaler | DynamicLossScaler:
        """The loss scaler this configuration asks for."""
        if self.loss_scaler == "none" or (self.loss_scaler == "auto"
                                          and not self.policy.needs_loss_scaling):
            return NoLossScaler()
        if self.loss_scaler in ("auto", "dynamic"):
            return DynamicLossScaler(init_scale=self.init_scale,
                                     growth_interval=self.growth_interval)
        return StaticLossScaler(float(self.loss_scaler))

    def fit(self, model: nn.Module, data: Split) -> pd.DataFrame:
        """Train `model` (in place) on `data` and return one history row per optimizer step.

        Columns: step, loss, metric (train-batch accuracy, or MSE), test_loss and test_metric
        (on eval steps, else NaN), loss_scale (the scale used in the step), skipped, grad_norm
        (after unscaling, before clipping), lr, seconds (since the start), and stalled if tracked.
        """
        n = len(data.x_train)
        _check(self.batch_size <= n, f"batch_size: must be at most the training set size ({n}); "
                                     f"got {self.batch_size}")
        device = resolve_device(self.device)
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        policy, k = self.policy, self.accumulation_steps
        micro = self.batch_size // k
        model = policy.prepare_model(model.to(device))
        data = data.to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        self.model, self.optimizer_ = model, make_optimizer(self.optimizer, params, self.lr,
                                                             self.eps)
        self.scaler = scaler = self.make_scaler()
        opt = self.optimizer_
        batches = batch_indices(n, self.batch_size, self.seed, device)  # same for every precision
        history, start = [], time.perf_counter()
        steps = range(self.steps)
        if self.progress and os.environ.get("CI", "").lower() not in ("true", "1"):
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc=f"train {self.precision}", leave=False)
        for step in steps:
            model.train()
            idx = next(batches)
            x_all, y_all = data.x_train[idx], data.y_train[idx]
            scale_used = scaler.get_scale()
            before = [p.detach().clone() for p in params] if self.track_stalled else None
            loss_sum = acc_sum = 0.0
            for i in range(k):
                x, y = x_all[i * micro:(i + 1) * micro], y_all[i * micro:(i + 1) * micro]
                # forward and backward only: 16-bit matmuls emulated if the switch says so
                with matmul16(policy.compute_dtype, device):
                    with policy.autocast(device.split(":")[0]):
                        loss, acc = loss_and_metric(model(policy.prepare_input(x)), y,
                                                    self.objective)
                        loss = loss / k  # the micro-batch means add up to the full-batch mean
                    scaler.scale(loss).backward()
                loss_sum += loss.detach().double()
                acc_sum += acc.detach().double() / k
            scaler.unscale_(opt)  # gradients at their true size before norms and clipping
            grad_norm = _grad_norm(params, self.clip_norm)
            scaler.step(opt)  # skipped when a gradient is inf/NaN
            scaler.update()
            row = {"step": step + 1, "loss": float(loss_sum), "metric": float(acc_sum),
                   "loss_scale": scale_used, "skipped": bool(scaler.found_inf),
                   "grad_norm": grad_norm, "lr": opt.param_groups[0]["lr"]}
            if before is not None:
                row["stalled"] = _stalled(params, before)
            opt.zero_grad(set_to_none=True)
            if self.eval_every is not None and (
                    (self.eval_every and (step + 1) % self.eval_every == 0)
                    or step + 1 == self.steps):
                row["test_loss"], row["test_metric"] = self.evaluate(model, data)
            row["seconds"] = time.perf_counter() - start
            history.append(row)
        columns = ["step", "loss", "metric", "test_loss", "test_metric", "loss_scale", "skipped",
                   "grad_norm", "lr", "seconds"] + (["stalled"] if self.track_stalled else [])
        return pd.DataFrame(history).reindex(columns=columns)

    def evaluate(self, model: nn.Module, data: Split, chunk: int = 1024) -> tuple[float, float]:
        """Mean loss and metric on the test split, at the training precision."""
        with matmul16(self.policy.compute_dtype, data.x_test.device.type):
            return evaluate(model, data, self.policy, chunk, self.objective)


def steady_seconds_per_step(history: pd.DataFrame) -> float:
    """Steady-state seconds per optimizer step of one `Trainer.fit`, from its own clock: (end of
    the last step - end of the first) / (steps - 1), so the set-up a long run pays once (model
    cast, optimizer and scaler built) and the first step (Adam's state allocated) stay out."""
    if "seconds" not in history.columns:
        raise ValueError("history: needs the `seconds` column of a Trainer.fit history")
    clock = history["seconds"].to_numpy(dtype=float)
    if len(clock) < 2:
        raise ValueError(f"history: needs at least 2 steps for a steady-state step time (the "
                         f"first step is set-up); got {len(clock)}")
    return float((clock[-1] - clock[0]) / (len(clock) - 1))


@torch.no_grad()
def evaluate(model: nn.Module, data: Split, policy: Policy | None = None,
             chunk: int = 1024, objective: str = "cross-entropy") -> tuple[float, float]:
    """Mean loss and metric (accuracy, or MSE for `objective="mse"`) of `model` on the test
    split, in chunks, under `policy` (default 32-true). Leaves the model in eval mode."""
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk: must be a positive integer; got {chunk!r}")
    policy = policy or get_policy("32-true")
    model.eval()
    device_type = data.x_test.device.type
    total_loss = total_acc = 0.0
    n = len(data.x_test)
    for i in range(0, n, chunk):
        x, y = data.x_test[i:i + chunk], data.y_test[i:i + chunk]
        with policy.autocast(device_type):
            loss, acc = loss_and_metric(model(policy.prepare_input(x)), y, objective)
        total_loss += float(loss) * len(x)
        total_acc += float(acc) * len(x)
    return total_loss / n, total_acc / n


def plain_loop(model: nn.Module, data: Split, steps: int, batch_size: int, lr: float,
               seed: int, precision: str = "32-true") -> nn.Module:
    """The minimal loop a reader would write by hand (Adam, no accumulation, clipping or
    logging): the yardstick for the Trainer's overhead and for its bit-exact test."""
    device_type = data.x_train.device.type
    dtype = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}[precision]
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scaler = torch.amp.GradScaler(device_type, enabled=precision == "16-mixed")
    batches = batch_indices(len(data.x_train), batch_size, seed, data.x_train.device)
    for _, idx in zip(range(steps), batches, strict=False):  # the Trainer's batches
        with matmul16(dtype or torch.float32, device_type):  # as the Trainer does
            with torch.autocast(device_type, dtype=dtype) if dtype else contextlib.nullcontext():
                logits = model(data.x_train[idx])
                loss = F.cross_entropy(logits.flatten(0, -2), data.y_train[idx].flatten())
            scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
    return model


def _grad_norm(params: list[nn.Parameter], clip_norm: float | None) -> float:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    if clip_norm is not None:
        return float(torch.nn.utils.clip_grad_norm_(params, clip_norm))
    return float(torch.nn.utils.get_total_norm(grads))


def _stalled(params: list[nn.Parameter], before: list[torch.Tensor]) -> float:
    """Share of weights with a nonzero gradient that the step did not move to a new finite
    value (left exactly unchanged, or turned into inf/NaN)."""
    moved = wanted = 0
    for p, old in zip(params, before, strict=True):
        if p.grad is None:
            continue
        has_grad = p.grad != 0  # NaN gradients count as wanting a move too
        new = p.detach()
        wanted += int(has_grad.sum())
        moved += int((has_grad & (new != old) & torch.isfinite(new)).sum())
    return 1.0 - moved / wanted if wanted else float("nan")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


__all__ = ["OBJECTIVES", "OPTIMIZERS", "PRECISIONS", "SCALERS", "Trainer", "batch_indices",
           "evaluate", "loss_and_accuracy", "loss_and_metric", "make_optimizer", "plain_loop",
           "steady_seconds_per_step"]
