"""The anatomy of one training step: the dtype of every tensor a precision policy touches.

Complements `trace_dtypes` (which lists ops): here the tensors a reader asks about, namely
activations, activation gradients, weight gradients as produced and as stored, master weights,
optimizer state and the tensors `optimizer.step()` itself reads and writes, after one real
optimizer step; what autocast returns from each op it lowers (`autocast_results`); and, over a
training run, which updates would be lost if they were applied in 16 bits (`half_update_losses`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pandas as pd
import torch
from torch import nn
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from precisionlab.amp.emulation import applied_in
from precisionlab.amp.policy import get_policy
from precisionlab.amp.trace import short_dtype as short
from precisionlab.amp.trace import trace_dtypes
from precisionlab.amp.trainer import loss_and_accuracy, make_optimizer

FLOATS = {"fp64", "fp32", "fp16", "bf16"}


def step_dtypes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str,
                optimizer: str = "adam", lr: float = 1e-3) -> pd.DataFrame:
    """Run one optimizer step of `model` at `precision` and report each tensor kind's dtypes
    (a one-step probe, not a training loop: training runs through `Trainer`).

    Rows: input, each layer's output (activation), the gradient reaching each layer's output
    (activation gradient), each parameter's gradient as stored in `.grad`, the tensors the
    aten ops of `optimizer.step()` read (operands) and write (results), the parameters (master
    weights), the loss, and every optimizer-state tensor. Step operands and results count
    tensors of more than one element: Adam's scalar step counter is fp32 in every policy.
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
        with _StepLog() as log:
            opt.step()
        rows += [{"tensor": f"optimizer.step() {kind}", "where": "aten ops", "dtype": dtype}
                 for kind, dtype in log.seen]
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


class _StepLog(TorchDispatchMode):
    """The floating dtypes of the tensors (more than one element) each aten op reads and
    writes: (kind, dtype) pairs, kind 'operands' or 'results', in order of first sight."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[tuple[str, str], None] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for kind, tree in (("operands", (args, kwargs)), ("results", out)):
            for t in tree_leaves(tree):
                if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel() > 1:
                    self.seen[(kind, short(t.dtype))] = None
        return out


def _probe_ops() -> dict[str, object]:
    import torch.nn.functional as F

    w2, w3, zero = torch.randn(8, 16), torch.randn(8, 4, 3), torch.zeros(4, 16)
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
        "mse_loss": lambda x: F.mse_loss(x, zero.to(x)),  # target made outside: no factory op
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


def _is_view_or_cast(op: str) -> bool:
    """True for aten ops that compute nothing: casts and copies, and views ('aten.t.default')."""
    if op in ("aten._to_copy.default", "aten.copy_.default", "aten.clone.default"):
        return True
    parts = op.split(".")
    if parts[0] != "aten" or len(parts) != 3:
        return False
    return bool(getattr(getattr(torch.ops.aten, parts[1]), parts[2]).is_view)


def autocast_results(device_type: str, dtype: torch.dtype) -> pd.DataFrame:
    """What each probe op computes in and returns under `torch.autocast(device_type, dtype)`,
    for an fp32 input and for an input already in `dtype`, from a dispatch trace of the call.

    Columns: op, input, computed (the dtypes of the outputs of the aten ops that compute, i.e.
    neither casts nor views: what the arithmetic ran in), output (the dtype returned)."""
    rows = []
    for name, op in _probe_ops().items():
        for in_dtype in (torch.float32, dtype):
            x = torch.randn(4, 16, device=device_type, dtype=in_dtype)
            box: list[torch.Tensor] = []
            with torch.autocast(device_type, dtype=dtype):
                trace = trace_dtypes(lambda x=x, op=op, box=box: box.append(op(x)))
            work = trace[trace.out_dtype.isin(FLOATS) & ~trace.op.map(_is_view_or_cast)]
            rows.append({"op": name, "input": short(in_dtype),
                         "computed": ", ".join(dict.fromkeys(work.out_dtype)),
                         "output": short(box[0].dtype)})
    return pd.DataFrame(rows)


@contextlib.contextmanager
def half_update_losses(dtype: torch.dtype = torch.float16) -> Iterator[list[float]]:
    """Within this context every optimizer step (any optimizer: torch's global step hooks)
    appends to the yielded list the share of weights with a nonzero gradient whose update would
    be lost had it been applied in `dtype` and cast back (`emulation.applied_in`): the step's
    real update, added in `dtype` to the weight rounded to `dtype`, leaves that weight where it
    was or makes it inf/NaN. The real step itself is not changed."""
    losses: list[float] = []
    before: dict[int, torch.Tensor] = {}

    def pre(optimizer, args, kwargs) -> None:
        before.clear()
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    before[id(p)] = p.detach().clone()

    def post(optimizer, args, kwargs) -> None:
        lost = wanted = 0
        for group in optimizer.param_groups:
            for p in group["params"]:
                if id(p) not in before:
                    continue
                old, has_grad = before[id(p)], p.grad != 0
                new = applied_in(old, p.detach(), dtype)
                moved = (new != old.to(dtype).to(old.dtype)) & torch.isfinite(new)
                wanted += int(has_grad.sum())
                lost += int((has_grad & ~moved).sum())
        losses.append(lost / wanted if wanted else float("nan"))

    handles = [register_optimizer_step_pre_hook(pre), register_optimizer_step_post_hook(post)]
    try:
        yield losses
    finally:
        for h in handles:
            h.remove()
