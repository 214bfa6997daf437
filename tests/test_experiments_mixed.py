"""Chapter 02's experiments, at toy sizes: shapes of the tables and the facts they rest on."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from precisionlab.study.experiments import mixed as X


def adam_one_step(g: float, dtype: torch.dtype) -> tuple[float, float]:
    """(v after one Adam step, the parameter after it) for one weight 1.0 with gradient g."""
    p = torch.nn.Parameter(torch.ones(1, dtype=dtype))
    opt = torch.optim.Adam([p], lr=1e-3)
    p.grad = torch.tensor([g], dtype=dtype)
    opt.step()
    return float(opt.state[p]["exp_avg_sq"]), float(p.detach())


def test_adam_underflow_bounds_match_torch_fp16_adam():
    t = X.adam_underflow("fp16")
    assert t["min_subnormal"] == 2.0**-24 and t["eps_is_zero"]
    assert t["v_zero_below"] == pytest.approx(math.sqrt(2.0**-25 / 1e-3))
    v, w = adam_one_step(t["v_zero_below"] * 0.98, torch.float16)  # v rounds to 0: m/0
    assert v == 0 and math.isinf(w)
    v, w = adam_one_step(t["v_zero_below"] * 1.02, torch.float16)  # v survives: a real step
    assert v > 0 and math.isfinite(w) and w < 1
    v, w = adam_one_step(t["m_zero_below"] / 2, torch.float16)  # m and v both 0: 0/0
    assert v == 0 and math.isnan(w)


def test_adam_underflow_in_bf16_is_far_below_any_gradient():
    t = X.adam_underflow("bf16")
    assert not t["eps_is_zero"] and t["v_zero_below"] < 1e-18
    v, w = adam_one_step(1e-6, torch.bfloat16)
    assert v > 0 and math.isfinite(w)


def test_traced_steps_cast_only_between_float_formats():
    c = X.casts(X.op_traces(["bf16-mixed"]))
    assert not c.to_integer.any()
    assert {"fp32->bf16", "bf16->fp32"} <= set(c.pair)


def test_autocast_table_is_tidy_and_lowers_linear():
    t = X.autocast_table(["cpu"])
    assert list(t.columns) == ["device", "autocast", "op", "input", "output"]
    row = t[(t.op == "linear") & (t.input == "fp32") & (t.autocast == "bf16")]
    assert row.output.item() == "bf16"


def test_finals_flags_a_run_that_went_nan_before_its_last_step():
    h = pd.DataFrame({"run": ["a"] * 3 + ["b"] * 3, "seed": 0, "step": [1, 2, 3] * 2,
                      "loss": [1.0, float("nan"), 1.0, 1.0, 0.9, 0.8],
                      "test_metric": [None, None, 0.1, None, None, 0.9], "test_loss": 1.0})
    f = X.finals(h, ["run"]).set_index("run")
    assert f.diverged.to_dict() == {"a": True, "b": False}
    assert f.loc["b", "test_metric"] == 0.9


def test_one_step_updates_measure_the_step_ratio():
    u = X.one_step_updates([0], sgd_lr=0.05, warm_steps=3, hidden=[16]).set_index("step")
    assert u.loc["32-true, lr", "step_ratio"] == pytest.approx(1.0)
    assert u.loc["32-true, lr/2", "step_ratio"] == pytest.approx(0.5)
    assert u.loc["bf16-mixed, lr", "step_ratio"] == pytest.approx(1.0, abs=0.05)
    assert u.loc["16-mixed, lr", "grad_rel_err_vs_fp64"] < 10 * 2.0**-11


def test_pair_comparator_is_antisymmetric():
    torch.manual_seed(0)
    m = X.PairComparator()
    x = torch.rand(5, 2)
    assert torch.allclose(m(x), -m(x.flip(1)))


def test_close_pairs_runs_one_row_per_variant_and_seed():
    t = X.close_pairs_runs([0, 1], steps=3, samples=400)
    assert len(t) == 2 * len(X.CLOSE_PAIR_VARIANTS)
    assert set(t.variant) == set(X.CLOSE_PAIR_VARIANTS)
    assert t.test_metric.between(0, 1).all()


def test_resolution_probe_fp32_orders_every_wide_gap():
    r = X.resolution_probe()
    wide = r[(r.variant == "32-true") & (r.gap_low >= 1e-4)]
    assert (wide.accuracy == 1.0).all()


def test_article_layer_fails_as_written_and_mp13_raises():
    errors = X.article_layer_errors()
    assert sum(e.startswith("RuntimeError") for e in errors.values()) == 2
    assert errors["fp16 input, 64 -> 64"].startswith("runs, but computes x W")
    probe = X.mp13_probe(steps=3)
    assert probe["error"].startswith("RuntimeError") and len(probe["losses"]) == 3


def test_article_layer_runs_track_stalls():
    h = X.article_layer_runs([0], lr=0.005, steps=3)
    f = X.finals(h, ["layer"]).set_index("layer")
    assert f.loc["fixed fp16 layer (16-true)", "stalled"] > f.loc["nn.Linear, 16-mixed",
                                                                  "stalled"]


def test_check_parameters_names_the_bad_parameter():
    from precisionlab.validate import ParameterError

    good = {"precisions": ["32-true", "16-mixed", "bf16-mixed"], "seeds": [0, 1, 2],
            "hidden": [8], "lr": 1e-3, "sgd_lr": 0.05, "stall_lr": 0.005,
            **{name: low for name, (low, _) in X.LIMITS.items()}}
    X.check_parameters(good)
    with pytest.raises(ParameterError, match="pairs_steps"):
        X.check_parameters({**good, "pairs_steps": 0})
    with pytest.raises(ParameterError, match="stall_lr"):
        X.check_parameters({**good, "stall_lr": -1})
    with pytest.raises(ParameterError, match="precisions: must include '16-mixed'"):
        X.check_parameters({**good, "precisions": ["32-true", "bf16-mixed"]})


def test_result_dtypes_lowered_ops_return_16_bit_and_devices_are_checked():
    r = X.result_dtypes(["cpu"])
    f32 = X.device_independent(r)
    assert set(f32.input) == {"fp32"}
    lin = f32[f32.op == "linear"].set_index("autocast")
    assert lin.loc["bf16", "output"] == "bf16" and lin.loc["fp16", "computed"] == "fp16"
    X.check_device_independent(r)  # one device: nothing to disagree with
    other = r.assign(device="cuda")
    other.loc[(other.op == "softmax") & (other.input == "fp32"), "output"] = "bf16"
    X.check_device_independent(pd.concat([r, other.assign(  # differs only on 16-bit inputs
        output=r.output.where(r.input == "fp32", "fp32"))]))
    with pytest.raises(ValueError, match="fp32-input rows under cuda"):
        X.check_device_independent(pd.concat([r, other]))


def test_step_flops_are_the_same_in_every_precision_and_match_the_shapes():
    f = X.step_flops(["32-true", "bf16-mixed", "16-true"], hidden=[16], batch_size=8)
    forward = 2 * 8 * (64 * 16 + 16 * 10)  # two linear layers: 2 FLOPs per multiply-add
    assert (f.forward_flops == forward).all()
    assert f.step_flops.nunique() == 1 and (f.backward_flops > f.forward_flops).all()
    by = f.set_index("precision")
    assert by.loc["bf16-mixed", "casts"] > by.loc["32-true", "casts"]


def test_vanishing_update_is_lost_in_16_bits_only():
    v = X.vanishing_update(1.0, -1e-4)
    assert v["fp16"] == v["bf16"] == 1.0
    assert v["fp32"] == pytest.approx(0.9999)


def test_pure_runs_count_updates_the_fp16_scheme_would_lose():
    p = X.pure_runs([0], sgd_lr=0.05, lr=1e-3, steps=3, hidden=[16])
    assert p[p.precision.str.endswith("true")].lost_fp16_scheme.isna().all()
    losses = X.update_losses(p)
    assert len(losses) == 4 and set(losses.precision) == set(X.MIXED)
    sgd = losses[losses.optimizer == "sgd"]
    assert (sgd.lost_fp16_scheme > sgd.stalled).all()


def test_one_step_updates_measure_output_errors_against_fp64():
    u = X.one_step_updates([0], sgd_lr=0.05, warm_steps=3, hidden=[16]).set_index("step")
    assert u.loc["32-true, lr", "out_rel_err_vs_fp64"] < 1e-5
    assert u.loc["bf16-mixed, lr", "out_rel_err_vs_fp64"] > u.loc["32-true, lr",
                                                                  "out_rel_err_vs_fp64"]
    assert math.isnan(u.loc["32-true, lr/2", "out_rel_err_vs_fp64"])


def test_policy_step_times_are_ratios_to_32_true():
    t = X.policy_step_times(["32-true", "bf16-true"], width=8, batch=4, steps=1, repeats=5)
    assert list(t.precision) == ["32-true", "bf16-true"]
    assert t.set_index("precision").loc["32-true", "ratio_to_32-true"] == 1.0
    assert (t.ms_per_step > 0).all()


def test_probe_devices_adds_cuda_only_when_the_chapter_runs_on_it():
    assert X.probe_devices("cpu") == ["cpu"]
    assert X.probe_devices("cuda") == ["cpu", "cuda"]
    assert X.probe_devices("cuda:1") == ["cpu", "cuda"]
    assert X.probe_devices("mps") == ["cpu"]


def test_final_summary_is_finals_and_their_table():
    rows = [{"task": "t", "precision": p, "seed": s, "step": k, "test_metric": 0.5 + 0.1 * s + k,
             "test_loss": 1.0 + s, "loss": math.nan if (p == "b" and s == 0 and k == 0) else 0.3}
            for p in ("a", "b") for s in range(3) for k in range(2)]
    runs = pd.DataFrame(rows)
    final, table = X.final_summary(runs, ["task", "precision"])
    pd.testing.assert_frame_equal(final, X.finals(runs, ["task", "precision"]))
    pd.testing.assert_frame_equal(table, X.final_table(final, ["task", "precision"]))
    assert final.test_metric.tolist() == pytest.approx([1.5, 1.6, 1.7] * 2)
    assert table.diverged.tolist() == [0, 1]
    assert table["mean"].tolist() == pytest.approx([1.6, 1.6])
