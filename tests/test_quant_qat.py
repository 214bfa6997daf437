"""QAT from a trained model: it starts exactly at PTQ, evaluates the integer model, and its
control is the float model trained the same way."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from precisionlab.amp import Trainer
from precisionlab.data import digits
from precisionlab.models import MLP
from precisionlab.quant import (
    FakeQuantLayer,
    QuantConfig,
    QuantizedLayer,
    QuantSpec,
    calibrate,
    convert,
    prepare_qat,
)
from precisionlab.quant.qat import (
    QATTrainer,
    finetune_curve,
    post_training_quantize,
    recovered,
)

DATA = digits(0)
X_CAL = DATA.x_train[:300]


def trained(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    model = MLP([64, 48, 32, 10])
    Trainer(steps=60, batch_size=64, lr=3e-3, seed=seed, progress=False, threads=2,
            eval_every=None).fit(model, DATA)
    return model.eval()


def config(bits: int, observer: str = "mse", activation: bool = True) -> QuantConfig:
    act = QuantSpec(bits=bits, symmetric=False, observer=observer) if activation else None
    return QuantConfig(weight=QuantSpec(bits=bits, granularity="per_channel"), activation=act)


MODEL = trained()


@pytest.mark.parametrize("observer", ["minmax", "percentile", "mse"])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_calibrated_qat_model_computes_exactly_the_ptq_model(bits: int, observer: str) -> None:
    cfg = config(bits, observer)
    ptq = post_training_quantize(MODEL, cfg, X_CAL, batch_size=128)
    qat = calibrate(prepare_qat(copy.deepcopy(MODEL), cfg), X_CAL, batch_size=128).eval()
    with torch.no_grad():
        assert torch.equal(qat(DATA.x_test), ptq(DATA.x_test))
    assert all(bool(m.act_seen) for m in qat.modules() if isinstance(m, FakeQuantLayer))


def test_ptq_leaves_the_model_alone_and_weight_only_needs_no_calibration() -> None:
    before = copy.deepcopy(MODEL.state_dict())
    q = post_training_quantize(MODEL, config(4, activation=False))
    assert isinstance(q[0], QuantizedLayer) and isinstance(MODEL[0], torch.nn.Linear)
    assert all(torch.equal(before[k], v) for k, v in MODEL.state_dict().items())
    assert not q.training


def _ranges(model: torch.nn.Module) -> list[tuple[float, float]]:
    return [(float(m.act_lo), float(m.act_hi)) for m in model.modules()
            if isinstance(m, FakeQuantLayer)]


def test_momentum_zero_freezes_the_calibrated_ranges_and_the_default_moves_them() -> None:
    ranges = {}
    for momentum in (0.0, None):
        model = calibrate(prepare_qat(copy.deepcopy(MODEL), config(3)), X_CAL,
                              momentum=momentum)
        start = _ranges(model)
        Trainer(steps=20, batch_size=64, lr=1e-3, seed=1, progress=False,
                eval_every=None).fit(model, DATA)
        ranges[momentum] = (start, _ranges(model))
    frozen_start, frozen_end = ranges[0.0]
    assert frozen_end == frozen_start
    moving_start, moving_end = ranges[None]
    assert moving_start == frozen_start and moving_end != moving_start


def test_qat_trainer_evaluates_the_converted_integer_model() -> None:
    cfg = config(3)
    model = calibrate(prepare_qat(copy.deepcopy(MODEL), cfg), X_CAL)
    trainer = QATTrainer(steps=30, batch_size=64, lr=1e-3, seed=2, progress=False,
                         eval_every=10)
    history = trainer.fit(model, DATA)
    assert trainer.outputs_equal == [True, True, True]
    integer = convert(copy.deepcopy(model))
    assert isinstance(integer[0], QuantizedLayer)
    plain = Trainer(progress=False)
    assert trainer.evaluate(model, DATA) == plain.evaluate(integer, DATA)
    assert history.test_metric.iloc[-1] == plain.evaluate(integer, DATA)[1]
    # a float model is evaluated as the plain Trainer does
    assert QATTrainer(progress=False).evaluate(MODEL, DATA) == plain.evaluate(MODEL, DATA)


def test_finetune_curve_starts_at_ptq_and_the_control_is_plain_training() -> None:
    before = copy.deepcopy(MODEL.state_dict())
    cfg = config(3)
    kwargs = dict(steps=40, batch_size=64, lr=1e-3, seed=5, progress=False, eval_every=20)
    tuned, curve = finetune_curve(MODEL, DATA, QATTrainer(**kwargs), cfg, X_CAL)
    assert list(curve.step) == [0, 20, 40]
    ptq_loss, ptq_acc = Trainer(progress=False).evaluate(
        post_training_quantize(MODEL, cfg, X_CAL), DATA)
    assert curve.test_accuracy.iloc[0] == ptq_acc and curve.test_loss.iloc[0] == ptq_loss
    assert isinstance(tuned[0], QuantizedLayer) and not tuned.training
    assert curve.test_accuracy.iloc[-1] == Trainer(progress=False).evaluate(tuned, DATA)[1]
    assert all(torch.equal(before[k], v) for k, v in MODEL.state_dict().items())

    control, ccurve = finetune_curve(MODEL, DATA, QATTrainer(**kwargs))
    reference = copy.deepcopy(MODEL)
    Trainer(**kwargs).fit(reference, DATA)
    assert all(torch.equal(a, b) for a, b in zip(control.parameters(), reference.parameters(),
                                                 strict=True))
    assert ccurve.test_accuracy.iloc[0] == Trainer(progress=False).evaluate(MODEL, DATA)[1]

    frozen, _ = finetune_curve(MODEL, DATA, QATTrainer(**kwargs), cfg, X_CAL, momentum=0.0)
    start = calibrate(prepare_qat(copy.deepcopy(MODEL), cfg), X_CAL)
    assert [float(m.input_quant.scale) for m in frozen.modules()
            if isinstance(m, QuantizedLayer)] == [
        float(m.input_quant.scale) for m in convert(start).modules()
        if isinstance(m, QuantizedLayer)]
    w_only, wcurve = finetune_curve(MODEL, DATA, QATTrainer(**kwargs), config(2, activation=False))
    assert isinstance(w_only[0], QuantizedLayer) and len(wcurve) == 3


def test_qat_learns_back_accuracy_that_low_bit_ptq_lost() -> None:
    cfg = config(2, activation=False)
    trainer = QATTrainer(steps=150, batch_size=64, lr=2e-3, seed=3, progress=False,
                         eval_every=150)
    _, curve = finetune_curve(MODEL, DATA, trainer, cfg)
    fp32 = Trainer(progress=False).evaluate(MODEL, DATA)[1]
    ptq, qat = curve.test_accuracy.iloc[0], curve.test_accuracy.iloc[-1]
    assert ptq < fp32 - 0.03  # ternary weights cost this small model accuracy
    assert qat > ptq + 0.05 and recovered(qat, ptq, fp32) > 0.5


def test_recovered_is_the_share_of_the_lost_accuracy_won_back() -> None:
    assert recovered(0.8, 0.6, 1.0) == pytest.approx(0.5)
    assert recovered(0.6, 0.6, 1.0) == 0.0
    assert recovered(1.1, 0.6, 1.0) == pytest.approx(1.25)
    assert math.isnan(recovered(0.9, 0.9, 0.9)) and math.isnan(recovered(0.9, 0.95, 0.9))


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="calibration: quantizing activations needs"):
        post_training_quantize(MODEL, config(4))
    with pytest.raises(ValueError, match="model: nothing to calibrate"):
        calibrate(prepare_qat(copy.deepcopy(MODEL), config(4, activation=False)), X_CAL)
    prepared = prepare_qat(copy.deepcopy(MODEL), config(4))
    with pytest.raises(ValueError, match="inputs: calibration needs at least one example"):
        calibrate(prepared, X_CAL[:0])
    with pytest.raises(ValueError, match="batch_size: must be a positive integer"):
        calibrate(prepared, X_CAL, batch_size=0)
    with pytest.raises(ValueError, match="momentum: must be None or a number from 0 to 1"):
        calibrate(prepared, X_CAL, momentum=2)
    assert not any(bool(m.act_seen) for m in prepared.modules()
                   if isinstance(m, FakeQuantLayer))  # the failed calls changed nothing
    with pytest.raises(ValueError, match="trainer: must be a QATTrainer"):
        finetune_curve(MODEL, DATA, Trainer(progress=False), config(4), X_CAL)
    with pytest.raises(ValueError, match="calibration: QAT with quantized activations needs"):
        finetune_curve(MODEL, DATA, QATTrainer(progress=False), config(4))
