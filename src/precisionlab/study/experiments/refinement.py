"""Chapter 10's measurements: mixed-precision iterative refinement of a linear system (MP-22).

`make_system` builds A = U diag(s) V^T in fp64 with a prescribed 2-norm condition number
(Haar-random orthogonal U, V; singular values geometrically spaced from 1 to 1/kappa), a random
x_true and b = A x_true. `solve_all` solves each system three ways: LU in fp32, LU in fp64, and
iterative refinement (LU in fp32, residuals and updates in fp64; Wilkinson, Moler 1967), and
returns the errors per run and per refinement step. `flop_counts` counts the arithmetic each way
costs; `timings` times the three solvers against each other (`precisionlab.bench`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import torch

from precisionlab import bench
from precisionlab.study.store import stored

U32 = 2.0**-24  # unit roundoff of fp32 (round to nearest): half the spacing above 1
U64 = 2.0**-53  # unit roundoff of fp64
METHODS = ("fp32 LU", "fp64 LU", "refinement")
# LAPACK's dsgesv (the same scheme) gives up after 30 refinement steps.
MAX_ITER = 30
# A converging refinement shrinks each correction by a factor of about kappa u(fp32), far below
# 1/2 where it works; a correction not at most half the previous one means the error has reached
# its floor (the corrections are rounding noise) or the iteration diverges. It stops there.
STALL_RATIO = 0.5


def _draws(n: int, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Haar-random orthogonal U, V (QR of Gaussian matrices, signs fixed) and x_true for one
    seed, drawn on the CPU so that every device gets the same draws."""
    g = torch.Generator().manual_seed(seed)

    def haar() -> torch.Tensor:
        q, r = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64).to(device))
        return q * torch.sign(torch.diagonal(r))

    u, v = haar(), haar()
    return u, v, torch.randn(n, generator=g, dtype=torch.float64).to(device)


def _system(u: torch.Tensor, v: torch.Tensor, x_true: torch.Tensor, kappa: float
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A = U diag(s) V^T with s geometric from 1 to 1/kappa, and b = A x_true, in fp64."""
    if not kappa >= 1:
        raise ValueError(f"kappa: must be >= 1; got {kappa!r}")
    s = torch.logspace(0.0, -math.log10(kappa), u.shape[0], dtype=torch.float64,
                       device=u.device)
    a = (u * s) @ v.T
    return a, x_true, a @ x_true


def make_system(n: int, kappa: float, seed: int, device: str = "cpu"
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A, x_true, b) in fp64 on `device`: A has 2-norm condition number `kappa`. The seed fixes
    U, V and x_true, so for one seed only the singular values change with kappa."""
    if n < 2:
        raise ValueError(f"n: must be >= 2; got {n}")
    return _system(*_draws(n, seed, device), kappa)


def forward_error(x: torch.Tensor, x_true: torch.Tensor) -> float:
    """Relative forward error ||x - x_true||_inf / ||x_true||_inf, in fp64."""
    x = x.to(torch.float64)
    return float(torch.linalg.vector_norm(x - x_true, math.inf)
                 / torch.linalg.vector_norm(x_true, math.inf))


def backward_error(a: torch.Tensor, x: torch.Tensor, b: torch.Tensor) -> float:
    """Normwise backward error ||b - A x||_inf / (||A||_inf ||x||_inf + ||b||_inf) (Rigal and
    Gaches): the smallest relative change of A and b of which x is the exact solution."""
    x = x.to(torch.float64)
    r = b - a @ x
    inf = math.inf
    return float(torch.linalg.vector_norm(r, inf)
                 / (torch.linalg.matrix_norm(a, inf) * torch.linalg.vector_norm(x, inf)
                    + torch.linalg.vector_norm(b, inf)))


def _solve_lu(lu: torch.Tensor, piv: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve with LU factors for one right-hand side, in the factors' dtype."""
    return torch.linalg.lu_solve(lu, piv, rhs.to(lu.dtype).unsqueeze(-1)).squeeze(-1)


def direct(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Plain LU solve with partial pivoting, everything in `dtype` (A and b rounded to it)."""
    lu, piv = torch.linalg.lu_factor(a.to(dtype))
    return _solve_lu(lu, piv, b)


def refine(a: torch.Tensor, b: torch.Tensor, x_true: torch.Tensor | None = None,
           max_iter: int = MAX_ITER, factor_dtype: torch.dtype = torch.float32
           ) -> tuple[torch.Tensor, pd.DataFrame, str]:
    """Iterative refinement: LU of A in `factor_dtype` and x0 from it; then r = b - A x in fp64,
    solve A d = r with the low-precision factors, x += d in fp64. Stops when a correction is
    below u(fp64) relative to x (nothing left to add), when it is not at most STALL_RATIO of the
    previous one (not applied: the iteration has reached its floor or diverges), or after
    `max_iter` corrections. Returns (x, one row per iterate, status): 'converged' if the final
    backward error is at most sqrt(n) u(fp64) (LAPACK dsgesv's test), else 'stalled' or
    'max_iter'."""
    n, inf = a.shape[0], math.inf
    a_norm, b_norm = torch.linalg.matrix_norm(a, inf), torch.linalg.vector_norm(b, inf)
    lu, piv = torch.linalg.lu_factor(a.to(factor_dtype))
    x = _solve_lu(lu, piv, b).to(torch.float64)
    rows, prev, stop = [], inf, "max_iter"
    for it in range(max_iter + 1):
        r = b - a @ x  # the residual in fp64: the step that lets refinement reach fp64
        r_norm, x_norm = torch.linalg.vector_norm(r, inf), torch.linalg.vector_norm(x, inf)
        eta = float(r_norm / (a_norm * x_norm + b_norm))  # as in `backward_error`
        rows.append({"iteration": it, "backward_error": eta})
        if x_true is not None:
            rows[-1]["forward_error"] = forward_error(x, x_true)
        if it == max_iter or eta == 0:
            break
        # r is scaled to norm 1 before it is rounded to fp32, so it can neither under- nor overflow
        d = _solve_lu(lu, piv, r / r_norm).to(torch.float64) * r_norm
        size = float(torch.linalg.vector_norm(d, inf))
        rows[-1]["correction"] = size / float(x_norm)
        if not size <= STALL_RATIO * prev:
            stop = "stalled"
            break
        x, prev = x + d, size
        if size <= U64 * float(x_norm):
            stop = "negligible"
            break
    if rows[-1]["backward_error"] <= math.sqrt(n) * U64:
        stop = "converged"
    elif stop == "negligible":  # a negligible correction with a large residual cannot happen
        stop = "stalled"        # in exact terms; call it what it is, no progress
    return x, pd.DataFrame(rows), stop


@stored
def solve_all(seeds: Sequence[int], kappas: Sequence[float], n: int, max_iter: int = MAX_ITER,
              device: str = "cpu") -> tuple[pd.DataFrame, pd.DataFrame]:
    """MP-22: (runs, history). runs: one row per (seed, kappa, method) with forward_error,
    backward_error, steps (corrections applied before `refine` stopped; 0 for a direct solve),
    iterations (corrections until the backward error first passed sqrt(n) u(fp64), NaN if it
    never did) and status ('direct' or `refine`'s);
    history: (seed, kappa, iteration, forward_error, backward_error, correction) per refinement
    iterate, correction being the relative size of the one computed there (the last one is not
    applied)."""
    runs, history = [], []
    if n < 2:
        raise ValueError(f"n: must be >= 2; got {n}")
    for seed in seeds:
        draws = _draws(n, seed, device)
        for kappa in kappas:
            a, x_true, b = _system(*draws, kappa)
            key = {"seed": seed, "kappa": float(kappa)}
            for name, dtype in (("fp32 LU", torch.float32), ("fp64 LU", torch.float64)):
                x = direct(a, b, dtype)
                runs.append({**key, "method": name, "forward_error": forward_error(x, x_true),
                             "backward_error": backward_error(a, x, b), "steps": 0,
                             "iterations": 0.0, "status": "direct"})
            x, steps, status = refine(a, b, x_true, max_iter)
            met = steps.iteration[steps.backward_error <= math.sqrt(n) * U64]
            runs.append({**key, "method": "refinement", "forward_error": forward_error(x, x_true),
                         "backward_error": backward_error(a, x, b),
                         "steps": int(steps.iteration.max()),
                         "iterations": float(met.min()) if len(met) else math.nan,
                         "status": status})
            history.append(steps.assign(**key))
    cols = ["seed", "kappa", "iteration", "forward_error", "backward_error", "correction"]
    return pd.DataFrame(runs), pd.concat(history, ignore_index=True).reindex(columns=cols)


def flop_counts(n: int, iterations: int) -> dict[str, float]:
    """Floating-point operations of one solve (multiply and add count 2; LAPACK's leading
    terms): the LU (2n^3/3) and its two triangular solves (2n^2), and per refinement step one
    fp64 residual (2n^2) and two fp32 triangular solves (2n^2)."""
    lu, tri, residual = 2 * n**3 / 3, 2.0 * n**2, 2.0 * n**2
    return {"lu": lu, "first_solve": tri, "steps_fp32": iterations * tri,
            "steps_fp64": iterations * residual,
            "fp64_share": iterations * residual / (lu + tri * (1 + iterations)
                                                    + iterations * residual)}


@stored
def timings(n: int, kappa: float, seed: int, max_iter: int = MAX_ITER, repeats: int = 7,
            warmup: int = 1, device: str = "cpu") -> pd.DataFrame:
    """Seconds per solve of one n x n system, interleaved (`bench.interleaved`): 'fp64 LU',
    'fp32 LU' (factor and solve) and 'refinement' (all of `refine`), for the system of `seed`."""
    a, _, b = make_system(n, kappa, seed, device)
    candidates = {"fp64 LU": lambda: direct(a, b, torch.float64),
                  "fp32 LU": lambda: direct(a, b, torch.float32),
                  "refinement": lambda: refine(a, b, None, max_iter)[0]}
    return bench.interleaved(candidates, repeats=repeats, warmup=warmup, device=device).assign(
        n=n, kappa=float(kappa))
