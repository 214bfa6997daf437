"""Loss scalers against torch.amp.GradScaler: same scales, same skipped steps, same weights."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from precisionlab.amp import DynamicLossScaler, NoLossScaler, StaticLossScaler

STEPS = 64
INF_LOSS_STEPS = {4, 5, 6, 20, 41}  # loss * inf: every gradient inf or NaN
NAN_GRAD_STEPS = {30, 50}  # one gradient entry set to NaN after backward
BIG_LOSS_STEPS = {10, 11, 12, 13, 14}  # loss * 2**12: finite, overflows only a huge scale


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3))


def batches():
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 6, generator=g), torch.randn(8, 3, generator=g))
            for _ in range(STEPS)]


def train(scaler, opt_name, forced=True, skip=()):
    """Train STEPS steps; return (scale after each update, indices of skipped steps, model).

    With scaler=None, train without scaling and skip the steps listed in `skip`.
    """
    model = make_model()
    params = list(model.parameters())
    opt = (torch.optim.SGD(params, lr=0.1, momentum=0.9) if opt_name == "sgd"
           else torch.optim.Adam(params, lr=1e-2))
    scales, skipped = [], []
    for i, (x, y) in enumerate(batches()):
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(x), y)
        if i in BIG_LOSS_STEPS:
            loss = loss * 2.0**12
        if forced and i in INF_LOSS_STEPS:
            loss = loss * math.inf
        before = [p.detach().clone() for p in params]
        if scaler is None:
            loss.backward()
            if i % 2:
                nn.utils.clip_grad_norm_(params, 1.0)
            if i not in skip:
                opt.step()
        else:
            scaler.scale(loss).backward()
            if forced and i in NAN_GRAD_STEPS:
                params[0].grad[0, 0] = math.nan
            if i % 2:  # the explicit path: unscale_ then clip, as a training loop would
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(params, 1.0)
            scaler.step(opt)
            scaler.update()
            scales.append(scaler.get_scale())
        if all(torch.equal(b, p) for b, p in zip(before, params, strict=True)):
            skipped.append(i)
    return scales, skipped, model


def assert_same_params(a, b):
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


# (init_scale, growth_factor, backoff_factor, growth_interval)
CONFIGS = [
    (2.0**16, 2.0, 0.5, 3),
    (2.0**126, 2.0, 0.5, 3),  # BIG_LOSS_STEPS overflow fp32 by themselves; growth hits 2**127
    (1000.0, 1.5, 0.3, 4),  # non-power-of-two scales: tests the float32 rounding of the scale
]


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
@pytest.mark.parametrize("config", CONFIGS)
def test_dynamic_matches_gradscaler_exactly(config, opt_name):
    init, growth, backoff, interval = config
    ours = DynamicLossScaler(init, growth, backoff, interval)
    theirs = torch.amp.GradScaler("cpu", init_scale=init, growth_factor=growth,
                                  backoff_factor=backoff, growth_interval=interval)
    s1, k1, m1 = train(ours, opt_name)
    s2, k2, m2 = train(theirs, opt_name)
    assert s1 == s2
    assert k1 == k2
    assert ours.skipped_steps == len(k1)
    assert set(INF_LOSS_STEPS | NAN_GRAD_STEPS) <= set(k1)
    assert set(k1) - INF_LOSS_STEPS - NAN_GRAD_STEPS == (BIG_LOSS_STEPS if init > 2**100 else set())
    assert len(set(s1)) > 3  # the scale really moved both ways
    assert_same_params(m1, m2)


def test_dynamic_never_grows_to_inf():
    # Zero gradients never overflow, so the scale grows every step until float32 runs out.
    ours = DynamicLossScaler(2.0**125, growth_interval=1)
    theirs = torch.amp.GradScaler("cpu", init_scale=2.0**125, growth_interval=1)
    w = nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.1)
    for scaler in (ours, theirs):
        scales = []
        for _ in range(4):
            scaler.scale((w * 0).sum()).backward()
            scaler.step(opt)
            scaler.update()
            scales.append(scaler.get_scale())
        assert scales == [2.0**126, 2.0**127, 2.0**127, 2.0**127]


def test_static_matches_gradscaler_with_factors_that_round_away():
    # GradScaler rejects growth_factor=1 and backoff_factor=1, but the float64 neighbours of 1
    # round back to the same float32 scale, so it can express a static scale after all.
    ours = StaticLossScaler(1000.0)
    theirs = torch.amp.GradScaler("cpu", init_scale=1000.0,
                                  growth_factor=math.nextafter(1.0, 2.0),
                                  backoff_factor=math.nextafter(1.0, 0.0), growth_interval=1)
    s1, k1, m1 = train(ours, "adam")
    s2, k2, m2 = train(theirs, "adam")
    assert s1 == s2 == [1000.0] * STEPS
    assert k1 == k2 == sorted(INF_LOSS_STEPS | NAN_GRAD_STEPS)
    assert ours.skipped_steps == len(k1)
    assert_same_params(m1, m2)


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_static_power_of_two_equals_unscaled_training(opt_name):
    # Multiplying by 2**10 and by 2**-10 is exact in fp32 (no over/underflow here).
    skip = sorted(INF_LOSS_STEPS | NAN_GRAD_STEPS)
    s1, k1, m1 = train(StaticLossScaler(2.0**10), opt_name)
    _, _, m2 = train(None, opt_name, forced=False, skip=skip)
    assert s1 == [2.0**10] * STEPS
    assert k1 == skip
    assert_same_params(m1, m2)


def one_backward(scaler=None, scale=None):
    """Gradients of one loss on the tiny model, optionally scaled and unscaled."""
    model = make_model()
    x, y = batches()[0]
    loss = F.mse_loss(model(x), y)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    if scaler is None:
        loss.backward()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
    return [p.grad for p in model.parameters()], opt


@pytest.mark.parametrize("make", [lambda: StaticLossScaler(2.0**12),
                                  lambda: DynamicLossScaler(2.0**12)])
def test_unscaled_grads_are_bit_identical(make):
    plain, _ = one_backward()
    unscaled, _ = one_backward(make())
    for a, b in zip(plain, unscaled, strict=True):
        assert torch.equal(a, b)


def test_unscale_uses_float32_reciprocal_like_gradscaler():
    ours, theirs = DynamicLossScaler(3.0), torch.amp.GradScaler("cpu", init_scale=3.0)
    g1, _ = one_backward(ours)
    g2, _ = one_backward(theirs)
    for a, b in zip(g1, g2, strict=True):
        assert torch.equal(a, b)


def test_unscale_twice_or_after_step_raises():
    scaler = DynamicLossScaler()
    _, opt = one_backward(scaler)
    with pytest.raises(RuntimeError, match="already been called"):
        scaler.unscale_(opt)
    scaler.step(opt)
    with pytest.raises(RuntimeError, match="after step"):
        scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called"):
        scaler.step(opt)
    scaler.update()
    with pytest.raises(RuntimeError, match="update"):
        scaler.update()


def test_step_unscales_when_the_user_did_not():
    model = make_model()
    x, y = batches()[0]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = StaticLossScaler(2.0**12)
    scaler.scale(F.mse_loss(model(x), y)).backward()
    scaler.step(opt)
    plain, _ = one_backward()
    for p, g in zip(model.parameters(), plain, strict=True):
        assert torch.equal(p.grad, g)


def test_found_inf_is_readable_after_update_until_next_step():
    scaler = DynamicLossScaler(2.0**4)
    w = nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.1)
    scaler.scale((w * math.inf).sum()).backward()
    scaler.step(opt)
    scaler.update()
    assert scaler.found_inf and scaler.skipped_steps == 1 and scaler.get_scale() == 8.0
    assert torch.equal(w, torch.ones(3))
    w.grad = None
    scaler.scale(w.sum()).backward()
    scaler.step(opt)
    scaler.update()
    assert not scaler.found_inf and scaler.skipped_steps == 1


def test_fp16_parameters_are_refused():
    model = nn.Linear(4, 2).half()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = DynamicLossScaler()
    scaler.scale(model(torch.randn(3, 4, dtype=torch.float16)).float().sum()).backward()
    with pytest.raises(ValueError, match="fp16 gradients.*master weights.*16-mixed"):
        scaler.step(opt)


@pytest.mark.parametrize("kwargs, name", [
    ({"init_scale": 0.0}, "init_scale"),
    ({"init_scale": -1.0}, "init_scale"),
    ({"init_scale": math.inf}, "init_scale"),
    ({"init_scale": 1e39}, "init_scale"),  # finite in float64, inf in float32
    ({"init_scale": math.nan}, "init_scale"),
    ({"growth_factor": 1.0}, "growth_factor"),
    ({"growth_factor": math.inf}, "growth_factor"),
    ({"backoff_factor": 1.0}, "backoff_factor"),
    ({"backoff_factor": 0.0}, "backoff_factor"),
    ({"growth_interval": 0}, "growth_interval"),
    ({"growth_interval": 2.5}, "growth_interval"),
])
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        DynamicLossScaler(**kwargs)


@pytest.mark.parametrize("bad", [0.0, -2.0, math.inf, "big"])
def test_static_bad_scale(bad):
    with pytest.raises(ValueError, match="^scale:"):
        StaticLossScaler(bad)


def test_state_dict_round_trip_and_gradscaler_interop():
    ours = DynamicLossScaler(2.0**16, growth_interval=3)
    train(ours, "sgd")
    state = ours.state_dict()
    copy = DynamicLossScaler()
    copy.load_state_dict(state)
    assert copy.state_dict() == state
    theirs = torch.amp.GradScaler("cpu")
    theirs.load_state_dict(state)  # our keys are GradScaler's keys
    assert theirs.get_scale() == ours.get_scale()
    again = DynamicLossScaler()
    again.load_state_dict(theirs.state_dict())
    assert again.state_dict() == {**state, "skipped_steps": 0}

    static = StaticLossScaler(512.0)
    train(static, "sgd")
    restored = StaticLossScaler()
    restored.load_state_dict(static.state_dict())
    assert restored.state_dict() == {"scale": 512.0, "skipped_steps": static.skipped_steps}


def test_no_loss_scaler_is_a_plain_step():
    scaler = NoLossScaler()
    s1, k1, m1 = train(scaler, "adam", forced=False)
    _, _, m2 = train(None, "adam", forced=False)
    assert s1 == [1.0] * STEPS and k1 == [] and scaler.skipped_steps == 0
    assert not scaler.found_inf and scaler.state_dict() == {}
    assert_same_params(m1, m2)
    loss = torch.ones(())
    assert scaler.scale(loss) is loss
