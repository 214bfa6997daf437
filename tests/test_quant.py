"""precisionlab.quant against torch's own reference quantization, bit for bit where they overlap."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from precisionlab.memory import file_bytes
from precisionlab.models import MLP, CNN1d
from precisionlab.quant import (
    FakeQuantLayer,
    LowRankLinear,
    Observer,
    QuantConfig,
    QuantizedLayer,
    QuantSpec,
    calibrate,
    convert,
    entropy_threshold,
    low_rank_,
    observe_range,
    pack_int4,
    payload_bytes,
    prepare_qat,
    qparams,
    quantize_,
    quantize_tensor,
    rank_for_bytes,
    ste_fake_quantize,
    to_int8_backend,
    unpack_int4,
    zero_fraction,
)
from precisionlab.quant.affine import rows

BITS = range(2, 9)


def _hard_values(scale: float, n: int = 200_000, seed: int = 0) -> torch.Tensor:
    """Random values plus exact half-step ties and values far outside the range."""
    g = torch.Generator().manual_seed(seed)
    steps = torch.randint(-300, 300, (n,), generator=g).float()
    ties = (steps + 0.5) * scale
    noise = torch.randn(n, generator=g) * scale * 60
    return torch.cat([ties, noise, torch.tensor([0.0, -0.0, 1e6, -1e6])])


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", BITS)
def test_per_tensor_equals_torch_fake_quantize_bit_for_bit(bits: int, symmetric: bool) -> None:
    spec = QuantSpec(bits=bits, symmetric=symmetric)
    for seed, scale in enumerate([0.0173, 0.1, 1 / 3, 2.5e-4]):
        x = _hard_values(scale, seed=seed)
        lo = torch.tensor([-scale * 40 * (1 + seed)])
        hi = torch.tensor([scale * 55])
        q = quantize_tensor(x, spec, lo=lo, hi=hi)
        ref = torch.fake_quantize_per_tensor_affine(x, float(q.scale), int(q.zero_point),
                                                    spec.qmin, spec.qmax)
        assert torch.equal(q.dequantize(), ref)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_per_channel_equals_torch_fake_quantize_bit_for_bit(bits: int, symmetric: bool,
                                                            axis: int) -> None:
    g = torch.Generator().manual_seed(bits)
    x = torch.randn(6, 7, 50, generator=g) * torch.logspace(-3, 1, 50)
    spec = QuantSpec(bits=bits, symmetric=symmetric, granularity="per_channel", axis=axis)
    q = quantize_tensor(x, spec)
    ref = torch.fake_quantize_per_channel_affine(x, q.scale, q.zero_point, axis % 3,
                                                 spec.qmin, spec.qmax)
    assert torch.equal(q.dequantize(), ref)


def _torch_ao():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import observer
    return observer


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [4, 8])
def test_minmax_observer_equals_torch_ao(bits: int, symmetric: bool) -> None:
    ao = _torch_ao()
    x = torch.randn(32, 100) * 2 + 0.3
    spec = QuantSpec(bits=bits, symmetric=symmetric)
    dtype = torch.qint8 if symmetric else torch.quint8
    scheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obs = ao.MinMaxObserver(dtype=dtype, qscheme=scheme, quant_min=spec.qmin,
                                quant_max=spec.qmax)
        obs(x[:16])
        obs(x[16:])
        ref_scale, ref_zp = obs.calculate_qparams()
    mine = Observer(spec)
    mine.update(x[:16])
    mine.update(x[16:])
    scale, zp = qparams(*mine.range(), spec)
    assert torch.equal(scale, ref_scale)
    assert torch.equal(zp.to(ref_zp.dtype), ref_zp)

    channel_scheme = torch.per_channel_symmetric if symmetric else torch.per_channel_affine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pc = ao.PerChannelMinMaxObserver(ch_axis=0, dtype=dtype, qscheme=channel_scheme,
                                         quant_min=spec.qmin, quant_max=spec.qmax)
        pc(x)
        ref_scale, ref_zp = pc.calculate_qparams()
    q = quantize_tensor(x, QuantSpec(bits=bits, symmetric=symmetric, granularity="per_channel"))
    assert torch.equal(q.scale, ref_scale)
    assert torch.equal(q.zero_point.to(ref_zp.dtype), ref_zp)


def test_percentile_observer_is_numpy_percentile_and_minmax_at_100() -> None:
    x = torch.randn(4, 10_001, dtype=torch.float64).float() ** 3
    for p in (99.0, 99.9, 99.99):
        lo, hi = observe_range(x, QuantSpec(symmetric=False, observer="percentile", percentile=p))
        np.testing.assert_allclose(hi.numpy(), np.percentile(x.numpy(), p, axis=1), rtol=1e-6)
        np.testing.assert_allclose(lo.numpy(), np.percentile(x.numpy(), 100 - p, axis=1),
                                   rtol=1e-6)
        _, amax = observe_range(x, QuantSpec(observer="percentile", percentile=p))
        np.testing.assert_allclose(amax.numpy(), np.percentile(np.abs(x.numpy()), p, axis=1),
                                   rtol=1e-6)
    full = observe_range(x, QuantSpec(symmetric=False, observer="percentile", percentile=100))
    minmax = observe_range(x, QuantSpec(symmetric=False))
    assert torch.equal(full[0], minmax[0]) and torch.equal(full[1], minmax[1])


def _quant_mse(x: torch.Tensor, spec: QuantSpec) -> float:
    q = quantize_tensor(x, spec)
    return float((q.dequantize() - x).pow(2).mean())


def test_clipping_observers_beat_minmax_on_heavy_tails() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100_000, generator=g)
    x[:10] = 40.0  # a few outliers stretch the min-max range
    minmax = _quant_mse(x, QuantSpec(bits=4))
    mse = _quant_mse(x, QuantSpec(bits=4, observer="mse"))
    entropy = _quant_mse(x, QuantSpec(bits=4, observer="entropy"))
    assert mse < 0.2 * minmax
    assert entropy < 0.5 * minmax
    lo, hi = observe_range(x.reshape(1, -1), QuantSpec(bits=8, observer="entropy"))
    assert 3.0 < float(hi) < 40.0 and float(lo) < 0


def test_mse_observer_never_worse_than_minmax_per_row() -> None:
    x = torch.randn(16, 512) * torch.linspace(0.1, 3, 16)[:, None]
    spec = QuantSpec(bits=3, granularity="per_channel", observer="mse")
    lo, hi = observe_range(rows(x, spec), spec)
    assert torch.all(hi <= x.amax(dim=1)) and torch.all(lo >= x.amin(dim=1))
    assert _quant_mse(x, spec) <= _quant_mse(x, QuantSpec(bits=3, granularity="per_channel"))


def test_entropy_keeps_everything_for_a_flat_histogram() -> None:
    assert entropy_threshold(np.ones(2048), 128) == 2048


def test_per_group_is_per_tensor_on_each_group() -> None:
    w = torch.randn(8, 64)
    spec = QuantSpec(bits=4, granularity="per_group", group_size=16, symmetric=False)
    grouped = quantize_tensor(w, spec).dequantize()
    for row in range(8):
        for start in range(0, 64, 16):
            piece = w[row, start:start + 16]
            alone = quantize_tensor(piece, QuantSpec(bits=4, symmetric=False)).dequantize()
            assert torch.equal(grouped[row, start:start + 16], alone)


def test_int4_packing_round_trip_and_real_bytes() -> None:
    values = torch.randint(0, 16, (1001,), dtype=torch.uint8)
    packed = pack_int4(values)
    assert packed.dtype == torch.uint8 and packed.numel() == 501
    assert torch.equal(unpack_int4(packed, 1001), values)
    w = torch.randn(256, 256)
    for bits in (2, 3, 4):
        q = quantize_tensor(w, QuantSpec(bits=bits, granularity="per_channel"))
        assert q.packed and q.data.numel() == 256 * 256 // 2
        assert q.nbytes == 256 * 256 // 2 + 256 * 4
        ref = torch.fake_quantize_per_channel_affine(w, q.scale, q.zero_point, 0, q.spec.qmin,
                                                     q.spec.qmax)
        assert torch.equal(q.dequantize(), ref)
    q8 = quantize_tensor(w, QuantSpec(bits=8, symmetric=False))
    assert not q8.packed and q8.data.dtype == torch.uint8 and q8.nbytes == 256 * 256 + 8


@pytest.mark.parametrize("symmetric", [True, False])
def test_ste_gradient_equals_torch_fake_quantize_gradient(symmetric: bool) -> None:
    spec = QuantSpec(bits=4, symmetric=symmetric)
    x = (torch.randn(5000) * 3).requires_grad_()
    scale, zp = qparams(torch.tensor([-2.0]), torch.tensor([2.5]), spec)
    upstream = torch.randn(5000)
    out = ste_fake_quantize(x, scale, zp, spec.qmin, spec.qmax)
    (grad,) = torch.autograd.grad(out, x, upstream)
    x_ref = x.detach().clone().requires_grad_()
    ref = torch.fake_quantize_per_tensor_affine(x_ref, float(scale), int(zp), spec.qmin,
                                                spec.qmax)
    (grad_ref,) = torch.autograd.grad(ref, x_ref, upstream)
    assert torch.equal(out, ref)
    assert torch.equal(grad, grad_ref)
    assert 0 < int((grad == 0).sum()) < 5000  # some values were clipped, most were not


@pytest.mark.parametrize("kwargs, message", [
    ({"bits": 1}, "bits: must be an integer from 2 to 8"),
    ({"bits": 9}, "bits: must be an integer from 2 to 8"),
    ({"bits": 16}, "bits: must be an integer from 2 to 8"),
    ({"bits": 4.0}, "bits: must be an integer from 2 to 8"),
    ({"granularity": "per_row"}, "granularity: must be one of per_tensor, per_channel"),
    ({"observer": "kl"}, "observer: must be one of minmax, percentile, mse, entropy"),
    ({"symmetric": "yes"}, "symmetric: must be True or False"),
    ({"percentile": 0}, r"percentile: must be a number in \(0, 100\]"),
    ({"percentile": 100.5}, r"percentile: must be a number in \(0, 100\]"),
    ({"granularity": "per_group"}, "group_size: per_group needs a positive integer"),
    ({"granularity": "per_group", "group_size": 0}, "group_size: per_group needs a positive"),
    ({"group_size": 8}, "group_size: only used with granularity='per_group'"),
    ({"observer": "entropy", "granularity": "per_channel"}, "observer: 'entropy' calibrates"),
])
def test_bad_spec_is_a_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        QuantSpec(**kwargs)


def test_bad_shapes_and_calibration_are_clear_errors_before_compute() -> None:
    model = MLP([64, 48, 10])
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="group_size: 32 does not divide the input dimension 48"):
        quantize_(model, QuantConfig(weight=QuantSpec(granularity="per_group", group_size=32)))
    assert all(isinstance(m, nn.Linear) for m in (model[0], model[2]))  # nothing was swapped
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="axis: 3 is out of range"):
        quantize_(model, QuantConfig(weight=QuantSpec(granularity="per_channel", axis=3)))
    with pytest.raises(ValueError, match="activation: activations are quantized per tensor"):
        QuantConfig(activation=QuantSpec(granularity="per_channel"))
    quantize_(model, QuantConfig(activation=QuantSpec(symmetric=False)))
    with pytest.raises(RuntimeError, match=r"calibrate\(model, inputs\)"):
        model(torch.randn(4, 64))
    with pytest.raises(ValueError, match="inputs: calibration needs at least one example"):
        calibrate(model, torch.empty(0, 64))
    with pytest.raises(ValueError, match="calibration data: no activations were observed"):
        Observer(QuantSpec()).range()
    with pytest.raises(ValueError, match="model: nothing to calibrate"):
        calibrate(MLP([4, 4]), torch.randn(2, 4))


def test_quantize_swaps_layers_and_computes_with_the_dequantized_weights() -> None:
    torch.manual_seed(0)
    model = MLP([64, 128, 10]).eval()
    x = torch.randn(32, 64)
    reference = copy.deepcopy(model)
    config = QuantConfig(weight=QuantSpec(bits=4, granularity="per_group", group_size=32))
    quantize_(model, config)
    assert isinstance(model[0], QuantizedLayer) and isinstance(model[2], QuantizedLayer)
    with torch.no_grad():
        for i in (0, 2):
            reference[i].weight.copy_(model[i].dequantized_weight())
        assert torch.equal(model(x), reference(x))


def test_weight_and_activation_int8_stays_close_to_fp32_on_a_conv_model() -> None:
    torch.manual_seed(0)
    model = CNN1d(length=40).eval()
    x = torch.randn(256, 40)
    with torch.no_grad():
        ref = model(x)
        config = QuantConfig(weight=QuantSpec(granularity="per_channel"),
                             activation=QuantSpec(symmetric=False, observer="percentile",
                                                  percentile=99.99))
        quantize_(model, config)
        calibrate(model, x, batch_size=64)
        out = model(x)
    assert sum(isinstance(m, QuantizedLayer) for m in model.modules()) == 4
    assert float((out - ref).norm() / ref.norm()) < 0.05


def test_filter_fn_leaves_chosen_layers_in_float() -> None:
    model = MLP([16, 32, 10])
    quantize_(model, QuantConfig(), filter_fn=lambda m, name: name != "2")
    assert isinstance(model[0], QuantizedLayer) and isinstance(model[2], nn.Linear)


def test_qat_trains_through_the_rounding_and_converts_to_the_same_outputs() -> None:
    torch.manual_seed(0)
    model = MLP([20, 32, 4])
    config = QuantConfig(weight=QuantSpec(bits=3, granularity="per_channel"),
                         activation=QuantSpec(bits=4, symmetric=False))
    prepare_qat(model, config)
    assert isinstance(model[0], FakeQuantLayer)
    x, y = torch.randn(128, 20), torch.randint(0, 4, (128,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        assert model[0].layer.weight.grad.abs().sum() > 0
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    model.eval()
    with torch.no_grad():
        fake = model(x)
        convert(model)
        assert isinstance(model[0], QuantizedLayer)
        assert torch.equal(model(x), fake)


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
def test_payload_bytes_count_per_channel_params_and_nested_tensors() -> None:
    q = torch.quantize_per_channel(torch.randn(4, 3), torch.ones(4, dtype=torch.float64),
                                   torch.zeros(4, dtype=torch.int64), 0, torch.qint8)

    class Holder(nn.Module):
        def state_dict(self, *args, **kwargs):  # what torch.ao's packed layers hold
            return {"packed": (q, torch.ones(2)), "dtype": torch.qint8}

    assert payload_bytes(Holder()) == 12 + 4 * 8 + 4 * 8 + 2 * 4  # ints, scales, zps, bias


def test_state_dict_bytes_are_real() -> None:
    torch.manual_seed(0)
    fp32 = MLP([256, 256, 256, 10])
    n_weights = 256 * 256 * 2 + 256 * 10
    int8 = quantize_(copy.deepcopy(fp32), QuantConfig())
    int4 = quantize_(copy.deepcopy(fp32), QuantConfig(weight=QuantSpec(bits=4,
                                                                       granularity="per_channel")))
    biases = (256 + 256 + 10) * 4
    scales = (256 + 256 + 10) * 4
    assert payload_bytes(fp32) == n_weights * 4 + biases
    assert payload_bytes(int8) == n_weights + biases + scales
    assert payload_bytes(int4) == n_weights // 2 + biases + scales
    # the file adds a few hundred bytes of pickle per tensor on top of the payload
    assert file_bytes(int8) - payload_bytes(int8) < 2000 + 0.01 * payload_bytes(int8)
    assert 0.0 < zero_fraction(int8) < 0.05  # int8 barely creates exact zeros in Gaussian weights


def test_to_int8_backend_runs_real_int8_kernels_quietly() -> None:
    torch.manual_seed(0)
    model = MLP([64, 256, 10]).eval()
    x = torch.randn(64, 64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = to_int8_backend(model)
    assert not caught
    assert q is not model and isinstance(model[0], nn.Linear)
    assert any("quantized" in type(m).__module__ for m in q.modules())
    with torch.no_grad():
        assert float((q(x) - model(x)).norm() / model(x).norm()) < 0.02
    assert payload_bytes(q) < 0.3 * payload_bytes(model)
    with pytest.raises(ValueError, match="backend: must be one of auto, torch.ao, torchao"):
        to_int8_backend(model, backend="onnx")


def test_low_rank_factors_are_the_truncated_svd_at_the_given_bytes() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(64, 32)
    full = LowRankLinear(layer, 32)
    x = torch.randn(8, 64)
    torch.testing.assert_close(full(x), layer(x), rtol=1e-5, atol=1e-5)
    assert rank_for_bytes(256, 256, 256 * 256 + 256 * 4) == 32  # 66,560 // (4 * 512)
    model = low_rank_(MLP([256, 256, 10]), bits=8)
    assert model[0].rank == rank_for_bytes(256, 256, 256 * 256 + 4 * 256)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with pytest.raises(ValueError, match="rank: must be an integer from 1 to 32"):
        LowRankLinear(layer, 33)


def test_torchao_backend_is_the_fallback_and_works(monkeypatch: pytest.MonkeyPatch) -> None:
    from precisionlab.quant import backends

    torch.manual_seed(0)
    model = MLP([64, 256, 10]).eval()
    x = torch.randn(64, 64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = to_int8_backend(model, backend="torchao")
    assert not caught
    with torch.no_grad():
        assert float((q(x) - model(x)).norm() / model(x).norm()) < 0.02
    monkeypatch.setattr(backends, "torch_ao_available", lambda: False)  # as if torch.ao were gone
    chosen = to_int8_backend(model)
    assert not any("quantized" in type(m).__module__ for m in chosen.modules())
    with torch.no_grad():
        torch.testing.assert_close(chosen(x), q(x))


def test_entropy_observer_gives_the_zero_bin_the_count_of_its_neighbour() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(200_000, generator=g))  # half exact zeros, like a ReLU output
    x[:5] = 12.0
    lo, hi = observe_range(x.reshape(1, -1), QuantSpec(bits=8, symmetric=False,
                                                       observer="entropy"))
    assert float(lo) == 0.0 and 2.5 < float(hi) < 12.0
    assert float((x > hi).float().mean()) < 0.005  # clips the outliers, not the bulk


def test_low_rank_keeps_the_layers_dtype() -> None:
    layer = nn.Linear(16, 8).double()
    assert all(p.dtype == torch.float64 for p in LowRankLinear(layer, 4).parameters())


def test_a_second_swap_leaves_already_swapped_layers_alone() -> None:
    model = MLP([8, 8, 4])
    prepare_qat(model, QuantConfig(), filter_fn=lambda m, name: name == "0")
    prepare_qat(model, QuantConfig(weight=QuantSpec(bits=4, granularity="per_channel")))
    assert isinstance(model[0].layer, nn.Linear) and isinstance(model[2].layer, nn.Linear)
    assert model[2].config.weight.bits == 4 and model[0].config.weight.bits == 8
    assert model(torch.randn(2, 8)).shape == (2, 4)
    with pytest.raises(ValueError, match="model: has no Linear/Conv1d/Conv2d layer"):
        quantize_(model, QuantConfig())  # nothing left to swap outside the QAT layers
    assert isinstance(model[0], FakeQuantLayer)


# --- configurations as strings and dicts (Papermill parameters), integer grids from formats ---

ROUND_TRIP_SPECS = [
    QuantSpec(),
    QuantSpec(bits=4, granularity="per_group", group_size=32),
    QuantSpec(bits=3, symmetric=False, granularity="per_channel", axis=1, observer="mse"),
    QuantSpec(bits=8, symmetric=False, observer="percentile", percentile=99.9),
    QuantSpec(bits=2, observer="entropy"),
]


@pytest.mark.parametrize("spec", ROUND_TRIP_SPECS, ids=lambda s: s.describe())
def test_quant_spec_round_trips_through_string_and_dict(spec):
    assert QuantSpec.parse(spec.describe()) == spec
    assert QuantSpec.from_dict(spec.to_dict()) == spec
    assert all(isinstance(v, int | float | str | bool | None) for v in spec.to_dict().values())


@pytest.mark.parametrize("activation", [None, QuantSpec(bits=4, symmetric=False,
                                                        observer="percentile", percentile=99.99)])
def test_quant_config_round_trips_through_string_and_dict(activation):
    from precisionlab.quant import QuantConfig

    config = QuantConfig(weight=QuantSpec(bits=4, granularity="per_group", group_size=16),
                         activation=activation)
    assert QuantConfig.parse(config.describe()) == config
    assert QuantConfig.from_dict(config.to_dict()) == config


def test_parse_errors_name_the_problem():
    from precisionlab.quant import QuantConfig

    with pytest.raises(ValueError, match="text: expected"):
        QuantSpec.parse("int4 symmetric")
    with pytest.raises(ValueError, match="bits"):
        QuantSpec.parse("int9 sym per_tensor minmax")
    with pytest.raises(ValueError, match="unknown QuantSpec field"):
        QuantSpec.from_dict({"bitz": 4})
    with pytest.raises(ValueError, match="text: expected 'W"):
        QuantConfig.parse("int8 sym per_tensor minmax")


def test_grid_comes_from_formats_int_format():
    from precisionlab.formats import FORMATS, IntFormat

    assert QuantSpec(bits=8).grid == FORMATS["int8"]
    assert QuantSpec(bits=4).grid == FORMATS["int4"]
    assert QuantSpec(bits=8, symmetric=False).grid == IntFormat("uint8", 8, signed=False)
    assert (QuantSpec(bits=8).qmin, QuantSpec(bits=8).qmax) == (-127, 127)  # narrow range
    assert (QuantSpec(bits=4, symmetric=False).qmin, QuantSpec(bits=4, symmetric=False).qmax) \
        == (0, 15)


def test_affine_imports_no_observer():
    import ast
    import inspect

    from precisionlab.quant import affine

    tree = ast.parse(inspect.getsource(affine))
    names = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not any("observers" in (m or "") for m in names)
