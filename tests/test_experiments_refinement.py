"""Chapter 10's experiments: test systems with a prescribed condition number, the three solvers
and iterative refinement, checked against torch's own linear algebra and the analysis."""

from __future__ import annotations

import math

import pytest
import torch

from precisionlab.study.experiments import refinement as ir


@pytest.mark.parametrize("kappa", [1.0, 1e3, 1e8])
def test_make_system_has_the_prescribed_condition_number(kappa):
    a, x_true, b = ir.make_system(48, kappa, seed=3)
    assert a.dtype == x_true.dtype == b.dtype == torch.float64
    assert torch.linalg.cond(a).item() == pytest.approx(kappa, rel=1e-5)
    torch.testing.assert_close(b, a @ x_true, rtol=0, atol=0)


def test_a_seed_fixes_the_singular_vectors_and_the_solution_across_kappa():
    a1, x1, _ = ir.make_system(16, 10.0, seed=0)
    a2, x2, _ = ir.make_system(16, 1e6, seed=0)
    a3, x3, _ = ir.make_system(16, 10.0, seed=1)
    assert torch.equal(x1, x2) and not torch.equal(x1, x3)
    u1, _, vh1 = torch.linalg.svd(a1)
    u2, _, vh2 = torch.linalg.svd(a2)
    # the same singular vectors (up to sign): |U1^T U2| is the identity
    torch.testing.assert_close((u1.T @ u2).abs(), torch.eye(16, dtype=torch.float64), atol=1e-8,
                               rtol=0)
    torch.testing.assert_close((vh1 @ vh2.T).abs(), torch.eye(16, dtype=torch.float64),
                               atol=1e-8, rtol=0)


def test_bad_sizes_and_condition_numbers_are_named():
    with pytest.raises(ValueError, match="n:"):
        ir.make_system(1, 10.0, 0)
    with pytest.raises(ValueError, match="kappa:"):
        ir.make_system(8, 0.5, 0)


def test_errors_match_their_definitions():
    a, x_true, b = ir.make_system(20, 100.0, seed=0)
    x = x_true + 1e-3 * torch.ones(20, dtype=torch.float64)
    want = (x - x_true).abs().max() / x_true.abs().max()
    assert ir.forward_error(x, x_true) == pytest.approx(want.item(), rel=1e-12)
    r = b - a @ x
    eta = r.abs().max() / (a.abs().sum(dim=1).max() * x.abs().max() + b.abs().max())
    assert ir.backward_error(a, x, b) == pytest.approx(eta.item(), rel=1e-12)
    assert ir.backward_error(a, x_true, b) < 10 * ir.U64  # x_true solves (A, b) up to rounding


def test_direct_solves_match_torch_and_round_to_their_dtype():
    a, x_true, b = ir.make_system(32, 10.0, seed=2)
    x64 = ir.direct(a, b, torch.float64)
    torch.testing.assert_close(x64, torch.linalg.solve(a, b), rtol=1e-12, atol=0)
    x32 = ir.direct(a, b, torch.float32)
    assert x32.dtype == torch.float32
    assert 1e-9 < ir.forward_error(x32, x_true) < 1e-4  # fp32's level, far above fp64's
    assert ir.forward_error(x64, x_true) < 1e-13


def test_refinement_reaches_fp64_accuracy_for_a_well_conditioned_system():
    a, x_true, b = ir.make_system(64, 1e3, seed=0)
    x, steps, status = ir.refine(a, b, x_true)
    assert status == "converged"
    assert x.dtype == torch.float64
    # step 0 is exactly the plain fp32 solve
    assert steps.forward_error.iloc[0] == ir.forward_error(ir.direct(a, b, torch.float32), x_true)
    err64 = ir.forward_error(ir.direct(a, b, torch.float64), x_true)
    assert ir.forward_error(x, x_true) < 10 * err64
    assert ir.forward_error(x, x_true) < 1e-6 * steps.forward_error.iloc[0]
    assert steps.backward_error.iloc[-1] <= math.sqrt(64) * ir.U64
    assert list(steps.iteration) == list(range(len(steps)))


def test_refinement_stalls_beyond_one_over_u32():
    a, x_true, b = ir.make_system(64, 1e10, seed=0)
    x, steps, status = ir.refine(a, b, x_true)
    assert status == "stalled"
    assert len(steps) <= 3  # it stops as soon as a correction fails to shrink
    assert ir.forward_error(x, x_true) > 1e-3


def test_refinement_with_fp64_factors_converges_at_once_and_max_iter_is_respected():
    a, x_true, b = ir.make_system(32, 1e6, seed=1)
    _, steps, status = ir.refine(a, b, x_true, factor_dtype=torch.float64)
    assert status == "converged" and len(steps) <= 3
    _, steps, status = ir.refine(a, b, x_true, max_iter=1)
    assert status == "max_iter" and list(steps.iteration) == [0, 1]


def test_solve_all_gives_one_row_per_seed_kappa_and_method():
    runs, history = ir.solve_all([0, 1], [10.0, 1e9], n=24)
    assert len(runs) == 2 * 2 * 3
    assert set(runs.method) == set(ir.METHODS)
    direct = runs[runs.method != "refinement"]
    assert (direct.status == "direct").all() and (direct.steps == 0).all()
    refined = runs[runs.method == "refinement"].set_index(["seed", "kappa"])
    assert (refined.loc[(slice(None), 10.0), "status"] == "converged").all()
    assert (refined.loc[(slice(None), 1e9), "status"] == "stalled").all()
    assert refined.loc[(slice(None), 1e9), "iterations"].isna().all()
    assert set(history.groupby(["seed", "kappa"]).iteration.min()) == {0}
    last = history.groupby(["seed", "kappa"]).forward_error.last()
    assert last.to_dict() == pytest.approx(refined.forward_error.to_dict(), rel=1e-12)


def test_flop_counts():
    c = ir.flop_counts(6, 2)
    assert (c["lu"], c["first_solve"], c["steps_fp32"], c["steps_fp64"]) == (144, 72, 144, 144)
    assert c["fp64_share"] == pytest.approx(144 / (144 + 72 + 144 + 144))
    assert ir.flop_counts(6, 0)["fp64_share"] == 0


def test_timings_time_each_solver_interleaved():
    t = ir.timings(16, 100.0, seed=0, repeats=5, warmup=0)
    assert sorted(t.candidate.unique()) == sorted(ir.METHODS)
    assert len(t) == 3 * 5 and (t.seconds > 0).all() and (t.n == 16).all()
