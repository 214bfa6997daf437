"""Activation-gradient sampling during fp32 training, and the underflow table built on it."""

from __future__ import annotations

import pytest
import torch

from precisionlab import gradstats
from precisionlab.data import digits
from precisionlab.models import MLP


def run(seed: int = 0, steps: int = 30):
    data = digits(seed)
    torch.manual_seed(seed)
    model = MLP([64, 32, 10])
    return gradstats.activation_gradients(model, data, steps=steps, batch_size=16, lr=1e-2,
                                          seed=seed, record_every=10)


def test_records_every_linear_output_gradient_at_the_chosen_steps():
    sample = run()
    assert sample.steps_recorded == [0, 10, 20, 29]
    assert sample.values.dtype == torch.float32
    assert sample.values.numel() == 4 * 16 * (32 + 10)  # records x batch x (hidden + logits)
    assert 0 < sample.test_accuracy <= 1 and sample.final_train_loss > 0


def test_same_seed_same_gradients_and_training_learns():
    a, b = run(), run()
    assert torch.equal(a.values, b.values)
    assert run(steps=200).test_accuracy > 0.85


def test_matches_autograd_gradient_of_the_logits():
    data = digits(0)
    torch.manual_seed(0)
    model = MLP([64, 10])
    reference = MLP([64, 10])
    reference.load_state_dict(model.state_dict())
    sample = gradstats.activation_gradients(model, data, steps=1, batch_size=8, lr=1e-3, seed=0,
                                            record_every=1)
    idx = torch.randint(len(data.x_train), (8,), generator=torch.Generator().manual_seed(0))
    logits = reference(data.x_train[idx]).detach().requires_grad_()
    torch.nn.functional.cross_entropy(logits, data.y_train[idx]).backward()
    assert torch.equal(sample.values, logits.grad.flatten())


def test_underflow_table_fractions_sum_to_one_and_scaling_helps():
    values = run().values
    table = gradstats.underflow_table(values, ["fp16", "bf16"], [0, 16])
    parts = table[["flushed", "subnormal", "normal", "overflow"]].sum(axis=1)
    assert parts.round(12).eq(1.0).all()
    fp16 = table[table.format == "fp16"].set_index("log2_scale")
    assert fp16.loc[16, "flushed"] <= fp16.loc[0, "flushed"]


def test_bad_batch_size_is_a_clear_error():
    with pytest.raises(ValueError, match=r"^batch_size: must be from 1 to 1347"):
        gradstats.activation_gradients(MLP([64, 10]), digits(0), steps=1, batch_size=5000,
                                       lr=1e-3, seed=0, record_every=1)


def test_the_run_is_the_trainers_32_true_run():
    from precisionlab.amp import Trainer

    data = digits(0)
    torch.manual_seed(0)
    ours, theirs = MLP([64, 32, 10]), MLP([64, 32, 10])
    theirs.load_state_dict(ours.state_dict())
    gradstats.activation_gradients(ours, data, steps=12, batch_size=16, lr=1e-2, seed=3,
                                   record_every=5)
    Trainer(lr=1e-2, steps=12, batch_size=16, seed=3, eval_every=None, device="cpu",
            progress=False).fit(theirs, data)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)  # the same batches and the same Adam updates
