"""The anatomy of one training step: the dtype of every tensor a precision policy touches.

Complements `trace_dtypes` (which lists ops): here the tensors a reader asks about, namely
activations, activation gradients, weight gradients as produced and as stored, master weights
and optimizer state, after one real optimizer step.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from precisionlab.amp.policy import get_policy
from precisionlab.amp.trace import short_dtype as short
from precisionlab.amp.trainer import loss_and_accuracy, make_optimizer


def step_dtypes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str,
                optimizer: str = "adam", lr: float = 1e-3) -> pd.DataFrame:
    """Run one optimizer step of `model` at `precision` and report each tensor kind's dtypes
    (a one-step probe, not a training loop: training runs through `Trainer`).

    Rows: input, each layer's output (activation), the gradient reaching each layer's output
    (activation gradient), each parameter's gradient as stored in `.grad`, the parameters
    (master weights), the loss, and every optimizer-state tensor.
    """
    policy = get_policy(precision)
    model = policy.prepare_model(model)
    device_type = next(model.parameters()).device.type
    rows: list[dict[str, str]] = []
    hooks = []
    for name, module in model.named_modules():
        if not list(module.children()):  # leaf layers only
            def record(mod, inputs, output, name=name):
                rows.append({"tensor": "activation", "where": name or type(mod).__name__,
                             "dtype": short(output.dtype)})
                if output.requires_grad:
                    output.register_hook(lambda g, name=name: rows.append(
                        {"tensor": "activation gradient", "where": name, "dtype": short(g.dtype)}))
            hooks.append(module.register_forward_hook(record))
    opt = make_optimizer(optimizer, model.parameters(), lr)
    try:
        x_in = policy.prepare_input(x)
        rows.append({"tensor": "input", "where": "batch", "dtype": short(x_in.dtype)})
        with policy.autocast(device_type):
            loss, _ = loss_and_accuracy(model(x_in), y)
        rows.append({"tensor": "loss", "where": "cross_entropy", "dtype": short(loss.dtype)})
        loss.backward()
        for name, p in model.named_parameters():
            rows.append({"tensor": "weight gradient (.grad)", "where": name,
                         "dtype": short(p.grad.dtype)})
        opt.step()
    finally:
        for h in hooks:
            h.remove()
    for name, p in model.named_parameters():
        rows.append({"tensor": "weight (master copy)", "where": name, "dtype": short(p.dtype)})
        for key, value in opt.state[p].items():
            if torch.is_tensor(value) and value.numel() > 1:
                rows.append({"tensor": f"optimizer state {key}", "where": name,
                             "dtype": short(value.dtype)})
    return pd.DataFrame(rows)


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """One row per tensor kind: the set of dtypes seen (e.g. 'bf16' or 'fp32, bf16')."""
    order = list(dict.fromkeys(table["tensor"]))
    grouped = table.groupby("tensor", sort=False)["dtype"].agg(
        lambda s: ", ".join(sorted(set(s), key=list(s).index)))
    return grouped.reindex(order).to_frame("dtypes")


def _probe_ops() -> dict[str, object]:
    import torch.nn.functional as F

    w2, w3 = torch.randn(8, 16), torch.randn(8, 4, 3)
    return {
        "linear": lambda x: F.linear(x, w2.to(x)),  # weights on the input's device and dtype
        "matmul": lambda x: x @ x.transpose(-1, -2),
        "conv1d": lambda x: F.conv1d(x.reshape(4, 4, 4), w3.to(x)),
        "relu": F.relu,
        "gelu": F.gelu,
        "exp": torch.exp,
        "sum": lambda x: x.sum(-1),
        "mean": lambda x: x.mean(-1),
        "softmax": lambda x: F.softmax(x, -1),
        "log_softmax": lambda x: F.log_softmax(x, -1),
        "layer_norm": lambda x: F.layer_norm(x, x.shape[-1:]),
        "cross_entropy": lambda x: F.cross_entropy(
            x, torch.zeros(len(x), dtype=torch.long, device=x.device)),
        "mse_loss": lambda x: F.mse_loss(x, torch.zeros_like(x)),
    }


def autocast_probe(device_type: str, dtype: torch.dtype) -> pd.DataFrame:
    """Output dtype of common ops under `torch.autocast(device_type, dtype)`, for fp32 inputs
    and for inputs already in `dtype`: autocast's per-op lists, observed rather than quoted."""
    rows = []
    for name, op in _probe_ops().items():
        row = {"op": name}
        for label, in_dtype in (("fp32 input", torch.float32), (f"{short(dtype)} input", dtype)):
            x = torch.randn(4, 16, device=device_type, dtype=in_dtype)
            with torch.autocast(device_type, dtype=dtype):
                row[label] = short(op(x).dtype)
        rows.append(row)
    return pd.DataFrame(rows).set_index("op")
