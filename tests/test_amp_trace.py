"""trace_dtypes: the dtype each aten op ran in, and whether the autograd engine ran it."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from precisionlab.amp import summarize_dtypes, trace_dtypes
from precisionlab.amp.trace import short_dtype

FLOATS = {"fp64", "fp32", "fp16", "bf16"}


def mlp_step(autocast_dtype=None):
    """A Linear->ReLU->Linear->cross_entropy step, and the model, for tracing."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x, y = torch.randn(5, 8), torch.randint(0, 4, (5,))

    def step():
        with torch.autocast("cpu", dtype=autocast_dtype or torch.bfloat16,
                            enabled=autocast_dtype is not None):
            loss = F.cross_entropy(model(x), y)
        loss.backward()

    return step, model


def floats_in(row):
    return {d for d in row.in_dtypes.split(",") + [row.out_dtype] if d in FLOATS}


def test_columns_and_order():
    step, _ = mlp_step()
    df = trace_dtypes(step)
    assert list(df.columns) == ["order", "op", "phase", "in_dtypes", "out_dtype"]
    assert list(df.order) == list(range(len(df)))
    assert set(df.phase) == {"forward", "backward"}


@pytest.mark.parametrize("dtype, name", [(torch.bfloat16, "bf16"), (torch.float16, "fp16")])
def test_autocast_matmuls_run_in_low_precision(dtype, name):
    step, model = mlp_step(dtype)
    df = trace_dtypes(step)
    fwd = df[df.phase == "forward"]
    matmuls = fwd[fwd.op.isin(["aten.addmm.default", "aten.mm.default"])]
    assert len(matmuls) == 2
    assert all(r.in_dtypes == f"{name},{name},{name}" and r.out_dtype == name
               for r in matmuls.itertuples())
    casts = fwd[fwd.op == "aten._to_copy.default"]
    assert ((casts.in_dtypes == "fp32") & (casts.out_dtype == name)).sum() == 5  # x, W, b, W, b

    bwd = df[df.phase == "backward"]
    assert (bwd.op == "aten.mm.default").sum() >= 3  # grad of input and of both weights
    assert all(floats_in(r) == {name} for r in bwd[bwd.op == "aten.mm.default"].itertuples())
    # Backward ops come after every forward op: the engine runs once fn calls backward.
    assert fwd.order.max() < bwd.order.min()
    # The fp32 master weights receive fp32 gradients: autograd casts back through _to_copy.
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())
    assert ((bwd.op == "aten._to_copy.default") & (bwd.out_dtype == "fp32")).sum() == 4


def test_without_autocast_everything_is_fp32():
    step, model = mlp_step()
    df = trace_dtypes(step)
    assert set().union(*(floats_in(r) for r in df.itertuples())) == {"fp32"}
    assert "aten._to_copy.default" not in set(df.op)
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())


class _CosInBackward(torch.autograd.Function):
    """Identity forward whose backward runs one distinctive op (cos)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * torch.cos(torch.zeros_like(grad))


def test_phase_is_the_autograd_engine_not_a_guess():
    x = torch.randn(3, requires_grad=True)

    def fn():
        with torch.no_grad():
            torch.sin(x)  # forward, even without a graph
        y = (_CosInBackward.apply(x) ** 2).sum()
        (g,) = torch.autograd.grad(y, x, create_graph=True)  # the engine: backward
        g.sum().backward()  # differentiating a backward graph: backward again
        torch.tan(x.grad)  # after backward returns: not backward

    df = trace_dtypes(fn)
    phase = df.groupby("op").phase.agg(set)
    assert phase["aten.sin.default"] == {"forward"}
    assert phase["aten.cos.default"] == {"backward"}
    assert phase["aten.tan.default"] == {"forward"}


def test_summarize_counts_per_phase_op_and_dtypes():
    step, _ = mlp_step(torch.bfloat16)
    df = trace_dtypes(step)
    table = summarize_dtypes(df)
    assert list(table.columns) == ["phase", "op", "in_dtypes", "out_dtype", "count"]
    assert table["count"].sum() == len(df)
    assert list(table.phase) == sorted(table.phase, key=lambda p: p != "forward")
    row = table[(table.phase == "forward") & (table.op == "aten.addmm.default")]
    assert row["count"].tolist() == [2] and row.in_dtypes.tolist() == ["bf16,bf16,bf16"]


def test_empty_trace():
    df = trace_dtypes(lambda: None)
    assert df.empty and list(df.columns) == ["order", "op", "phase", "in_dtypes", "out_dtype"]
    assert summarize_dtypes(df).empty


def test_short_names():
    assert [short_dtype(d) for d in (torch.float64, torch.float32, torch.float16,
                                     torch.bfloat16, torch.int64, torch.bool, torch.uint8)] \
        == ["fp64", "fp32", "fp16", "bf16", "int64", "bool", "uint8"]
