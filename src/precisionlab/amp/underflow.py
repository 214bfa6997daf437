"""Which gradients a 16-bit backward pass loses, at a given loss scale.

For one model state and one batch: the fp32 (32-true) gradients are the reference; the same
forward and backward under fp16 autocast with the loss multiplied by a scale S, then divided
by S in fp32, is compared with them entry by entry. An entry that is nonzero in fp32 but exactly
zero at scale S has been flushed (underflow, or a ReLU gate flipped by fp16 rounding in the
forward pass, which no scale can undo); an inf/NaN entry means the scaled gradient overflowed and
a loss scaler would skip the step. `underflow_during_training` asks these questions at a few
checkpoints of an fp32 Adam run whose batches and updates are the `Trainer`'s for 32-true.
(Micikevicius et al., Mixed Precision Training, https://arxiv.org/abs/1710.03740.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn

from precisionlab.amp.trainer import batch_indices, loss_and_accuracy
from precisionlab.data import Split

__all__ = ["COLUMNS", "underflow_at_scales", "underflow_during_training"]

COLUMNS = ["scale", "log2_scale", "loss", "weight_entries", "weight_nonzero_fp32",
           "weight_flushed", "weight_flushed_mass", "weight_nonfinite", "act_entries",
           "act_nonzero_fp32", "act_flushed", "act_flushed_mass", "act_nonfinite", "overflow",
           "grad_rel_error"]


def _gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, scale: float,
               dtype: torch.dtype | None) -> tuple[float, list[torch.Tensor], list[torch.Tensor]]:
    """Loss, parameter gradients (divided by `scale`, fp32) and Linear-output gradients (as
    produced, divided by `scale` in float64) of one forward/backward, under autocast(`dtype`)
    unless `dtype` is None."""
    device_type = x.device.type
    captured: dict[tuple[str, int], torch.Tensor] = {}
    calls: dict[str, int] = {}

    def hook_for(name: str):
        def keep(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            key = (name, calls.get(name, 0))
            calls[name] = key[1] + 1
            if output.requires_grad:
                output.register_hook(lambda g: captured.__setitem__(key, g.detach().clone()))
        return keep

    handles = [m.register_forward_hook(hook_for(name)) for name, m in model.named_modules()
               if isinstance(m, nn.Linear)]
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = None
    try:
        with torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss, _ = loss_and_accuracy(model(x), y)
        (loss.float() * torch.tensor(scale, dtype=torch.float32, device=x.device)).backward()
    finally:
        for h in handles:
            h.remove()
    inv = torch.tensor(1.0 / scale, dtype=torch.float32)
    grads = [(p.grad * inv.to(p.grad.device)) if p.grad is not None else torch.zeros_like(p)
             for p in params]
    for p in params:
        p.grad = None
    acts = [captured[k].double() / scale for k in sorted(captured)]
    return float(loss.detach()), grads, acts


def _flushed(low: list[torch.Tensor], ref: list[torch.Tensor]
             ) -> tuple[int, int, float, float, float]:
    """(entries, nonzero in ref, share of those that are exactly 0 in low, share of ref's L1
    norm that sits in those entries, share of all entries of low that are inf/NaN)."""
    total = sum(r.numel() for r in ref)
    nonzero = flushed = nonfinite = 0
    mass = lost = 0.0
    for lo, r in zip(low, ref, strict=True):
        want = r != 0
        gone = want & (lo == 0)
        nonzero += int(want.sum())
        flushed += int(gone.sum())
        mass += float(r.double().abs().sum())
        lost += float(r.double().abs()[gone].sum())
        nonfinite += int((~torch.isfinite(lo)).sum())
    return (total, nonzero, flushed / nonzero if nonzero else math.nan,
            lost / mass if mass else math.nan, nonfinite / total if total else math.nan)


def underflow_at_scales(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                        scales: Sequence[float], dtype: torch.dtype = torch.float16
                        ) -> pd.DataFrame:
    """Compare the 16-mixed gradients at each loss scale with the fp32 gradients, same state.

    `model` must hold fp32 parameters (its state and `.grad` are left as they were). For each
    scale S, one row (columns `COLUMNS`): the fp32 loss; over all parameter-gradient entries
    (weights and biases), the count, the count nonzero in fp32, the share of those that are
    exactly zero under autocast(`dtype`) at scale S after dividing by S (`weight_flushed`), the
    share of the fp32 gradient's L1 norm those entries carry (`weight_flushed_mass`), the
    share of entries that are inf/NaN (`weight_nonfinite`); the same for the gradients of every
    Linear layer's output (`act_*`, taken in the autocast dtype before any unscaling); `overflow`
    (any inf/NaN, so a scaler would skip the step); and `grad_rel_error`, the relative L2
    distance of the finite unscaled gradient from the fp32 one (NaN when overflowed).
    """
    if not scales:
        raise ValueError("scales: give at least one loss scale")
    for s in scales:
        if isinstance(s, bool) or not isinstance(s, int | float) or not 0 < s < math.inf:
            raise ValueError(f"scales: every scale must be a finite number > 0; got {s!r}")
    if any(p.dtype != torch.float32 for p in model.parameters()):
        raise ValueError("model: needs fp32 parameters (16-mixed keeps fp32 master weights)")
    saved = [p.grad for p in model.parameters()]
    try:
        loss32, g32, a32 = _gradients(model, x, y, 1.0, None)
        ref_norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in g32))
        rows = []
        for s in scales:
            _, g16, a16 = _gradients(model, x, y, float(s), dtype)
            w_total, w_nz, w_fl, w_mass, w_nf = _flushed(g16, g32)
            a_total, a_nz, a_fl, a_mass, a_nf = _flushed(a16, a32)
            overflow = bool(w_nf > 0 or a_nf > 0)
            if overflow:
                rel = math.nan
            else:
                diff = math.sqrt(sum(float(((lo.double() - r.double()) ** 2).sum())
                                     for lo, r in zip(g16, g32, strict=True)))
                rel = diff / ref_norm if ref_norm else math.nan
            rows.append({"scale": float(s), "log2_scale": math.log2(s), "loss": loss32,
                         "weight_entries": w_total, "weight_nonzero_fp32": w_nz,
                         "weight_flushed": w_fl, "weight_flushed_mass": w_mass,
                         "weight_nonfinite": w_nf, "act_entries": a_total,
                         "act_nonzero_fp32": a_nz, "act_flushed": a_fl,
                         "act_flushed_mass": a_mass, "act_nonfinite": a_nf, "overflow": overflow,
                         "grad_rel_error": rel})
    finally:
        for p, g in zip(model.parameters(), saved, strict=True):
            p.grad = g
    return pd.DataFrame(rows, columns=COLUMNS)


def underflow_during_training(model: nn.Module, data: Split, steps: int, checkpoints: Sequence[int],
                              scales: Sequence[float], batch_size: int = 64, lr: float = 1e-3,
                              seed: int = 0, dtype: torch.dtype = torch.float16) -> pd.DataFrame:
    """Train `model` in fp32 with Adam as `Trainer(precision="32-true")` does (its
    `batch_indices`, the same updates) and, before the update of each step in `checkpoints`
    (0 = the initial weights), run `underflow_at_scales` on that step's batch. One row per
    (checkpoint, scale), with a `step` column in front; the model ends trained for `steps` steps.
    Its own loop, not `Trainer.fit`: the probe must run between a step's batch and its update,
    a point the Trainer does not expose.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps: must be an integer >= 0; got {steps!r}")
    bad = [c for c in checkpoints if isinstance(c, bool) or not isinstance(c, int)
           or not 0 <= c <= steps]
    if not checkpoints or bad:
        raise ValueError(f"checkpoints: must be a non-empty list of steps from 0 to {steps}; "
                         f"got {list(checkpoints)!r}")
    n = len(data.x_train)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= n:
        raise ValueError(f"batch_size: must be an integer from 1 to {n} (the training set); "
                         f"got {batch_size!r}")
    device = next(model.parameters()).device
    data = data.to(str(device))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    batches = batch_indices(n, batch_size, seed, device)  # the Trainer's batch stream
    wanted, tables = set(checkpoints), []
    for step in range(steps + 1):
        idx = next(batches)
        x, y = data.x_train[idx], data.y_train[idx]
        model.train()
        if step in wanted:
            tables.append(underflow_at_scales(model, x, y, scales, dtype).assign(step=step))
        if step == steps:
            break
        loss, _ = loss_and_accuracy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    table = pd.concat(tables, ignore_index=True)
    return table[["step", *COLUMNS]]
