"""audit.run's measurements against direct computations with the Trainer, casts and PTQ."""

from __future__ import annotations

import math
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from precisionlab.amp.trainer import Trainer, evaluate
from precisionlab.data import Split
from precisionlab.quant.ptq import quantize_ptq
from precisionlab.study import audit
from precisionlab.study.audit import measure

MODULE = """
import torch
from torch import nn

def tiny():
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

def hot():
    m = tiny()
    with torch.no_grad():
        m[0].weight.mul_(1e6)  # outputs far beyond fp16's 65504
    return m

def cold():
    m = tiny()
    with torch.no_grad():
        m[2].weight.mul_(1e-6)  # tiny output gradients upstream: some flush in fp16
    return m

def regressor():
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))

def lm():
    return nn.Sequential(nn.Embedding(7, 8), nn.Linear(8, 7))

def classes():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    return (x[:64], y[:64]), (x[64:], y[64:])

def values():
    (x, _), (xt, _) = classes()
    return (x, x[:, 0] - x[:, 1]), (xt, xt[:, 0] - xt[:, 1])

def tokens():
    ids = (torch.arange(48 * 5) * 3 % 7).reshape(48, 5)
    return (ids[:32, :-1], ids[:32, 1:]), (ids[32:, :-1], ids[32:, 1:])
"""

SEEDS = [0, 1, 2]


@pytest.fixture(scope="module")
def mod(tmp_path_factory):
    """A model module outside src/, importable from its folder (the current directory)."""
    path = tmp_path_factory.mktemp("audit_measure")
    (path / "audit_measure_models.py").write_text(textwrap.dedent(MODULE))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(path)
        mp.setattr(sys, "path", list(sys.path))
        yield "audit_measure_models"


@pytest.fixture(scope="module")
def audited(mod):
    """One small audit of the tiny MLP: every precision, seeds 0-2, 6 steps."""
    torch.set_num_threads(1)
    subject = audit.load(f"{mod}:tiny", f"{mod}:classes", "classification")
    params = audit.parameters("smoke", {"seeds": SEEDS, "steps": 6, "batch_size": 16,
                                        "ptq": ["w8-channel", "w4-g8", "w8a8-tensor"],
                                        "loss_scales": [0, 10, 20], "device": "cpu",
                                        "threads": 1})
    return subject, params, audit.run(subject, params)


def _direct(subject, params, seed):
    """The run the audit should have made: same seed, same fresh model, the Trainer."""
    torch.manual_seed(seed)
    trainer = Trainer(precision="32-true", optimizer=params["optimizer"], lr=params["lr"],
                      steps=params["steps"], batch_size=params["batch_size"], eval_every=None,
                      device="cpu", seed=seed, progress=False)
    data = measure.eval_split(subject.split, params["eval_examples"])
    model = subject.make_model()
    trainer.fit(model, data)
    return model, data, evaluate(model, data, chunk=params["batch_size"])


def test_fp32_runs_are_the_trainer_bit_for_bit(audited):
    subject, params, result = audited
    runs = result.runs
    assert len(runs) == len(params["precisions"]) * len(SEEDS)
    for seed in SEEDS:
        _, _, (loss, acc) = _direct(subject, params, seed)
        row = runs[(runs.precision == "32-true") & (runs.seed == seed)].iloc[0]
        assert row.test_loss == loss and row.metric == acc and row.finite


def test_the_working_pure_recipe_is_the_trainer_at_16_true_with_its_eps(audited):
    """Adam's default eps adds '16-true, eps 1e-4': 16-true trained with eps=1e-4."""
    from precisionlab.amp.emulation import get_matmul16, set_matmul16

    subject, params, result = audited
    label = "16-true, eps 1e-4"
    assert label in params["precisions"] and params["eps"] is None
    data = measure.eval_split(subject.split, params["eval_examples"])
    before = get_matmul16()
    set_matmul16(result.matmul16)  # the 16-bit matmuls the audit trained with
    try:
        for seed in SEEDS:
            torch.manual_seed(seed)
            trainer = Trainer(precision="16-true", optimizer=params["optimizer"],
                              lr=params["lr"], steps=params["steps"],
                              batch_size=params["batch_size"], eval_every=None, device="cpu",
                              seed=seed, progress=False, eps=1e-4)
            trainer.fit(subject.make_model(), data)
            loss, _ = measure._evaluate(trainer.model, data, "16-true", subject.task,
                                        params["batch_size"])
            row = result.runs[(result.runs.precision == label) & (result.runs.seed == seed)]
            assert row.test_loss.item() == loss or (math.isnan(loss)
                                                    and math.isnan(row.test_loss.item()))
            assert trainer.optimizer_.defaults["eps"] == 1e-4
    finally:
        set_matmul16(before)
    # the gradient before any step does not depend on eps: the same cosine as 16-true's
    c = result.cosine.set_index(["precision", "seed"]).cosine
    for seed in SEEDS:
        a, b = c[("16-true", seed)], c[(label, seed)]
        assert a == b or (math.isnan(a) and math.isnan(b))
    assert label in set(result.parity.precision) and label in set(result.speed.precision)
    assert len(result.history[result.history.precision == label]) == len(SEEDS) * params["steps"]


def test_the_timed_step_uses_the_labels_eps(mod):
    s = audit.load(f"{mod}:tiny", f"{mod}:classes", "classification")
    x, y = s.split.x_train[:8], s.split.y_train[:8]
    for eps, label, want in [(None, "16-true", 1e-8), (None, "16-true, eps 1e-4", 1e-4),
                             (1e-3, "bf16-true", 1e-3)]:
        params = audit.parameters("smoke", {"eps": eps})
        step, _, model, opt = measure._step_fns(s, params, label, x, y)
        step()
        assert opt.defaults["eps"] == want
        assert next(model.parameters()).dtype == (torch.bfloat16 if label == "bf16-true"
                                                  else torch.float16)


def test_history_and_parity_shapes(audited):
    _, params, result = audited
    assert len(result.history) == len(params["precisions"]) * len(SEEDS) * params["steps"]
    mixed = result.history[result.history.precision == "16-mixed"]
    assert (mixed.loss_scale == 2.0**16).all() or mixed.skipped.any()
    parity = result.parity.set_index("precision")
    assert list(parity.index) == params["precisions"][1:]
    assert (parity.n == len(SEEDS)).all()
    assert set(parity.outcome) <= {"equivalent", "better", "worse", "inconclusive", "underpowered",
                                   "diverged"}
    assert (parity.detectable.dropna() >= 0).all()


def test_cosine_of_fp32_to_itself_is_one(audited):
    _, _, result = audited
    c = result.cosine
    assert np.allclose(c[c.precision == "32-true"].cosine, 1.0, atol=1e-12)
    low = c[c.precision == "bf16-mixed"].cosine
    assert ((low > 0.99) & (low < 1.0)).all()  # close, not identical


def test_module_table_flags_the_module_made_to_overflow(mod):
    s = audit.load(f"{mod}:hot", f"{mod}:classes", "classification")
    x, y = s.split.x_train[:16], s.split.y_train[:16]
    info, grads = measure.module_gradients(s.make_model(), x, y, s.task, 0)
    t = measure.module_table(info, grads).set_index("name")
    assert t.loc["0", "fwd_overflow_fp16"] and t.loc["0", "fwd_amax"] > 65504
    assert not t.loc["2", "grad_overflow_fp16"]
    first = measure.fp16_forward_inf(s.make_model(), x)
    assert first == "0"
    from precisionlab.study.audit.summary import overflow_of
    over = overflow_of(measure.module_table(info, grads), first)
    assert over["module"] == "0" and over["where"] == "forward" and over["fp16_forward_inf"] == "0"


def test_underflow_shares_match_a_direct_cast(mod):
    s = audit.load(f"{mod}:cold", f"{mod}:classes", "classification")
    x, y = s.split.x_train[:16], s.split.y_train[:16]
    info, grads = measure.module_gradients(s.make_model(), x, y, s.task, 0)
    table = measure.underflow_table(grads, [4, 12])
    values = torch.cat(list(grads.values()))
    nonzero = values[values != 0]
    for k in (0, 4, 12):
        want = float(((nonzero * 2.0**k).half() == 0).sum()) / nonzero.numel()
        got = table[(table.format == "fp16") & (table.log2_scale == k)].flushed.item()
        assert got == want
    assert table[(table.format == "fp16") & (table.log2_scale == 0)].flushed.item() > 0
    per_module = measure.module_table(info, grads).set_index("name")
    g0 = grads["0"][grads["0"] != 0]
    assert per_module.loc["0", "grad_flushed_fp16"] == float((g0.half() == 0).sum()) / g0.numel()
    hist = measure.histogram_table(grads)
    assert hist["count"].sum() == values.numel()


def test_ptq_matches_quantize_ptq_on_the_same_model(audited):
    subject, params, result = audited
    model, data, (_, acc) = _direct(subject, params, 1)
    q, fallback = quantize_ptq(model, measure.ptq_config("w8-channel"))
    want = evaluate(q, data, chunk=params["batch_size"])[1]
    row = result.ptq[(result.ptq.config == "w8-channel") & (result.ptq.seed == 1)].iloc[0]
    assert row.metric == want and row.fp32_metric == acc and fallback == []
    assert row["drop"] == pytest.approx(acc - want)
    g8 = result.ptq[result.ptq.config == "w4-g8"]
    assert (g8.fallback == "").all() and len(result.ptq) == 3 * len(SEEDS)


def test_speed_and_memory_tables(audited):
    _, params, result = audited
    speed = result.speed.set_index("precision")
    assert list(speed.index) == params["precisions"]
    assert speed.loc["32-true", "train_step_ratio"] == 1.0
    assert (speed[["train_step_s", "inference_s"]] > 0).all().all()
    # every ratio has the 95 % interval of its per-round ratios (32-true's is exactly 1)
    for name in ("train_step_ratio", "inference_ratio"):
        assert speed.loc["32-true", f"{name}_low"] == speed.loc["32-true", f"{name}_high"] == 1
        assert (speed[f"{name}_low"] <= speed[name]).all()
        assert (speed[name] <= speed[f"{name}_high"]).all()  # the bar sits inside its error bar
    mem = result.memory.set_index("precision")
    n = sum(p.numel() for p in nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 3)).parameters())
    assert mem.loc["32-true", "weights_bytes"] == 4 * n
    assert mem.loc["bf16-true", "weights_bytes"] == 2 * n
    assert mem.loc["16-mixed", "weights_bytes"] == 4 * n  # fp32 master weights
    assert mem.loc["32-true", "optimizer_bytes"] == 2 * 4 * n  # Adam: two moments
    assert (mem.activation_bytes > 0).all() and mem.peak_cuda_bytes.isna().all()


def test_regression_and_language_model_audits(mod):
    params = audit.parameters("smoke", {"seeds": [0, 1], "steps": 2, "batch_size": 8,
                                        "precisions": ["bf16-mixed"], "ptq": ["w8-channel"],
                                        "device": "cpu", "threads": 1})
    reg = audit.load(f"{mod}:regressor", f"{mod}:values", "regression")
    r = audit.run(reg, params)
    assert (r.runs.metric == r.runs.test_loss).all()  # the metric of regression is the MSE
    lm = audit.load(f"{mod}:lm", f"{mod}:tokens", "language-model")
    r = audit.run(lm, params)
    assert np.allclose(r.runs.metric, np.exp(r.runs.test_loss))  # perplexity
    assert set(r.parity.precision) == {"bf16-mixed"}


def _runs(metric_32, metric_low, loss_low=None):
    rows = []
    for seed, (a, b) in enumerate(zip(metric_32, metric_low, strict=True)):
        rows.append({"precision": "32-true", "seed": seed, "test_loss": 1.0, "metric": a,
                     "finite": True})
        loss = 1.0 if loss_low is None else loss_low[seed]
        rows.append({"precision": "16-true", "seed": seed, "test_loss": loss, "metric": b,
                     "finite": math.isfinite(loss)})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("task, low, loss, outcome", [
    ("classification", [0.900, 0.801, 0.7005], None, "equivalent"),
    ("classification", [0.80, 0.70, 0.60], None, "worse"),
    ("classification", [0.95, 0.85, 0.75], None, "better"),
    ("classification", [0.95, 0.70, 0.80], None, "inconclusive"),
    ("classification", [0.90, 0.80, 0.70], [1.0, math.nan, 1.0], "diverged"),
    ("regression", [0.95, 0.85, 0.75], None, "worse"),  # MSE up: worse
    ("regression", [0.85, 0.75, 0.65], None, "better"),
])
def test_parity_outcomes(task, low, loss, outcome):
    t = measure.parity_table(_runs([0.9, 0.8, 0.7], low, loss), task, 0.01)
    assert t.outcome.item() == outcome and t.n.item() == 3


def test_accuracy_resolution_decides_a_zero_width_interval():
    """Identical accuracies on every seed: unknown noise without the metric's resolution
    ('underpowered'); with one test example's share stated, the design's power is known."""
    same = _runs([0.9, 0.8, 0.7], [0.9, 0.8, 0.7])
    assert measure.parity_table(same, "classification", 0.01).outcome.item() == "underpowered"
    fine = measure.parity_table(same, "classification", 0.01, resolution=1 / 2000)
    assert fine.outcome.item() == "equivalent" and 0 < fine.detectable.item() < 0.01
    coarse = measure.parity_table(same, "classification", 0.01, resolution=1 / 100)
    assert coarse.outcome.item() == "underpowered" and coarse.detectable.item() > 0.01
    data = Split("s", torch.zeros(4, 2), torch.zeros(4), torch.zeros(300, 2), torch.zeros(300))
    assert measure.resolution("classification", data, 2048) == 1 / 300
    assert measure.resolution("classification", data, 100) == 1 / 100
    assert measure.resolution("regression", data, 100) == 0.0
    assert measure.resolution("language-model", data, 100) == 0.0


def test_plots_and_tables_of_a_real_audit(audited):
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    _, params, result = audited
    for name in ("parity", "histograms", "scaler_trace", "underflow", "ptq", "speed"):
        fig = getattr(audit.plots, name)(result)
        assert isinstance(fig, Figure), name
        ax = fig.axes[0]
        assert ax.get_xlabel() and (ax.get_ylabel() or name in ("parity", "speed")), name
        assert any(result.hardware[:20] in t.get_text() for t in fig.texts), name  # signed
        if name == "speed":  # every timed bar carries its interval
            from matplotlib.container import BarContainer

            bars = [c for c in fig.axes[0].containers if isinstance(c, BarContainer)]
            assert len(bars) == 2 and all(b.errorbar is not None for b in bars)
        plt.close(fig)
    rows = {"parity": len(params["precisions"]) - 1, "modules": 3, "underflow": 3, "ptq": 3,
            "speed": len(params["precisions"]), "memory": len(params["precisions"])}
    for name, n in rows.items():
        table = getattr(audit.tables, name)(result)
        assert isinstance(table, pd.DataFrame) and len(table) == n, name
        assert isinstance(table.index, pd.RangeIndex), name
    assert list(audit.tables.underflow(result).columns) == ["loss scale", "fp16", "bf16"]


def test_cosine_by_parameter_equals_the_flat_cosine_and_refuses_non_finite():
    from precisionlab.study.audit.measure import cosine

    g = torch.Generator().manual_seed(0)
    a = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
    b = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
    flat = torch.nn.functional.cosine_similarity(
        torch.cat([t.flatten() for t in a]).double(), torch.cat([t.flatten() for t in b]).double(),
        dim=0)
    assert cosine(a, b) == pytest.approx(float(flat), abs=1e-12)
    assert cosine(a, a) == pytest.approx(1.0, abs=1e-12)
    assert math.isnan(cosine([a[0], torch.full((5,), math.inf)], b))
    assert math.isnan(cosine([torch.zeros(3, 4), torch.zeros(5)], b))


def test_round_ratio_is_the_geometric_mean_of_paired_rounds_and_inside_its_interval():
    from scipy import stats as sps

    ref = pd.Series([1.0] * 11)
    sec = pd.Series([1.0] * 5 + [1.3] * 6)  # median ratio 1.3, above the interval's top
    mean, low, high = measure.round_ratio(sec, ref)
    logs = np.log(sec / ref)
    half = sps.t.ppf(0.975, 10) * logs.std(ddof=1) / np.sqrt(11)
    np.testing.assert_allclose([mean, low, high], np.exp([logs.mean(), logs.mean() - half,
                                                          logs.mean() + half]))
    assert low <= mean <= high and (sec / ref).median() > high

