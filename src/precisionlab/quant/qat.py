"""Quantization-aware training from a trained float model, with the control it needs.

The recipe, measured step by step:

    ptq = post_training_quantize(model, config, x_cal)         # PTQ: quantize_ + calibrate
    qat = calibrate(prepare_qat(copy.deepcopy(model), config), x_cal)   # starts as ptq
    QATTrainer(steps=n, eval_every=k).fit(qat, data)            # fine-tune through the rounding
    convert(qat)                                                # integers, same outputs

`calibrate` gives a fake-quant model the very input ranges it gives the PTQ model, so QAT at
step 0 computes exactly what PTQ computes and every later gain is QAT's own.
`QATTrainer` is the project's `Trainer` whose test evaluations run the *converted* integer
model (and check it against the fake-quant model). `finetune_curve` runs either QAT or the
control - the float model fine-tuned for the same steps - and returns accuracy per step.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn

from precisionlab.amp.trainer import Trainer
from precisionlab.data import Split
from precisionlab.quant.modules import (
    FakeQuantLayer,
    QuantConfig,
    calibrate,
    convert,
    prepare_qat,
    quantize_,
)


def post_training_quantize(model: nn.Module, config: QuantConfig,
                           calibration: torch.Tensor | None = None,
                           batch_size: int = 256) -> nn.Module:
    """A quantized copy of `model` (the original is untouched): `quantize_` by `config`, then,
    if `config` quantizes activations, `calibrate` on the `calibration` inputs."""
    if config.activation is not None and calibration is None:
        raise ValueError("calibration: quantizing activations needs calibration inputs; "
                         "got None")
    quantized = quantize_(copy.deepcopy(model), config)
    if config.activation is not None:
        calibrate(quantized, calibration, batch_size=batch_size)
    return quantized.eval()


@dataclass
class QATTrainer(Trainer):
    """The project's `Trainer`, except that each test evaluation of a model holding
    `FakeQuantLayer`s runs a `convert`ed copy - the integer model - and checks that its
    outputs equal the fake-quant model's in eval mode. `outputs_equal` keeps one flag per
    evaluation. Models without fake quant (the fp32 control) are evaluated as usual.
    """

    outputs_equal: list[bool] = field(default_factory=list)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: Split, chunk: int = 1024) -> tuple[float, float]:
        """Mean test loss and accuracy of the converted integer model (or of a float model)."""
        if not any(isinstance(m, FakeQuantLayer) for m in model.modules()):
            return super().evaluate(model, data, chunk)
        model.eval()
        integer = convert(copy.deepcopy(model)).eval()
        self.outputs_equal.append(all(
            torch.equal(integer(x), model(x)) for x in torch.split(data.x_test, chunk)))
        return super().evaluate(integer, data, chunk)


def finetune_curve(model: nn.Module, data: Split, trainer: QATTrainer,
                   config: QuantConfig | None = None,
                   calibration: torch.Tensor | None = None,
                   momentum: float | None = None) -> tuple[nn.Module, pd.DataFrame]:
    """Fine-tune a copy of the trained float `model` and return (the result, its curve).

    With a `config`: QAT. The copy is `prepare_qat`ed, `calibrate`d on `calibration`
    (when activations are quantized; `momentum` as there: 0 freezes the calibrated input
    ranges, None keeps the layers' moving average), trained by `trainer`, and returned
    `convert`ed; the curve's step 0 is the PTQ model. Without one: the control, the float
    copy trained by the same trainer (same steps, batches and learning rate). Curve columns:
    step, test_loss, test_accuracy, one row for step 0 and one per evaluation of `trainer`
    (`eval_every`).
    """
    if not isinstance(trainer, QATTrainer):
        raise ValueError(f"trainer: must be a QATTrainer; got {type(trainer).__name__}")
    tuned = copy.deepcopy(model)
    if config is not None:
        prepare_qat(tuned, config)
        if config.activation is not None:
            if calibration is None:
                raise ValueError("calibration: QAT with quantized activations needs "
                                 "calibration inputs; got None")
            calibrate(tuned, calibration.to(next(tuned.parameters()).device),
                      momentum=momentum)
    loss0, acc0 = trainer.evaluate(tuned.to(data.x_test.device), data)
    history = trainer.fit(tuned, data)
    evaluated = history.dropna(subset=["test_metric"])
    curve = pd.DataFrame({"step": [0, *evaluated.step.astype(int)],
                          "test_loss": [loss0, *evaluated.test_loss],
                          "test_accuracy": [acc0, *evaluated.test_metric]})
    tuned = trainer.model
    if config is not None:
        tuned = convert(tuned)
    return tuned.eval(), curve


def recovered(qat: float, ptq: float, reference: float) -> float:
    """Share of the accuracy PTQ lost that QAT won back: (qat - ptq) / (reference - ptq).

    1 is full recovery, 0 none, above 1 QAT beat the reference; NaN when PTQ lost nothing
    (reference <= ptq), where the ratio means nothing.
    """
    gap = reference - ptq
    if not gap > 0:
        return math.nan
    return (qat - ptq) / gap


__all__ = ["QATTrainer", "finetune_curve", "post_training_quantize",
           "recovered"]
