"""The dtype of each tensor kind in one real step, per precision policy."""

from __future__ import annotations

import pytest
import torch

from precisionlab.amp.anatomy import step_dtypes, summarize
from precisionlab.data import digits
from precisionlab.models import MLP

DATA = digits(0)


def kinds(precision: str) -> dict[str, str]:
    torch.manual_seed(0)
    table = step_dtypes(MLP([64, 16, 10]), DATA.x_train[:8], DATA.y_train[:8], precision)
    return summarize(table)["dtypes"].to_dict()


@pytest.mark.parametrize("precision, low", [("bf16-mixed", "bf16"), ("16-mixed", "fp16")])
def test_mixed_computes_low_and_keeps_fp32_master_weights_gradients_and_state(precision, low):
    k = kinds(precision)
    assert k["activation"] == k["activation gradient"] == low
    assert k["weight gradient (.grad)"] == k["weight (master copy)"] == "fp32"
    assert k["optimizer state exp_avg"] == k["optimizer state exp_avg_sq"] == "fp32"
    assert k["input"] == "fp32"


def test_true_casts_everything_including_optimizer_state():
    k = kinds("16-true")
    assert set(k.values()) == {"fp16"}


def test_autocast_probe_lowers_matmuls_and_keeps_losses_in_fp32_on_cpu():
    from precisionlab.amp.anatomy import autocast_probe

    table = autocast_probe("cpu", torch.bfloat16)
    assert table.loc[["linear", "matmul", "conv1d"], "fp32 input"].eq("bf16").all()
    assert table.loc[["softmax", "exp", "layer_norm"], "fp32 input"].eq("fp32").all()
    assert table.loc[["cross_entropy", "mse_loss"], "bf16 input"].eq("fp32").all()
    # CPU autocast leaves softmax in the dtype it is given (CUDA autocast would run it in fp32)
    assert table.loc["softmax", "bf16 input"] == "bf16"


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_amp_optimizer_step_reads_and_writes_only_fp32(precision):
    k = kinds(precision)
    assert k["optimizer.step() operands"] == k["optimizer.step() results"] == "fp32"


def test_autocast_results_show_lowered_ops_returning_16_bit():
    from precisionlab.amp.anatomy import autocast_results

    t = autocast_results("cpu", torch.float16).set_index(["op", "input"])
    assert t.loc[("linear", "fp32"), ["computed", "output"]].tolist() == ["fp16", "fp16"]
    assert t.loc[("relu", "fp32"), ["computed", "output"]].tolist() == ["fp32", "fp32"]
    # a loss on autocast's fp32 list computes in fp32 even from a 16-bit input
    assert t.loc[("cross_entropy", "fp16"), ["computed", "output"]].tolist() == ["fp32", "fp32"]


def test_half_update_losses_count_updates_below_half_an_fp16_ulp():
    from precisionlab.amp.anatomy import half_update_losses

    w = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.SGD([w], lr=1.0)
    w.grad = torch.tensor([1e-4, 1e-2, 0.0, -1e-4])  # wanted: 3; below 2^-11 at 1: 2
    with half_update_losses(torch.float16) as lost:
        opt.step()
    assert lost == [pytest.approx(2 / 3)]
    assert w.detach()[0] == torch.tensor(1.0) - 1e-4  # the real step is unchanged (fp32)
    opt.step()  # outside the context: nothing recorded
    assert len(lost) == 1
