"""Pure 16-bit weights: representable after every step, nearest = a naive loop, stochastic
rounding unbiased, Kahan recovers tiny updates, hooks scoped to the context and the model."""

from __future__ import annotations

import copy

import pytest
import torch

from precisionlab.amp.pure16 import RULES, low_precision_weights
from precisionlab.amp.trainer import Trainer
from precisionlab.data import digits
from precisionlab.models import MLP

ULP_AT_ONE = 2.0**-7  # bf16 keeps 7 fraction bits: the spacing just above 1.0


def mlp(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP([16, 32, 4])


def representable(m: torch.nn.Module, dtype=torch.bfloat16) -> bool:
    return all(torch.equal(p, p.to(dtype).float()) for p in m.parameters())


def adam_steps(m: torch.nn.Module, steps: int, seed: int = 1, lr: float = 1e-3) -> None:
    """A few Adam steps on a fixed random regression batch."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(32, 16, generator=g), torch.randn(32, 4, generator=g)
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(m(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()


def tiny_steps(p: torch.nn.Parameter, delta: float, steps: int) -> None:
    """`steps` SGD steps (lr 1) that each add `delta` to every entry of `p`."""
    opt = torch.optim.SGD([p], lr=1.0)
    for _ in range(steps):
        p.grad = torch.full_like(p, -delta)
        opt.step()


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("rule", RULES)
def test_weights_stay_representable_after_entry_and_every_step(rule, dtype):
    m = mlp()
    start = [p.detach().clone() for p in m.parameters()]
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    with low_precision_weights(m, rule, dtype=dtype) as lp:
        for p, s in zip(m.parameters(), start, strict=True):
            assert p.dtype == torch.float32
            assert torch.equal(p, s.to(low).float())  # round-to-nearest on entry
        for _ in range(5):
            adam_steps(m, 1)
            assert representable(m, low)
    assert len(lp.stats) == 5
    assert all(row["updated"] > 0 for row in lp.stats)


def test_nearest_equals_a_naive_loop_on_rounded_weights():
    m, ref = mlp(), mlp()
    with low_precision_weights(m, "nearest"):
        adam_steps(m, 10)
    # by hand: round, then round after every Adam step
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 16, generator=g), torch.randn(32, 4, generator=g)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    for _ in range(10):
        torch.nn.functional.mse_loss(ref(x), y).backward()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            for p in ref.parameters():
                p.copy_(p.to(torch.bfloat16).float())
    assert all(torch.equal(a, b) for a, b in zip(m.parameters(), ref.parameters(), strict=True))


def test_stochastic_rounding_is_unbiased_where_nearest_loses_the_update():
    delta = ULP_AT_ONE / 10  # far below half an ulp: nearest rounds it away
    means = []
    for seed in range(5):
        p = torch.nn.Parameter(torch.ones(4000))
        with low_precision_weights(torch.nn.ParameterList([p]), "stochastic", seed=seed) as lp:
            tiny_steps(p, delta, 1)
        assert set(p.detach().unique().tolist()) <= {1.0, 1.0 + ULP_AT_ONE}
        assert 0 < lp.stats[0]["lost_share"] < 1
        means.append(p.detach().double().mean())
    mean = float(torch.stack(means).mean())
    # each entry goes up with probability 0.1: sd of the mean = ulp * 0.3 / sqrt(20000)
    assert abs(mean - (1.0 + delta)) < 5 * ULP_AT_ONE * 0.3 / 20000**0.5
    q = torch.nn.Parameter(torch.ones(4000))
    with low_precision_weights(torch.nn.ParameterList([q]), "nearest") as lp:
        tiny_steps(q, delta, 1)
    assert torch.equal(q.detach(), torch.ones(4000))
    assert lp.stats[0]["lost_share"] == 1.0


def test_stochastic_rule_follows_its_seed():
    runs = {}
    for seed in (3, 3, 4):
        m = mlp()
        with low_precision_weights(m, "stochastic", seed=seed):
            adam_steps(m, 3)
        runs.setdefault(seed, []).append(torch.cat([p.detach().flatten()
                                                    for p in m.parameters()]))
    assert torch.equal(runs[3][0], runs[3][1])
    assert not torch.equal(runs[3][0], runs[4][0])


def test_kahan_recovers_accumulated_tiny_updates_that_nearest_loses():
    delta = ULP_AT_ONE / 10
    results = {}
    for rule in ("nearest", "kahan"):
        p = torch.nn.Parameter(torch.ones(8))
        with low_precision_weights(torch.nn.ParameterList([p]), rule) as lp:
            tiny_steps(p, delta, 1000)
        assert torch.equal(p.detach(), p.detach().to(torch.bfloat16).float())
        results[rule] = p.detach()
        assert len(lp.stats) == 1000
    assert torch.equal(results["nearest"], torch.ones(8))
    target = 1.0 + 1000 * delta  # 100 ulp above 1
    assert torch.allclose(results["kahan"], torch.full((8,), target), atol=ULP_AT_ONE)


@pytest.mark.parametrize("fail", [False, True])
def test_hooks_are_removed_on_exit_and_on_exceptions(fail):
    p = torch.nn.Parameter(torch.ones(8))
    try:
        with low_precision_weights(torch.nn.ParameterList([p]), "nearest"):
            if fail:
                raise KeyError("boom")
    except KeyError:
        assert fail
    tiny_steps(p, ULP_AT_ONE / 10, 1)  # no rounding now: the fp32 update stays
    assert torch.equal(p.detach(), torch.full((8,), 1.0 + ULP_AT_ONE / 10))


def test_other_optimizers_parameters_are_untouched():
    mine, other = mlp(0), mlp(1)
    reference = copy.deepcopy(other)
    with low_precision_weights(mine, "stochastic"):
        adam_steps(other, 3)
    adam_steps(reference, 3)
    assert all(torch.equal(a, b) for a, b in zip(other.parameters(), reference.parameters(),
                                                 strict=True))
    assert not representable(other)


@pytest.mark.parametrize("rule", RULES)
def test_trains_under_the_trainer_with_bf16_mixed(rule):
    data = digits(0)
    torch.manual_seed(0)
    m = MLP([64, 32, 10])
    with low_precision_weights(m, rule) as lp:
        history = Trainer(precision="bf16-mixed", steps=60, batch_size=32, lr=3e-3,
                          progress=False, threads=1, eval_every=None).fit(m, data)
    assert history["loss"].iloc[-10:].mean() < 0.5 * history["loss"].iloc[:5].mean()
    assert representable(m)
    frame = lp.frame()
    assert list(frame["step"]) == list(range(1, 61))
    assert (frame["lost"] <= frame["updated"]).all()


def test_bf16_true_storage_is_refused_with_a_pointer_to_bf16_mixed():
    torch.manual_seed(0)
    m = MLP([64, 8, 10])
    with low_precision_weights(m, "kahan"), pytest.raises(RuntimeError, match="bf16-mixed"):
        Trainer(precision="bf16-true", steps=2, batch_size=8, progress=False,
                eval_every=None, threads=1).fit(m, digits(0))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"rule": "round"}, "rule: unknown 'round'; known: nearest, stochastic, kahan"),
    ({"dtype": "fp8"}, "dtype: unknown 'fp8'; known: bf16, fp16"),
    ({"seed": -1}, "seed: must be an integer >= 0"),
    ({"seed": 1.5}, "seed: must be an integer >= 0"),
    ({"seed": True}, "seed: must be an integer >= 0"),
])
def test_bad_arguments_fail_before_any_change(kwargs, match):
    m = mlp()
    before = [p.detach().clone() for p in m.parameters()]
    with pytest.raises(ValueError, match=match):
        low_precision_weights(m, **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(m.parameters(), before, strict=True))


def test_models_without_fp32_floating_parameters_are_refused():
    with pytest.raises(ValueError, match="model: has no floating parameters"):
        low_precision_weights(torch.nn.ReLU())
    with pytest.raises(ValueError, match="model: parameters must be stored in torch.float32"):
        low_precision_weights(mlp().double())
    with pytest.raises(ValueError, match="model: must be a torch.nn.Module"):
        low_precision_weights([torch.nn.Parameter(torch.ones(2))])
