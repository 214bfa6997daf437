"""FP8/MX training by module swap, against references written with torch's own casts and ops."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from precisionlab.amp import Trainer
from precisionlab.amp.float8 import (
    E2M1,
    E4M3,
    RECIPES,
    Float8Linear,
    Float8Recipe,
    convert_to_float8_training,
    float8_stats,
    keep_first_last,
    mx_scale,
    quantize_blocks,
    quantize_rowwise,
)
from precisionlab.data import digits
from precisionlab.formats import representable_values
from precisionlab.lowbit import mx_scale_exponent
from precisionlab.models import MLP

E4M3_MAX, E5M2_MAX = 448.0, 57344.0


def cast(x: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype, top: float) -> torch.Tensor:
    """The hand reference: saturate x * scale, torch's cast, back to fp32, unscale."""
    return (x * scale).clamp(-top, top).to(dtype).float() / scale


def one_linear(recipe="current", in_features=32, out_features=64, seed=0, **kw):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(in_features, out_features))
    return convert_to_float8_training(model, recipe, **kw)


def test_current_scaling_forward_and_backward_equal_hand_reference():
    model = one_linear()
    layer = model[0]
    assert isinstance(layer, Float8Linear)
    x = torch.randn(3, 5, 32) * 3
    g = torch.randn(3, 5, 64) * 1e-3
    xl = x.clone().requires_grad_(True)
    y = model(xl)
    y.backward(g)
    w, b = layer.weight.detach(), layer.bias.detach()
    x2, g2 = x.reshape(-1, 32), g.reshape(-1, 64)
    xq = cast(x2, E4M3_MAX / x2.abs().max(), torch.float8_e4m3fn, E4M3_MAX)
    wq = cast(w, E4M3_MAX / w.abs().max(), torch.float8_e4m3fn, E4M3_MAX)
    gq = cast(g2, E5M2_MAX / g2.abs().max(), torch.float8_e5m2, E5M2_MAX)
    assert torch.equal(y.detach(), (xq @ wq.t() + b).reshape(3, 5, 64))
    assert torch.equal(xl.grad, (gq @ wq).reshape(3, 5, 32))
    assert torch.equal(layer.weight.grad, gq.t() @ xq)
    assert torch.equal(layer.bias.grad, g2.sum(0))
    assert not torch.equal(xq, x2)  # the rounding did something


def _quantize_ste(t: torch.Tensor, dtype: torch.dtype, top: float) -> torch.Tensor:
    """Per-tensor quantization with a straight-through gradient, from torch ops only."""
    q = cast(t.detach(), top / t.detach().abs().max(), dtype, top)
    return t + (q - t).detach()


@pytest.mark.parametrize("recipe", ["current", "delayed"])
def test_gradients_match_autograd_of_torch_reference(recipe):
    model = one_linear(recipe, 16, 32, seed=1)
    layer = model[0]
    w = layer.weight.detach().clone().requires_grad_(True)
    b = layer.bias.detach().clone().requires_grad_(True)
    x = torch.randn(20, 16)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    loss = (model(xa) ** 2).sum()
    loss.backward()
    y = _quantize_ste(xb, torch.float8_e4m3fn, E4M3_MAX) @ _quantize_ste(
        w, torch.float8_e4m3fn, E4M3_MAX).t()
    y.register_hook(lambda g: cast(g, E5M2_MAX / g.abs().max(), torch.float8_e5m2, E5M2_MAX))
    ((y + b) ** 2).sum().backward()
    assert torch.equal(xa.grad, xb.grad)
    assert torch.equal(layer.weight.grad, w.grad)
    assert torch.equal(layer.bias.grad, b.grad)


def _run_amaxes(recipe: Float8Recipe, amaxes: list[float]) -> tuple[nn.Module, torch.Tensor]:
    pattern = torch.linspace(-1, 1, 64).reshape(8, 8)  # amax exactly 1
    model = one_linear(recipe, 8, 32)
    for a in amaxes:
        model(pattern * a).sum().backward()
    return model, pattern


@pytest.mark.parametrize(("algo", "length", "margin", "expected_amax"), [
    ("max", 2, 0, [1, 1, 4, 4, 2]),
    ("max", 5, 0, [1, 1, 4, 4, 4]),
    ("most_recent", 2, 0, [1, 1, 4, 2, 0.5]),
    ("max", 2, 1, [2, 2, 8, 8, 4]),  # margin 1 halves the scale: as if amax doubled
])
def test_delayed_scaling_history(algo, length, margin, expected_amax):
    recipe = Float8Recipe("delayed", history_len=length, margin=margin, amax_compute_algo=algo)
    model, _ = _run_amaxes(recipe, [1, 4, 2, 0.5, 0.25])
    stats = float8_stats(model)
    got = stats[stats.tensor == "input"].sort_values("step")
    assert got.step.tolist() == [1, 2, 3, 4, 5]
    assert got.amax.tolist() == [1, 4, 2, 0.5, 0.25]  # the amax seen, not the one used
    # step 1 has no history: current scaling (its own amax 1), with the margin still applied
    expected = [E4M3_MAX / a for a in expected_amax]
    assert got.scale.tolist() == pytest.approx(expected, rel=1e-6)


def test_delayed_scaling_saturates_after_a_jump_and_eval_leaves_history_alone():
    model, pattern = _run_amaxes(Float8Recipe("delayed", history_len=4), [1, 4])
    stats = float8_stats(model)
    inputs = stats[stats.tensor == "input"].set_index("step")
    # step 2 is scaled for amax 1 (448 / 1) but holds values up to 4: every |x| * 448 beyond
    # 448 + 16 (half the spacing at 448) saturates
    expected = float(((pattern * 4).abs() * E4M3_MAX > E4M3_MAX + 16).sum()) / 64
    assert inputs.loc[2, "saturated"] == pytest.approx(expected)
    assert 0.5 < expected < 1
    assert inputs.loc[1, "saturated"] == 0
    layer = model[0]
    before = layer.histories["input"].values.clone()
    with torch.no_grad():
        model(pattern * 100)
    model.eval()
    model(pattern * 100)
    assert torch.equal(layer.histories["input"].values, before)
    assert len(float8_stats(model)) == len(stats)  # eval recorded nothing


def test_underflow_share_on_crafted_tensor():
    model = one_linear("current", 8, 32)
    x = torch.tensor([[448.0, 1.0, 2.0**-12, -(2.0**-12), 0.0, 3.0, 0.0, 2.0**-8]])
    model(x).sum().backward()
    stats = float8_stats(model)
    row = stats[stats.tensor == "input"].iloc[0]
    assert row.scale == 1.0 and row.amax == 448.0
    # 6 nonzero entries; 2**-12 is below half e4m3's smallest subnormal (2**-9), 2**-8 is not
    assert row.underflow == pytest.approx(2 / 6)
    assert row.saturated == 0
    assert set(stats.tensor) == {"input", "weight", "grad_output"}


def test_rowwise_scales_are_powers_of_two_per_row():
    x = torch.randn(6, 64) * torch.logspace(-3, 3, 6).unsqueeze(1)
    q, y, amax, scale = quantize_rowwise(x, -1, E4M3)
    assert scale.shape == (6, 1)
    mantissa, _ = torch.frexp(scale)
    assert torch.all(mantissa == 0.5)  # powers of two
    assert torch.all(scale * amax <= E4M3_MAX) and torch.all(2 * scale * amax > E4M3_MAX)
    assert torch.equal(q, (x * scale).to(torch.float8_e4m3fn).float() / scale)
    _, _, _, scale0 = quantize_rowwise(x, 0, E4M3)
    assert scale0.shape == (1, 64)


def test_rowwise_module_forward_uses_per_row_scales():
    model = one_linear("rowwise", 32, 64)
    layer = model[0]
    x = torch.randn(10, 32) * torch.logspace(-2, 2, 10).unsqueeze(1)
    y = model(x)
    xq, *_ = quantize_rowwise(x, -1, E4M3)
    wq, *_ = quantize_rowwise(layer.weight.detach(), -1, E4M3)
    assert torch.equal(y.detach(), xq @ wq.t() + layer.bias.detach())


def test_mx_block_scales():
    torch.manual_seed(0)
    x = torch.randn(4, 96)
    x[0, 5] = 1000.0  # only block 0 of row 0 sees it
    q, y, amax, scale = quantize_blocks(x, -1, 32, E4M3)
    assert scale.shape == (4, 3, 1)
    assert torch.all(torch.frexp(scale)[0] == 0.5)
    expected_exp = mx_scale_exponent(amax, "fp8_e4m3fn")
    assert torch.equal(scale, torch.exp2(-expected_exp.float()))
    assert scale[0, 0, 0] == 2.0 ** -(9 - 8)  # floor(log2 1000) = 9, emax(e4m3) = 8
    for b in range(3):
        blk = x[:, 32 * b:32 * (b + 1)]
        s = scale[:, b]
        assert torch.equal(q[:, 32 * b:32 * (b + 1)],
                           (blk * s).clamp(-448, 448).to(torch.float8_e4m3fn).float() / s)
    # blocks along dim 0, with a short last block (40 = 32 + 8)
    z = torch.randn(40, 8)
    qz, _, _, sz = quantize_blocks(z, 0, 32, E4M3)
    assert sz.shape == (2, 1, 8)
    qt, _, _, _ = quantize_blocks(z.t().contiguous(), -1, 32, E4M3)
    assert torch.equal(qz, qt.t())
    assert mx_scale(torch.tensor([0.0]), E4M3).item() == 2.0**127


def test_mxfp4_elements_on_fp4_grid():
    x = torch.randn(8, 64)
    q, _, _, scale = quantize_blocks(x, -1, 32, E2M1)
    grid = set(representable_values("fp4_e2m1").tolist())
    assert set((q.reshape(8, 2, 32) * scale).flatten().tolist()) <= grid


def test_filter_keeps_chosen_layers_and_shares_parameters():
    torch.manual_seed(0)
    model = MLP([64, 32, 32, 32, 10])
    weights = [m.weight for m in model if isinstance(m, nn.Linear)]
    convert_to_float8_training(model, "current", module_filter_fn=keep_first_last(model))
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [type(m) for m in linears] == [nn.Linear, Float8Linear, Float8Linear, nn.Linear]
    assert all(a is m.weight for a, m in zip(weights, linears, strict=True))
    model2 = MLP([64, 32, 10])
    convert_to_float8_training(model2, "current", module_filter_fn=lambda m, fqn: fqn == "2")
    assert type(model2[0]) is nn.Linear and type(model2[2]) is Float8Linear


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
def test_training_small_mlp_loss_falls(recipe, precision):
    torch.manual_seed(0)
    model = MLP([64, 64, 64, 10])
    grad_rounding = "stochastic" if recipe == "mxfp4" else "nearest"
    convert_to_float8_training(model, Float8Recipe(recipe, grad_rounding=grad_rounding),
                               module_filter_fn=lambda m, fqn: m.out_features % 32 == 0)
    history = Trainer(precision=precision, steps=40, lr=3e-3, batch_size=64,
                      progress=False).fit(model, digits(0))
    assert history.loss.iloc[-5:].mean() < 0.6 * history.loss.iloc[:5].mean()
    stats = float8_stats(model)
    assert stats.step.max() == 40 and set(stats.module) == {"0", "2"}
    assert stats[["amax", "scale"]].notna().all().all()


def test_output_dtype_follows_autocast():
    model = one_linear("mxfp8", 32, 64)
    x = torch.randn(4, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    assert y.dtype == torch.bfloat16
    assert model(x).dtype == torch.float32


def test_stochastic_grad_rounding_is_seeded_and_differs_from_nearest():
    grads = []
    for rounding in ("stochastic", "stochastic", "nearest"):
        model = one_linear(Float8Recipe("mxfp4", grad_rounding=rounding), 32, 64)
        model(torch.linspace(-1, 1, 64 * 32).reshape(64, 32)).pow(2).sum().backward()
        grads.append(model[0].weight.grad)
    assert torch.equal(grads[0], grads[1]) and not torch.equal(grads[0], grads[2])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"scaling": "tensorwise"}, "current, delayed, rowwise, mxfp8, mxfp4"),
    ({"history_len": 0}, "history_len"),
    ({"margin": -1}, "margin"),
    ({"amax_compute_algo": "mean"}, "amax_compute_algo"),
    ({"block_size": 0}, "block_size"),
    ({"grad_rounding": "up"}, "grad_rounding"),
])
def test_recipe_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Float8Recipe(**kwargs)


def test_convert_validation_before_any_swap():
    model = MLP([64, 48, 10])
    with pytest.raises(ValueError, match=r"block_size: 32 does not divide out_features=48 .*'0'"):
        convert_to_float8_training(model, "mxfp8")
    assert type(model[0]) is nn.Linear  # nothing swapped
    with pytest.raises(ValueError, match="rowwise"):
        convert_to_float8_training(model, "per-row")
    with pytest.raises(ValueError, match="module_filter_fn"):
        convert_to_float8_training(model, "current", module_filter_fn="first")
    with pytest.raises(ValueError, match="no nn.Linear"):
        convert_to_float8_training(model, "current", module_filter_fn=lambda m, fqn: False)
    with pytest.raises(ValueError, match="no nn.Linear"):
        convert_to_float8_training(nn.Sequential(nn.ReLU()), "current")
