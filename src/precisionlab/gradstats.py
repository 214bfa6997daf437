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
    """Train `model` in fp32 with Adam on `data` and record dL/d(output) of every Linear layer
    every `record_every` steps (the loss is the batch mean, as in ordinary training)."""
    if not 1 <= batch_size <= len(data.x_train):
        raise ValueError(f"batch_size: must be from 1 to {len(data.x_train)} (the training set); "
                         f"got {batch_size}")
    if steps < 1 or record_every < 1:
        raise ValueError(f"steps and record_every: must be >= 1; got {steps}, {record_every}")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    captured: list[torch.Tensor] = []
    recording = False

    def keep_output_grad(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        if recording:
            output.register_hook(lambda grad: captured.append(grad.detach().flatten().clone()))

    handles = [m.register_forward_hook(keep_output_grad)
               for m in model.modules() if isinstance(m, nn.Linear)]
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    recorded = []
    try:
        for step in range(steps):
            recording = step % record_every == 0 or step == steps - 1
            idx = torch.randint(len(data.x_train), (batch_size,), generator=generator)
            loss = loss_fn(model(data.x_train[idx]), data.y_train[idx])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if recording:
                recorded.append(step)
    finally:
        for handle in handles:
            handle.remove()
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
