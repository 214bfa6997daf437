"""Which dtype every aten op really runs in: a log of one step, forward and backward.

Autocast decides per op, so reading the model code does not tell you what ran in bf16. A
TorchDispatchMode sits below autocast and autograd and sees each aten op with the tensors it
actually received, casts included.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

if TYPE_CHECKING:  # pragma: no cover
    import pandas

__all__ = ["short_dtype", "summarize_dtypes", "trace_dtypes"]

COLUMNS = ["order", "op", "phase", "in_dtypes", "out_dtype"]

_SHORT = {
    torch.float64: "fp64", torch.float32: "fp32", torch.float16: "fp16",
    torch.bfloat16: "bf16", torch.float8_e4m3fn: "fp8_e4m3fn", torch.float8_e5m2: "fp8_e5m2",
    torch.complex64: "c64", torch.complex128: "c128",
}


def short_dtype(dtype: torch.dtype) -> str:
    """fp32, bf16, ... for floats; torch's own name (int64, bool, uint8) otherwise."""
    return _SHORT.get(dtype, str(dtype).removeprefix("torch."))


class _DtypeLog(TorchDispatchMode):
    """Record one row per aten op: its name, phase and the dtypes in and out."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # The autograd engine runs a graph task for backward (and torch.autograd.grad); its
        # id is -1 everywhere else. It is per thread, so it holds on CUDA's backward threads.
        phase = "backward" if torch._C._current_graph_task_id() != -1 else "forward"
        out = func(*args, **kwargs)
        ins = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        self.rows.append({
            "order": len(self.rows),
            "op": str(func),  # "aten.mm.default"
            "phase": phase,
            "in_dtypes": ",".join(short_dtype(t.dtype) for t in ins),
            "out_dtype": short_dtype(outs[0].dtype) if outs else "",
        })
        return out


def trace_dtypes(fn: Callable[[], object]) -> pandas.DataFrame:
    """Run ``fn()`` and return one row per aten op: order, op, phase, in_dtypes, out_dtype.

    ``phase`` is "backward" for ops the autograd engine runs (``loss.backward()``,
    ``torch.autograd.grad``) and "forward" for every other op, optimizer steps included.
    """
    import pandas

    log = _DtypeLog()
    with log:
        fn()
    return pandas.DataFrame(log.rows, columns=COLUMNS)


def summarize_dtypes(df: pandas.DataFrame) -> pandas.DataFrame:
    """Count each (phase, op, in_dtypes, out_dtype) of a trace: forward first, then backward."""
    keys = ["phase", "op", "in_dtypes", "out_dtype"]
    table = df.groupby(keys, sort=False).size().reset_index(name="count")
    return table.sort_values("phase", key=lambda s: s != "forward", kind="stable",
                             ignore_index=True)
