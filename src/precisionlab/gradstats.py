"""Where real gradients live: sample activation gradients during fp32 training.

A small replica of Fig. 3 of Micikevicius et al. 2018 (arXiv 1710.03740): the gradients of the
loss with respect to each layer's output, collected over training, set against the range of
fp16, bf16 and fp8 to see how many would flush to zero without loss scaling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from precisionlab.amp.trainer import Trainer
from precisionlab.data import Split
from precisionlab.formats import classify


@dataclass(frozen=True)
class GradientSample:
    """Activation gradients (flat, fp32, zeros included) and how the run that made them went."""

    values: torch.Tensor
    steps_recorded: list[int]
    final_train_loss: float
    test_accuracy: float


def activation_gradients(model: nn.Module, data: Split, steps: int, batch_size: int,
                         lr: float, seed: int, record_every: int) -> GradientSample:
    """Train `model` in fp32 with Adam on `data` (the library's `Trainer` at 32-true: its
    batches and updates) and record dL/d(output) of every Linear layer every `record_every`
    steps and at the last (the loss is the batch mean, as in ordinary training)."""
    if not 1 <= batch_size <= len(data.x_train):
        raise ValueError(f"batch_size: must be from 1 to {len(data.x_train)} (the training set); "
                         f"got {batch_size}")
    if steps < 1 or record_every < 1:
        raise ValueError(f"steps and record_every: must be >= 1; got {steps}, {record_every}")
    torch.manual_seed(seed)
    recorded = [s for s in range(steps) if s % record_every == 0 or s == steps - 1]
    wanted, captured = set(recorded), []
    step = -1  # the Trainer runs one forward pass per step (no accumulation, no evaluation)

    def count_step(_module: nn.Module, _inputs: tuple) -> None:
        nonlocal step
        step += 1

    def keep_output_grad(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        if step in wanted:
            output.register_hook(lambda grad: captured.append(grad.detach().flatten().clone()))

    handles = [model.register_forward_pre_hook(count_step)]
    handles += [m.register_forward_hook(keep_output_grad)
                for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        Trainer(precision="32-true", optimizer="adam", lr=lr, steps=steps,
                batch_size=batch_size, eval_every=None, device=data.x_train.device.type,
                seed=seed, progress=False).fit(model, data)
    finally:
        for handle in handles:
            handle.remove()
    loss_fn = nn.CrossEntropyLoss()
    with torch.no_grad():
        train_loss = loss_fn(model(data.x_train), data.y_train).item()
        accuracy = (model(data.x_test).argmax(1) == data.y_test).float().mean().item()
    return GradientSample(torch.cat(captured), recorded, train_loss, accuracy)


def underflow_table(values: torch.Tensor, formats: Sequence[str],
                    log2_scales: Sequence[int]) -> pd.DataFrame:
    """For each format and loss scale 2**k: fractions of the nonzero gradients that flush to
    zero, land in the subnormal range, stay normal, or overflow, once scaled and rounded."""
    rows = []
    for fmt in formats:
        for k in log2_scales:
            rows.append({"format": fmt, "log2_scale": k, **classify(values, fmt, 2.0**k)})
    return pd.DataFrame(rows)
