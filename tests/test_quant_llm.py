"""quant.llm: dynamic int8 activations, SmoothQuant, the LLM.int8()-style split, Q4_1 grids."""

import pytest
import torch
from torch import nn

from precisionlab.quant import (
    LLMQuantLinear,
    QuantSpec,
    block_minmax_grid,
    distinct_per_block,
    fake_int8_dynamic,
    input_absmax,
    quantize_llm_,
    quantize_tensor,
    smooth_scales,
)


def test_per_token_int8_matches_torch_per_channel_reference():
    x = torch.randn(5, 16) * torch.arange(1, 6).float()[:, None]
    scale = x.abs().amax(1) / 127
    ref = torch.fake_quantize_per_channel_affine(x, scale, torch.zeros(5, dtype=torch.int32), 0,
                                                 -127, 127)
    torch.testing.assert_close(fake_int8_dynamic(x, "per_token"), ref, rtol=0, atol=1e-6)
    tensor = fake_int8_dynamic(x, "per_tensor")
    assert torch.unique(torch.round(tensor / (x.abs().max() / 127))).numel() <= 255
    with pytest.raises(ValueError, match="granularity"):
        fake_int8_dynamic(x, "per_group")


def test_smoothing_is_exact_in_float_and_shrinks_activation_outliers():
    torch.manual_seed(0)
    w, x = torch.randn(8, 6), torch.randn(10, 6)
    x[:, 2] *= 50  # an outlier channel
    s = smooth_scales(x.abs().amax(0), w, 0.5)
    torch.testing.assert_close((x / s) @ (w * s).T, x @ w.T, rtol=1e-5, atol=1e-4)
    ratio = (x / s).abs().amax(0)
    assert ratio.max() / ratio.median() < x.abs().amax(0).max() / x.abs().amax(0).median()
    with pytest.raises(ValueError, match="alpha"):
        smooth_scales(x.abs().amax(0), w, 1.5)
    with pytest.raises(ValueError, match="act_absmax"):
        smooth_scales(torch.ones(3), w, 0.5)


def test_llm_quant_linear_int8_path_and_outlier_split():
    torch.manual_seed(1)
    lin = nn.Linear(6, 4)
    x = torch.randn(3, 6)
    x[:, 1] = 40.0
    plain = LLMQuantLinear(lin, "per_token")
    wq = quantize_tensor(lin.weight.detach(), QuantSpec(granularity="per_channel")).dequantize()
    torch.testing.assert_close(plain(x), fake_int8_dynamic(x) @ wq.T + lin.bias)
    split = LLMQuantLinear(lin, "per_token", outlier_threshold=6.0)
    out = split(x)
    assert split.outlier_channels == 1
    x_in = x.clone()
    x_in[:, 1] = 0
    expect = fake_int8_dynamic(x_in) @ wq.T + lin.bias + x[:, 1:2] @ lin.weight[:, 1:2].T
    torch.testing.assert_close(out, expect.detach())
    # the split keeps the outlier channel exact: closer to float than the plain int8 path
    exact = lin(x)
    assert (out - exact).abs().max() < (plain(x) - exact).abs().max()
    everything = LLMQuantLinear(lin, "per_token", outlier_threshold=1e-9)
    torch.testing.assert_close(everything(x), exact.detach())


def test_quantize_llm_swaps_filtered_linears_and_checks_smoothquant_inputs():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    data = torch.randn(3, 5, 4)
    absmax = input_absmax(model, data)
    assert set(absmax) == {"0", "2"} and absmax["0"].shape == (4,)
    torch.testing.assert_close(absmax["0"], data.abs().amax((0, 1)))
    with pytest.raises(ValueError, match="act_absmax"):
        quantize_llm_(model, smooth_alpha=0.5)
    quantize_llm_(model, act="per_tensor", smooth_alpha=0.5, act_absmax=absmax,
                  filter_fn=lambda m, name: name == "0")
    assert isinstance(model[0], LLMQuantLinear) and isinstance(model[2], nn.Linear)
    with pytest.raises(ValueError, match="Linear"):
        quantize_llm_(nn.Sequential(nn.ReLU()))


def test_block_grid_is_lossless_on_a_q4_1_tensor_and_lossy_otherwise():
    torch.manual_seed(2)
    d = torch.rand(64, 1) * 0.01 + 1e-3
    m = -torch.rand(64, 1) * 0.05
    q = torch.randint(0, 16, (64, 32)).float()
    q[:, 0], q[:, 1] = 0, 15  # each block uses its whole range, as Q4_1's encoder makes it
    w = (q * d + m).reshape(32, 64)
    assert int(distinct_per_block(w).max()) <= 16
    torch.testing.assert_close(block_minmax_grid(w), w, rtol=0, atol=1e-6)
    g = torch.randn(32, 64)
    assert int(distinct_per_block(g).min()) == 32
    assert (block_minmax_grid(g) - g).abs().max() > 1e-3
    with pytest.raises(ValueError, match="block"):
        block_minmax_grid(torch.randn(3, 5))
