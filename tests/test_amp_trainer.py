"""The Trainer: bit-exact with a plain loop at 32-true, correct accumulation, scaling, errors."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from precisionlab.amp.trainer import Trainer, plain_loop, steady_seconds_per_step
from precisionlab.data import digits
from precisionlab.models import MLP

DATA = digits(0)


def model(seed: int = 0, sizes=(64, 32, 10)) -> MLP:
    torch.manual_seed(seed)
    return MLP(list(sizes))


def params(m: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in m.parameters()]


def fit(**kwargs) -> tuple[torch.nn.Module, object]:
    m = kwargs.pop("m", None) or model()
    trainer = Trainer(progress=False, threads=2, **kwargs)
    history = trainer.fit(m, DATA)
    return trainer.model, history


def test_32_true_reproduces_a_plain_loop_bit_for_bit():
    trained, _ = fit(precision="32-true", steps=25, batch_size=32, lr=1e-2, seed=3)
    reference = plain_loop(model(), DATA, steps=25, batch_size=32, lr=1e-2, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(params(trained), params(reference), strict=True))


def test_bf16_mixed_matches_a_plain_autocast_loop_bit_for_bit():
    trained, _ = fit(precision="bf16-mixed", steps=15, batch_size=32, lr=1e-2, seed=1)
    reference = plain_loop(model(), DATA, steps=15, batch_size=32, lr=1e-2, seed=1,
                           precision="bf16-mixed")
    assert all(torch.equal(a, b) for a, b in zip(params(trained), params(reference), strict=True))


@pytest.mark.parametrize("precision, rtol", [("32-true", 1e-5), ("bf16-mixed", 2e-2)])
def test_accumulating_k_micro_batches_equals_one_big_batch(precision, rtol):
    one, h1 = fit(precision=precision, optimizer="sgd", steps=10, batch_size=64, lr=0.05)
    four, h4 = fit(precision=precision, optimizer="sgd", steps=10, batch_size=64, lr=0.05,
                   accumulation_steps=4)
    for a, b in zip(params(one), params(four), strict=True):
        assert torch.allclose(a, b, rtol=rtol, atol=rtol * a.abs().max())
    # the logged loss is the mean over the whole batch, whatever the split
    assert h1.loss.iloc[0] == pytest.approx(h4.loss.iloc[0], rel=rtol)
    assert (h1.loss.iloc[0] != h4.loss.iloc[0]) or precision == "32-true"


def test_scaler_steps_once_per_optimizer_step_with_accumulation():
    _, history = fit(precision="16-mixed", steps=8, batch_size=32, accumulation_steps=4,
                     init_scale=2.0**4, growth_interval=2)
    assert not history.skipped.any()
    assert history.loss_scale.tolist() == [16.0, 16.0, 32.0, 32.0, 64.0, 64.0, 128.0, 128.0]


def test_overflowing_scale_skips_steps_and_backs_off():
    m = model()
    before = params(m)
    trained, history = fit(m=m, precision="16-mixed", steps=6, init_scale=2.0**60)
    assert history.skipped.iloc[0] and history.loss_scale.iloc[1] == 2.0**59
    skipped_run = history.skipped.cummin()  # the leading run of skipped steps
    if skipped_run.all():
        assert all(torch.equal(a, b) for a, b in zip(before, params(trained), strict=True))
    assert history.skipped.sum() >= 1


def test_clipping_bounds_the_update_after_unscaling():
    m = model()
    before = params(m)
    trained, history = fit(m=m, precision="16-mixed", optimizer="sgd", lr=1.0, steps=1,
                           clip_norm=1e-3, init_scale=2.0**10)
    step = torch.cat([(a - b).flatten() for a, b in zip(params(trained), before, strict=True)])
    assert history.grad_norm.iloc[0] > 1e-3  # the norm is logged before clipping, unscaled
    assert step.norm().item() == pytest.approx(1e-3, rel=1e-3)


def test_history_has_one_row_per_step_and_evaluates():
    _, history = fit(steps=6, eval_every=3)
    assert history.step.tolist() == [1, 2, 3, 4, 5, 6]
    assert history.test_loss.notna().tolist() == [False, False, True, False, False, True]
    assert list(history.columns) == ["step", "loss", "metric", "test_loss", "test_metric",
                                     "loss_scale", "skipped", "grad_norm", "lr", "seconds"]
    assert history.seconds.is_monotonic_increasing


def test_mixed_keeps_fp32_master_weights_and_true_casts_them():
    mixed, _ = fit(precision="bf16-mixed", steps=2)
    pure, _ = fit(precision="bf16-true", steps=2)
    assert {p.dtype for p in mixed.parameters()} == {torch.float32}
    assert {p.dtype for p in pure.parameters()} == {torch.bfloat16}


def test_weights_gone_nan_count_as_stalled():
    _, history = fit(precision="16-true", optimizer="adam", lr=1e-3, steps=3, track_stalled=True)
    broken = ~history.loss.apply(float).map(lambda v: v == v)  # NaN loss: fp16 Adam broke
    assert broken.any()
    assert history.stalled[broken].eq(1.0).all()


def test_pure_bf16_sgd_loses_small_updates():
    _, pure = fit(precision="bf16-true", optimizer="sgd", lr=1e-4, steps=3, track_stalled=True)
    _, full = fit(precision="32-true", optimizer="sgd", lr=1e-4, steps=3, track_stalled=True)
    assert pure.stalled.mean() > 0.5 > full.stalled.mean()


@pytest.mark.parametrize("kwargs, message", [
    ({"precision": "fp16"}, r"^precision: unknown 'fp16'; known: 64-true, 32-true, 16-mixed"),
    ({"accumulation_steps": 0}, r"^accumulation_steps: must be an integer >= 1; got 0"),
    ({"accumulation_steps": 3}, r"^accumulation_steps: must divide batch_size \(64\)"),
    ({"lr": 0}, r"^lr: must be a number > 0; got 0"),
    ({"lr": -1e-3}, r"^lr: must be a number > 0"),
    ({"clip_norm": 0.0}, r"^clip_norm: must be None or a number > 0; got 0.0"),
    ({"precision": "16-true", "loss_scaler": "dynamic"}, r"^loss_scaler: 16-true keeps fp16"),
    ({"precision": "16-true", "loss_scaler": 1024.0}, r"^loss_scaler: 16-true keeps fp16"),
    ({"loss_scaler": "static"}, r"^loss_scaler: must be one of auto, dynamic, none"),
    ({"optimizer": "lion"}, r"^optimizer: must be one of sgd, adam, adamw"),
    ({"device": "tpu"}, r"^device: must be one of auto, cpu, cuda"),
    ({"eps": 0.0}, r"^eps: must be None or a number in \(0, 1\); got 0.0"),
    ({"optimizer": "sgd", "eps": 1e-4}, r"^eps: only Adam and AdamW have an eps"),
])
def test_bad_arguments_fail_when_the_trainer_is_made(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Trainer(**kwargs)


def test_batch_larger_than_the_data_fails_before_training():
    m = model()
    before = params(m)
    with pytest.raises(ValueError, match=r"^batch_size: must be at most the training set size"):
        Trainer(batch_size=5000, progress=False).fit(m, DATA)
    assert all(torch.equal(a, b) for a, b in zip(before, params(m), strict=True))


def test_batch_indices_are_the_seeded_stream_every_loop_draws():
    import itertools

    from precisionlab.amp.trainer import batch_indices

    a = list(itertools.islice(batch_indices(100, 8, seed=5), 3))
    g = torch.Generator().manual_seed(5)
    b = [torch.randint(100, (8,), generator=g) for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_mse_objective_matches_a_hand_written_regression_loop_bit_for_bit():
    from precisionlab.amp.trainer import batch_indices
    from precisionlab.data import Split

    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 8, generator=g)
    y = x @ torch.randn(8, 2, generator=g) + 0.1 * torch.randn(96, 2, generator=g)
    data = Split("linear", x[:64], y[:64], x[64:], y[64:])
    torch.manual_seed(5)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    hand = copy.deepcopy(net)
    history = Trainer(progress=False, threads=2, objective="mse", steps=10, batch_size=16,
                      lr=1e-2, seed=2).fit(net, data)
    opt = torch.optim.Adam(hand.parameters(), lr=1e-2)
    for _, idx in zip(range(10), batch_indices(64, 16, 2), strict=False):
        loss = torch.nn.functional.mse_loss(hand(x[idx]), y[idx])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert all(torch.equal(a, b) for a, b in zip(params(net), params(hand), strict=True))
    with torch.no_grad():
        test_mse = float(torch.nn.functional.mse_loss(hand(x[64:]), y[64:]))
    assert history["test_loss"].iloc[-1] == pytest.approx(test_mse, rel=1e-6)
    assert history["test_metric"].iloc[-1] == history["test_loss"].iloc[-1]
    assert (history["metric"] == history["loss"]).all()


def test_unknown_objective_is_refused_before_training():
    with pytest.raises(ValueError, match="objective: must be one of cross-entropy, mse"):
        Trainer(objective="mae")


def test_eps_reaches_the_optimizer_and_rescues_pure_fp16_adam():
    """Adam's default eps (1e-8) rounds to 0 in fp16, so pure-fp16 Adam divides by ~0 and its
    weights go non-finite; an eps fp16 can hold (1e-4) trains."""
    runs = {}
    for eps in (None, 1e-4):
        split = digits(0)
        torch.manual_seed(0)
        model = MLP([split.n_features, 32, split.n_classes])
        trainer = Trainer(precision="16-true", optimizer="adam", lr=1e-3, steps=40, eps=eps,
                          device="cpu", progress=False)
        runs[eps] = trainer.fit(model, split)
        assert trainer.optimizer_.param_groups[0]["eps"] == (1e-8 if eps is None else eps)
    assert not np.isfinite(runs[None].loss.to_numpy()).all()
    assert np.isfinite(runs[1e-4].loss.to_numpy()).all()
    assert runs[1e-4].loss.iloc[-5:].mean() < runs[1e-4].loss.iloc[:5].mean()


def test_steady_seconds_per_step_reads_the_fits_clock_after_its_first_step():
    # the first step ends late (set-up and Adam's state), the next three take 0.5 s each
    history = pd.DataFrame({"step": [1, 2, 3, 4], "seconds": [5.0, 5.5, 6.0, 6.5]})
    assert steady_seconds_per_step(history) == pytest.approx(0.5)
    assert steady_seconds_per_step(history.iloc[:2]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least 2 steps"):
        steady_seconds_per_step(history.iloc[:1])
    with pytest.raises(ValueError, match="seconds"):
        steady_seconds_per_step(history.drop(columns="seconds"))
    _, real = fit(precision="32-true", steps=3, batch_size=16, eval_every=None)
    per_step = steady_seconds_per_step(real)
    assert 0 < per_step < real.seconds.iloc[-1] / 2  # two of three steps, set-up left out
