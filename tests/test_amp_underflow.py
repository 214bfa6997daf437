"""Which gradients a 16-mixed backward pass flushes or overflows, at a given loss scale."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from precisionlab.amp import Trainer
from precisionlab.amp.underflow import COLUMNS, underflow_at_scales, underflow_during_training
from precisionlab.data import mnist1d
from precisionlab.models import MLP


def saturated(target: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A linear classifier with logits (10, -10) on every example: the gradient of the wrong
    logit is about e^-20 / 8 = 2.6e-10 when the target is class 0 (below fp16's smallest
    subnormal, 6e-8) and about 1/8 when it is class 1."""
    model = nn.Sequential(nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[2.5] * 4, [-2.5] * 4]))
        model[0].bias.zero_()
    return model, torch.ones(8, 4), torch.full((8,), target, dtype=torch.int64)


def test_tiny_gradients_flush_without_scaling_and_survive_with_it():
    model, x, y = saturated(0)
    table = underflow_at_scales(model, x, y, [1.0, 2.0**24])
    assert list(table.columns) == COLUMNS
    table = table.set_index("log2_scale")
    assert table.loc[0, "weight_flushed"] == 1.0  # every fp32-nonzero entry became 0
    assert table.loc[0, "weight_flushed_mass"] == 1.0
    assert table.loc[0, "act_flushed"] == 1.0
    assert table.loc[24, "weight_flushed"] == 0.0 and table.loc[24, "act_flushed"] == 0.0
    assert not table["overflow"].any()
    assert table.loc[24, "grad_rel_error"] < 1e-2 < table.loc[0, "grad_rel_error"]
    # fp32 rounds p0 = 1 - 2e-9 to 1: only the wrong class row (4 weights, 1 bias) is nonzero
    assert table.loc[0, "weight_nonzero_fp32"] == 5


def test_large_scales_overflow_and_are_flagged():
    model, x, y = saturated(1)  # gradients of about 1/8 (logits) and 1 (weights)
    table = underflow_at_scales(model, x, y, [1.0, 2.0**20]).set_index("log2_scale")
    assert not table.loc[0, "overflow"] and math.isfinite(table.loc[0, "grad_rel_error"])
    assert table.loc[20, "overflow"] and table.loc[20, "weight_nonfinite"] > 0
    assert math.isnan(table.loc[20, "grad_rel_error"])


def test_leaves_weights_and_grads_as_they_were():
    torch.manual_seed(0)
    model = MLP([6, 16, 3])
    x, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 1])
    model(x).sum().backward()
    before = [(p.detach().clone(), p.grad.clone()) for p in model.parameters()]
    table = underflow_at_scales(model, x, y, [1.0, 256.0])
    assert len(table) == 2
    for p, (w, g) in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, w) and torch.equal(p.grad, g)


def test_fp32_reference_agrees_with_itself_at_scale_one_in_bf16():
    # bf16 has fp32's exponent range: nothing that fp32 keeps nonzero may flush at any scale
    # here, except through rounding of the forward pass (none on this tiny exact example).
    model, x, y = saturated(0)
    table = underflow_at_scales(model, x, y, [1.0], dtype=torch.bfloat16)
    assert table.loc[0, "weight_flushed"] == 0.0


def test_training_run_is_the_trainers_32_true_run():
    data = mnist1d(0, n_samples=400)
    torch.manual_seed(0)
    ours, theirs = MLP([40, 32, 10]), MLP([40, 32, 10])
    theirs.load_state_dict(ours.state_dict())
    table = underflow_during_training(ours, data, steps=12, checkpoints=[0, 5, 12],
                                      scales=[1.0, 2.0**8], batch_size=16, lr=1e-3, seed=3)
    Trainer(precision="32-true", steps=12, batch_size=16, lr=1e-3, seed=3, progress=False,
            eval_every=None).fit(theirs, data)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)
    assert list(table.columns) == ["step", *COLUMNS]
    assert table["step"].tolist() == [0, 0, 5, 5, 12, 12]
    assert table.groupby("step")["loss"].nunique().eq(1).all()  # one fp32 loss per checkpoint


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"scales": []}, r"^scales: give at least one"),
    ({"scales": [0.0]}, r"^scales: every scale must be a finite number > 0"),
    ({"scales": [math.inf]}, r"^scales: every scale"),
])
def test_bad_scales_are_clear_errors(kwargs, message):
    model, x, y = saturated(0)
    with pytest.raises(ValueError, match=message):
        underflow_at_scales(model, x, y, **kwargs)


def test_fp16_model_is_a_clear_error():
    model, x, y = saturated(0)
    with pytest.raises(ValueError, match=r"^model: needs fp32 parameters"):
        underflow_at_scales(model.half(), x.half(), y, [1.0])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"checkpoints": [0, 11]}, r"^checkpoints: must be a non-empty list of steps from 0 to 10"),
    ({"checkpoints": []}, r"^checkpoints:"),
    ({"batch_size": 10_000}, r"^batch_size: must be an integer from 1 to 320"),
    ({"steps": -1}, r"^steps: must be an integer >= 0"),
])
def test_bad_training_arguments_are_clear_errors(kwargs, message):
    args = {"steps": 10, "checkpoints": [0], "scales": [1.0], "batch_size": 8} | kwargs
    with pytest.raises(ValueError, match=message):
        underflow_during_training(MLP([40, 10]), mnist1d(0, n_samples=400), **args)
