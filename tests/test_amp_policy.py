"""Precision policies: the dtypes each name stands for, and what autocast really produces."""

import pytest
import torch
from torch import nn

from precisionlab.amp import PRECISIONS, Policy, get_policy

EXPECTED = {  # name: (param_dtype, compute_dtype, mixed)
    "64-true": (torch.float64, torch.float64, False),
    "32-true": (torch.float32, torch.float32, False),
    "16-mixed": (torch.float32, torch.float16, True),
    "bf16-mixed": (torch.float32, torch.bfloat16, True),
    "16-true": (torch.float16, torch.float16, False),
    "bf16-true": (torch.bfloat16, torch.bfloat16, False),
}


def test_precisions_are_the_lightning_names():
    assert PRECISIONS == tuple(EXPECTED)


@pytest.mark.parametrize("name", PRECISIONS)
def test_policy_dtypes(name):
    p = get_policy(name)
    assert (p.name, p.param_dtype, p.compute_dtype, p.mixed) == (name, *EXPECTED[name])
    assert p.needs_loss_scaling == (name == "16-mixed")


def test_get_policy_passes_a_policy_through():
    custom = Policy("mine", torch.float32, torch.bfloat16, mixed=True)
    assert get_policy(custom) is custom


def test_unknown_name_lists_all_six():
    with pytest.raises(ValueError) as err:
        get_policy("fp16")
    assert str(err.value) == ("precision: unknown 'fp16'; known: 64-true, 32-true, 16-mixed, "
                              "bf16-mixed, 16-true, bf16-true")


@pytest.mark.parametrize("name", PRECISIONS)
def test_prepare_model_and_input(name):
    p = get_policy(name)
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 3))
    model.register_buffer("steps", torch.zeros((), dtype=torch.int64))
    assert p.prepare_model(model) is model
    assert {t.dtype for t in model.parameters()} == {p.param_dtype}
    assert model.steps.dtype == torch.int64  # integer buffers are never cast

    x = torch.randn(2, 4)
    ids = torch.randint(0, 10, (2, 5))
    assert p.prepare_input(ids) is ids
    assert p.prepare_input(x).dtype == (torch.float32 if p.mixed else p.param_dtype)


@pytest.mark.parametrize("name", PRECISIONS)
def test_forward_dtypes_on_cpu(name):
    p = get_policy(name)
    model = p.prepare_model(nn.Linear(4, 3))
    x = p.prepare_input(torch.randn(2, 4))
    with p.autocast(x.device.type):
        out = model(x)
    assert out.dtype == p.compute_dtype
    assert model.weight.dtype == p.param_dtype  # mixed: fp32 master weights stay fp32


def test_bf16_mixed_keeps_fp32_parameters_and_grads():
    p = get_policy("bf16-mixed")
    model = p.prepare_model(nn.Linear(4, 3))
    with p.autocast("cpu"):
        out = model(torch.randn(2, 4))
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert model.weight.dtype == model.weight.grad.dtype == torch.float32


def test_autocast_is_a_no_op_for_true_precisions():
    with get_policy("32-true").autocast("cpu"):
        assert not torch.is_autocast_enabled("cpu")
    with get_policy("bf16-mixed").autocast("cpu"):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
