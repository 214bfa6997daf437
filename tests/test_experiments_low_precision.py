"""Chapter 15's experiments on tiny settings: the recipes train what they say, the FP8
statistics are shares, and the scripted range change shows what delayed scaling loses."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from precisionlab.amp import Trainer
from precisionlab.amp.float8 import Float8Linear
from precisionlab.study.experiments import language_models as lm
from precisionlab.study.experiments import low_precision as lp

TINY = dict(steps=3, batch=4, context=8, d_model=32, n_layers=1, eval_every=2, n_train=32,
            n_val=8)


@pytest.fixture(scope="module")
def trained():
    return lp.train([0, 1], lp.RECIPES, **TINY)


def test_train_gives_one_run_per_seed_and_recipe(trained):
    runs, curves, fp8 = trained
    assert len(runs) == 2 * len(lp.RECIPES)
    assert list(runs.recipe[:len(lp.RECIPES)]) == list(lp.RECIPES)
    assert set(curves.step) == {2, 3}  # every eval_every steps and the last
    assert (runs.diverged == ~np.isfinite(runs.val_loss)).all()
    ok = runs[runs.recipe != "16-true"]
    assert np.isfinite(ok.val_loss).all() and (ok.stalled >= 0).all()
    assert set(fp8.recipe) == set(lp.FLOAT8_RECIPES)
    assert set(fp8.tensor) == {"input", "weight", "grad_output"}
    assert set(fp8.step) == {1, 2, 3}  # one record per optimizer step, none from evaluation
    for col in ("underflow", "saturated", "underflow_max", "saturated_max"):
        assert fp8[col].between(0, 1).all()


def test_pure_fp16_with_an_eps_fp16_holds_trains_where_the_naive_recipe_divides_by_zero(
        trained):
    runs, _, _ = trained
    by = runs[runs.seed == 0].set_index("recipe")
    assert by.eps["16-true, eps 1e-4"] == 1e-4 and by.eps["16-true"] == 1e-8
    assert by.precision["16-true, eps 1e-4"] == "16-true"
    assert by.diverged["16-true"] and not by.diverged["16-true, eps 1e-4"]
    assert by.nonfinite_steps["16-true, eps 1e-4"] == 0


def test_bf16_mixed_run_is_the_books_loop_on_chapter_12s_model(trained):
    runs, _, _ = trained
    data = lm.load(1, TINY["context"], TINY["n_train"], TINY["n_val"])
    model = lm.model_for(data, 1, TINY["d_model"], TINY["n_layers"])
    h = Trainer(precision="bf16-mixed", steps=3, batch_size=4, lr=3e-3, eval_every=2, seed=1,
                device="cpu", progress=False).fit(model, data)
    got = runs[(runs.seed == 1) & (runs.recipe == "bf16-mixed")].val_loss.item()
    assert got == pytest.approx(float(h.test_loss.iloc[-1]), abs=0)


def test_recipes_change_the_numbers_they_claim_to(trained):
    runs, _, _ = trained
    loss = runs[runs.seed == 0].set_index("recipe").val_loss
    assert loss["fp8-current"] != loss["bf16-mixed"]
    assert loss["bf16-stochastic"] != loss["bf16-kahan"]
    stalled = runs[runs.seed == 0].set_index("recipe").stalled
    assert stalled["bf16-true"] > stalled["32-true"]  # rounding to bf16 loses small updates


def test_prepare_swaps_all_but_first_and_last_linear():
    data = lm.load(0, 8, 32, 8)
    m0 = lm.model_for(data, 0, 32, 1)
    converted, kept = lp.kept_modules(m0)
    assert kept == ["blocks.0.attn.qkv", "head"] or len(kept) == 2
    m = lp.prepare(copy.deepcopy(m0), "mxfp8")
    swapped = [n for n, x in m.named_modules() if isinstance(x, Float8Linear)]
    assert swapped == converted and len(swapped) >= 1
    assert lp.prepare(m0, "bf16-true") is m0
    assert not any(isinstance(x, Float8Linear) for x in m0.modules())


def test_pure16_recipes_hold_bf16_values_while_active():
    model = torch.nn.Linear(4, 4)
    with lp.weights_for(model, "bf16-kahan", seed=0):
        w = model.weight.detach()
        assert torch.equal(w, w.bfloat16().float())


def test_unknown_recipe_fails_naming_the_known_ones():
    with pytest.raises(ValueError, match="recipe: must be one of 32-true"):
        lp.train([0], ["fp8-magic"], **TINY)
    with pytest.raises(ValueError, match="bf16-mixed"):
        lp.step_times([0], ["32-true"])


def test_delayed_recipe_is_transformer_engines_default():
    r = lp.float8_recipe("delayed")
    assert (r.scaling, r.history_len, r.amax_compute_algo, r.margin) == ("delayed", 16, "max", 0)
    assert lp.float8_recipe("delayed", amax_compute_algo="most_recent").history_len == 16
    assert lp.float8_recipe("current").scaling == "current"


def test_range_schedule_and_its_checks():
    s = lp.range_schedule(10, 3, 6)
    assert list(s) == [1, 1, lp.JUMP, lp.JUMP, lp.JUMP, 1, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="jump_at"):
        lp.range_schedule(10, 6, 3)


def test_range_change_shows_what_delayed_scaling_loses():
    t = lp.range_change(steps=40, jump_at=5, drop_at=25)
    assert set(t.case) == set(lp.RANGE_CASES) and len(t) == 3 * 40
    cur = t[t.case == "current"].set_index("step")
    dmax = t[t.case == "delayed, max of 16"].set_index("step")
    recent = t[t.case == "delayed, most recent"].set_index("step")
    assert (cur.saturated == 0).all()  # scaled from this step's own amax: never saturates
    assert cur.amax[5] == pytest.approx(lp.JUMP * cur.amax[4])  # the scripted x16
    for d in (dmax, recent):  # the jump step uses the old amax and saturates, then adapts
        assert d.saturated[5] > 0.005 and (d.saturated.drop(5) == 0).all()
    # after the drop, max-of-16 keeps the large amax for 16 steps: a 16x smaller scale and
    # more values flushed to zero than current scaling; most_recent lags one step
    lag = dmax.scale[25:40] / cur.scale[25:40]
    assert lag.to_numpy() == pytest.approx([1 / lp.JUMP] * 15)
    assert (dmax.underflow[25:40] > cur.underflow[25:40]).all()
    assert recent.scale[25] == pytest.approx(cur.scale[25] / lp.JUMP)
    assert recent.scale[26:].to_numpy() == pytest.approx(cur.scale[26:].to_numpy())


def test_step_times_are_steady_state_ratios_to_bf16_mixed_in_one_run():
    t = lp.step_times([0], ["bf16-mixed", "fp8-current", "bf16-stochastic",
                            "16-true, eps 1e-4"], batch=4, context=8, d_model=32, n_layers=1,
                      repeats=5, warmup=0)
    assert len(t) == 4 * 5 and set(t.repeat) == set(range(5))  # a row per repeat: the spread
    # steady state (the default 3 steps): two steps timed, set-up and the first step left out
    assert np.isfinite(t.seconds_per_step).all() and (t.seconds_per_step > 0).all()
    assert (t.seconds_per_step < t.seconds / 2).all()
    r = lp.ratios(t)
    assert set(r.recipe) == {"bf16-mixed", "fp8-current", "bf16-stochastic",
                             "16-true, eps 1e-4"}
    assert r.set_index("recipe").ratio["bf16-mixed"] == 1.0
    med = t.groupby("recipe").seconds_per_step.median()
    assert r.set_index("recipe").ratio["fp8-current"] == pytest.approx(
        med["fp8-current"] / med["bf16-mixed"])
    with pytest.raises(ValueError, match="time_steps"):
        lp.step_times([0], ["bf16-mixed"], time_steps=1)


def test_step_times_read_each_call_through_the_trainers_steady_step_clock(monkeypatch):
    calls = []

    def spy(history):
        calls.append(len(history))
        return 0.25

    monkeypatch.setattr(lp, "steady_seconds_per_step", spy)
    t = lp.step_times([0], ["bf16-mixed", "bf16-kahan"], batch=4, context=8, d_model=32,
                      n_layers=1, repeats=5, warmup=1)
    assert calls == [3] * 12  # (1 warm-up + 5 timed calls) per recipe, each of 3 steps
    assert (t.seconds_per_step == 0.25).all() and (t.ratio == 1.0).all()


def test_chapter02_pure_reads_one_row_per_published_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="publish chapter 02"):
        lp.chapter02_pure(tmp_path)
    rows = [{"optimizer": o, "precision": p, "seed": s, "step": t, "loss": 1.0 / t,
             "test_metric": 0.5 + t / 10 if t == 2 else float("nan"), "test_loss": 0.1,
             "stalled": 0.1 * t}
            for o in ("sgd", "adam") for p in ("16-true", "16-mixed") for s in (0, 1)
            for t in (1, 2)]
    path = tmp_path / lp.PURE02
    path.parent.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    final = lp.chapter02_pure(tmp_path)
    assert len(final) == 8 and not final.diverged.any()
    assert np.allclose(final.test_metric, 0.7) and np.allclose(final.stalled, 0.15)


def _chapter02_history(extra: str) -> pd.DataFrame:
    """Chapter 02's pure-run history for Adam at 16-true and 16-mixed (2 seeds, 2 steps), plus
    the eps-1e-4 recipe written the way `extra` says: 'label' (in `precision`), 'recipe' (a
    column, empty for the other runs) or 'eps' (a column, empty or 1e-8 for the others)."""
    rows = []
    for p in ("16-true", "16-mixed", "16-true, eps 1e-4"):
        for s in (0, 1):
            for t in (1, 2):
                row = {"optimizer": "adam", "precision": p, "seed": s, "step": t,
                       "loss": 1.0 / t, "test_metric": 0.9 if t == 2 else float("nan"),
                       "test_loss": 0.1, "stalled": 0.1}
                if p == "16-true":  # the naive recipe diverges
                    row["loss"], row["test_metric"] = float("nan"), 0.1
                if extra == "recipe":
                    row["recipe"] = p if p.endswith("1e-4") else None
                    row["precision"] = p.split(",")[0]
                if extra == "eps":
                    row["eps"] = 1e-4 if p.endswith("1e-4") else (1e-8 if s else None)
                    row["precision"] = p.split(",")[0]
                rows.append(row)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("extra", ["label", "recipe", "eps"])
def test_chapter02_pure_keeps_the_working_fp16_recipe_apart_however_it_is_written(
        tmp_path, extra):
    path = tmp_path / lp.PURE02
    path.parent.mkdir(parents=True)
    _chapter02_history(extra).to_csv(path, index=False)
    final = lp.chapter02_pure(tmp_path).set_index(["precision", "seed"])
    assert len(final) == 6
    assert final.diverged[("16-true", 0)] and not final.diverged[("16-true, eps 1e-4", 0)]
    assert final.test_metric[("16-true, eps 1e-4", 1)] == pytest.approx(0.9)


def test_pure_recipes_refuses_an_eps_no_recipe_names():
    h = _chapter02_history("eps")
    h.loc[h.eps == 1e-4, "eps"] = 1e-3
    with pytest.raises(ValueError, match="eps 0.001 that designs.WORKING_PURE does not name"):
        lp.pure_recipes(h)
    old = _chapter02_history("label")
    assert lp.pure_recipes(old).equals(old)  # neither column: unchanged


# -- the parameters and the recipes' configuration -------------------------------------------------

PARAMS = dict(seeds=[0, 1], recipes=["32-true", "bf16-mixed", "mxfp8"], steps=4, batch=4,
              lr=0.003, context=8, d_model=32, n_layers=1, eval_every=2, n_train=32, n_val=8,
              range_steps=10, jump_at=2, drop_at=5, rounding_n=64, time_steps=2, repeats=5,
              warmup=0, threads=1, device="cpu", matmul16="auto")


def test_check_parameters_returns_the_device_and_names_the_bad_parameter():
    from precisionlab.validate import ParameterError

    assert set(lp.PARAMETERS) == set(PARAMS)
    assert lp.check_parameters(PARAMS) == "cpu"
    for change, message in [({"recipes": ["32-true"]}, "recipes: must include 'bf16-mixed'"),
                            ({"batch": 33}, "batch: must be an integer from 1 to 32"),
                            ({"d_model": 36}, "d_model: must be a multiple of 32"),
                            ({"d_model": 34, "recipes": ["bf16-mixed"]},
                             "d_model: must be a multiple of 4"),
                            ({"drop_at": 2}, "drop_at: must be an integer from 3 to 10"),
                            ({"repeats": 4}, "repeats"), ({"matmul16": "x"}, "matmul16"),
                            ({"lr": 0}, "lr")]:
        with pytest.raises(ParameterError, match=f"^{message}"):
            lp.check_parameters(PARAMS | change)
    # without an FP8/MX recipe any multiple of 4 will do
    assert lp.check_parameters(PARAMS | {"d_model": 36, "recipes": ["bf16-mixed"]}) == "cpu"


def test_recipe_configs_hold_each_recipes_dtypes_swap_rule_and_eps():
    c = lp.recipe_configs(["16-true", "16-true, eps 1e-4", "mxfp8", "bf16-stochastic"])
    c = c.set_index("recipe")
    assert list(c.index) == ["16-true", "16-true, eps 1e-4", "mxfp8", "bf16-stochastic"]
    assert list(c.loc["16-true", ["precision", "param", "compute"]]) == [
        "16-true", "float16", "float16"]
    assert c.loc["16-true", "eps"] == lp.TORCH_EPS and c.loc["16-true", "held"] == 0.0
    assert c.loc["16-true, eps 1e-4", "held"] == pytest.approx(1e-4, rel=1e-3)
    assert list(c.loc["mxfp8", ["param", "compute", "float8", "pure16"]]) == [
        "float32", "bfloat16", "mxfp8", ""]
    assert c.loc["bf16-stochastic", "pure16"] == "stochastic"
    assert c.loc["bf16-stochastic", "float8"] == ""
