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
