"""precisionlab.quant.ptq: post-training quantization of a trained model, measured."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from precisionlab.data import Split
from precisionlab.models import MLP, TinyTransformer
from precisionlab.quant import (
    LowRankLinear,
    QuantConfig,
    QuantizedLayer,
    QuantSpec,
    calibrate,
    quantize_,
)
from precisionlab.quant.ptq import (
    clipped_fraction,
    collect_inputs,
    evaluate,
    evaluate_low_rank,
    evaluate_ptq,
    float_zero_fraction,
    quantize_ptq,
    ranges_for,
    weight_bytes,
)


def _toy_split(seed: int = 0, n: int = 512, features: int = 40) -> Split:
    """A linearly separable 4-class problem: a small MLP learns it well within 200 steps."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(features, 4, generator=g)
    x = torch.randn(2 * n, features, generator=g)
    y = (x @ w).argmax(dim=1)
    return Split("toy", x[:n], y[:n], x[n:], y[n:], classes=4)


def _trained_mlp(data: Split, hidden: int = 64, steps: int = 200) -> nn.Module:
    torch.manual_seed(0)
    model = MLP([data.n_features, hidden, hidden, data.n_classes])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(data.x_train), data.y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained():
    data = _toy_split()
    return _trained_mlp(data), data


def test_evaluate_is_loss_and_accuracy_on_the_test_split(trained) -> None:
    model, data = trained
    loss, acc = evaluate(model, data, chunk=100)  # chunks that do not divide the split
    with torch.no_grad():
        logits = model(data.x_test)
    assert loss == pytest.approx(float(nn.functional.cross_entropy(logits, data.y_test)),
                                 rel=1e-5)
    assert acc == pytest.approx(float((logits.argmax(1) == data.y_test).float().mean()))
    assert acc > 0.8  # the toy task is learnt
    with pytest.raises(ValueError, match="chunk: must be a positive integer"):
        evaluate(model, data, chunk=0)


def test_float_calibrated_ranges_equal_library_calibrate_at_int8_weights(trained) -> None:
    model, data = trained
    act = QuantSpec(symmetric=False, observer="percentile", percentile=99.9)
    config = QuantConfig(weight=QuantSpec(granularity="per_channel"), activation=act)
    ranges = ranges_for(collect_inputs(model, data.x_train[:256], batch_size=100), act)
    q, fallback = quantize_ptq(model, config, ranges)
    assert fallback == [] and isinstance(model[0], nn.Linear)  # the float model is untouched
    # the library's own calibrate on a quantized copy: its first layer sees the same inputs
    lib = quantize_(copy.deepcopy(model), config)
    calibrate(lib, data.x_train[:256], batch_size=100)
    assert torch.equal(q[0].input_quant.scale, lib[0].input_quant.scale)
    assert torch.equal(q[0].input_quant.zero_point, lib[0].input_quant.zero_point)
    # later layers see float activations here, int8-weight ones there: close, not equal
    torch.testing.assert_close(q[4].input_quant.scale, lib[4].input_quant.scale, rtol=0.05,
                               atol=0)
    row = evaluate_ptq(model, data, config, ranges)
    assert row["test_accuracy"] == pytest.approx(evaluate(q, data)[1])
    assert abs(row["test_accuracy"] - evaluate(model, data)[1]) < 0.03


def test_attention_projections_share_one_calibration() -> None:
    torch.manual_seed(0)
    model = TinyTransformer(20, context=8, d_model=16, n_layers=1).eval()
    x = torch.randint(0, 20, (12, 8))
    collected = collect_inputs(model, x, batch_size=5)
    block = "blocks.0.attn"
    assert collected[f"{block}.q"] is collected[f"{block}.k"] is collected[f"{block}.v"]
    assert collected[f"{block}.proj"] is not collected[f"{block}.q"]
    assert len(collected[f"{block}.q"]) == 3  # three batches of at most 5 windows
    ranges = ranges_for(collected, QuantSpec(symmetric=False))
    values = torch.cat([b.reshape(-1) for b in collected["head"]])
    assert float(ranges["head"][0]) == float(values.min())
    assert float(ranges["head"][1]) == float(values.max())


def test_per_group_falls_back_to_per_channel_where_the_group_does_not_fit(trained) -> None:
    model, _ = trained  # input widths 40, 64, 64
    spec = QuantSpec(bits=4, granularity="per_group", group_size=32)
    q, fallback = quantize_ptq(model, QuantConfig(weight=spec))
    assert fallback == ["0"]
    assert q[0].spec.granularity == "per_channel" and q[0].spec.bits == 4
    assert q[2].spec == spec and q[4].spec == spec
    q_all, fallback_all = quantize_ptq(model, QuantConfig(weight=QuantSpec(
        bits=4, granularity="per_group", group_size=48)))
    assert fallback_all == ["0", "2", "4"]
    assert all(isinstance(m, QuantizedLayer) for m in (q_all[0], q_all[2], q_all[4]))


def test_bytes_bits_per_weight_and_zero_fraction_are_real(trained) -> None:
    model, data = trained
    n = 40 * 64 + 64 * 64 + 64 * 4
    assert weight_bytes(model) == 4 * n
    row8 = evaluate_ptq(model, data, QuantConfig(weight=QuantSpec(granularity="per_channel")))
    assert row8["weight_bytes"] == n + 4 * (64 + 64 + 4)  # one float32 scale per channel
    assert row8["bits_per_weight"] == pytest.approx(8 * row8["weight_bytes"] / n)
    row2 = evaluate_ptq(model, data, QuantConfig(weight=QuantSpec(bits=2,
                                                                  granularity="per_channel")))
    assert row2["weight_bytes"] == n // 2 + 4 * (64 + 64 + 4)  # packed two per byte
    assert 0 <= row8["zero_fraction"] < 0.05 < row2["zero_fraction"]
    assert float_zero_fraction(model) == 0.0
    with torch.no_grad():
        model_copy = copy.deepcopy(model)
        model_copy[0].weight[:, :10] = 0
    assert float_zero_fraction(model_copy) == pytest.approx(64 * 10 / n)


def test_activation_config_needs_ranges_for_every_layer(trained) -> None:
    model, data = trained
    config = QuantConfig(activation=QuantSpec(symmetric=False))
    with pytest.raises(ValueError, match="ranges: a config with an activation spec needs"):
        quantize_ptq(model, config)
    ranges = ranges_for(collect_inputs(model, data.x_train[:32]), config.activation)
    del ranges["4"]
    with pytest.raises(ValueError, match="ranges: no calibrated range for layer"):
        quantize_ptq(model, config, ranges)
    with pytest.raises(ValueError, match="inputs: calibration needs at least one example"):
        collect_inputs(model, data.x_train[:0])
    with pytest.raises(ValueError, match="config: must be a QuantConfig"):
        quantize_ptq(model, QuantSpec())


def test_entropy_calibration_clips_outliers_not_the_bulk_of_relu_outputs() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(200_000, generator=g))  # half exact zeros, like a ReLU output
    x[:5] = 12.0  # a few outliers: the calibrator should clip them, not the bulk
    collected = {"a": [x[:100_000], x[100_000:]]}
    for bits in (8, 4):
        spec = QuantSpec(bits=bits, symmetric=False, observer="entropy")
        lo, hi = ranges_for(collected, spec)["a"]
        assert float(lo) == 0.0
        assert 2.5 < float(hi) < 12.0
        assert clipped_fraction(collected, {"a": (lo, hi)}) < 0.005
    minmax = ranges_for(collected, QuantSpec(symmetric=False))
    assert clipped_fraction(collected, minmax) == 0.0


def test_low_rank_at_equal_bytes_stays_float32(trained) -> None:
    model, data = trained
    row = evaluate_low_rank(model, data, bits=8)
    assert row["float32_factors"] is True and row["factor_bits"] == 32
    assert row["factor_dtypes"] == row["weight_dtype"] == "torch.float32"
    ranks = [int(r) for r in row["ranks"].split(",")]
    assert len(ranks) == 3 and all(r >= 1 for r in ranks)
    int8 = evaluate_ptq(model, data, QuantConfig(weight=QuantSpec(granularity="per_channel")))
    assert row["weight_bytes"] <= int8["weight_bytes"]  # the rank fits the int8 byte budget
    assert 0.0 <= row["test_accuracy"] <= 1.0
    assert isinstance(model[0], nn.Linear) and not isinstance(model[0], LowRankLinear)


def test_ptq_scores_with_the_librarys_one_evaluation() -> None:
    from precisionlab.amp import trainer
    from precisionlab.quant import ptq

    assert ptq.evaluate is trainer.evaluate  # a re-export, not a second implementation
