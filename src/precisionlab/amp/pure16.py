"""Pure 16-bit weights, simulated: bf16 (or fp16) weight values updated by one of three rules.

``with low_precision_weights(model, "kahan"): Trainer(precision="bf16-mixed").fit(model, data)``
trains `model` as if its weights were stored in bf16 with no fp32 master copy. On entry every
floating parameter is rounded to the nearest bf16 value (in place); while the context is active,
torch's global optimizer step hooks follow each optimizer step on this model's parameters with
the update rule (other optimizers' parameters are left alone):

- ``nearest``: round the new fp32 value to the nearest bf16 value. This is naive bf16 weights
  (what ``bf16-true`` does): an update smaller than half an ulp of the weight is lost.
- ``stochastic``: round the new value up or down at random, with the probability of going up
  equal to where the value lies between its two bf16 neighbours
  (`precisionlab.lowbit.round_fast`, seeded by `seed`). The rounding is unbiased, so tiny
  updates survive on average.
- ``kahan``: compensated summation. With the old weight ``w``, the optimizer's fp32 result
  ``w'`` and a compensation buffer ``c`` (stored in bf16): ``y = (w' - w) + c``,
  ``t = w + y``, ``w <- RN(t)``, ``c <- t - RN(t)``. What rounding drops is carried into the
  next step instead of being lost.

Both remedies are those of Zamirai et al. 2020, "Revisiting BFloat16 Training"
(arXiv:2010.06192), who show that stochastic rounding or Kahan summation in the weight update
lets pure-bf16 training approach fp32 accuracy where nearest rounding falls short. Plain
``Trainer(precision="bf16-mixed")`` without this context is the fp32-master-weights recipe.

What this simulates: the numerics of the weight update. The forward and backward passes under
``bf16-mixed`` already compute with bf16 copies of the weights, so with bf16 weight values they
compute exactly as bf16 weights would. What it does not: the memory. Real pure-bf16 training
saves the fp32 master copy (2 bytes a weight instead of 4); here storage stays fp32 holding
bf16 values, and the optimizer state (Adam's moments) stays fp32 too. The compensation buffer
is real bf16 storage. The handle's ``stats`` record, per optimizer step, how many weights had a
nonzero fp32 update and how many of those ended unchanged (a lost update).
"""

from __future__ import annotations

import math
from types import TracebackType

import pandas as pd
import torch
from torch import nn
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

from precisionlab.formats import FORMATS
from precisionlab.lowbit import round_fast

__all__ = ["DTYPES", "RULES", "LowPrecisionWeights", "low_precision_weights", "update_stats"]

RULES = ("nearest", "stochastic", "kahan")
DTYPES = {n: FORMATS[n].torch_dtype for n in ("bf16", "fp16")}  # from the one registry
STATS_COLUMNS = ["step", "rule", "weights", "updated", "lost", "lost_share"]


def update_stats(old: torch.Tensor, proposed: torch.Tensor,
                 new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(updated, lost) as 0-d integer tensors on the weights' device: how many weights have an
    fp32 update `proposed` that differs from `old`, and how many of those the rule left at
    exactly `old` (a lost update)."""
    moved = proposed != old
    return moved.sum(), (moved & (new == old)).sum()


class LowPrecisionWeights:
    """The context manager `low_precision_weights` returns; `stats` lists one dict per step."""

    def __init__(self, model: nn.Module, rule: str = "stochastic", dtype: str = "bf16",
                 seed: int = 0, track_stats: bool = True) -> None:
        if rule not in RULES:
            raise ValueError(f"rule: unknown {rule!r}; known: {', '.join(RULES)}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype: unknown {dtype!r}; known: {', '.join(DTYPES)}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed: must be an integer >= 0; got {seed!r}")
        if not isinstance(model, nn.Module):
            raise ValueError(f"model: must be a torch.nn.Module; got {type(model).__name__}")
        params = [p for p in model.parameters() if p.is_floating_point()]
        if not params:
            raise ValueError("model: has no floating parameters to keep in low precision")
        wrong = sorted({str(p.dtype) for p in params if p.dtype != torch.float32})
        if wrong:
            raise ValueError(f"model: parameters must be stored in torch.float32 (holding "
                             f"{dtype} values); found {', '.join(wrong)}")
        self.model, self.rule, self.dtype, self.seed = model, rule, dtype, seed
        self.track_stats = track_stats
        self.params = params
        self.stats: list[dict] = []
        self.compensation: dict[int, torch.Tensor] = {}  # kahan: id(param) -> low-precision c
        self._ids = {id(p) for p in params}
        self._pending: dict[int, tuple[list[nn.Parameter], list[torch.Tensor] | None]] = {}
        self._generators: dict[torch.device, torch.Generator] = {}
        self._handles: list = []

    def frame(self) -> pd.DataFrame:
        """The per-step stats as a DataFrame (columns step, rule, weights, updated, lost,
        lost_share)."""
        return pd.DataFrame(self.stats, columns=STATS_COLUMNS)

    def round_nearest(self, x: torch.Tensor) -> torch.Tensor:
        """`x` rounded to the nearest value of the low-precision dtype, as float32."""
        return x.to(DTYPES[self.dtype]).float()

    def __enter__(self) -> LowPrecisionWeights:
        if self._handles:
            raise RuntimeError("low_precision_weights: this context is already active")
        with torch.no_grad():
            for p in self.params:
                p.copy_(self.round_nearest(p))
        self._handles = [register_optimizer_step_pre_hook(self._pre_step),
                         register_optimizer_step_post_hook(self._post_step)]
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._pending.clear()

    def _mine(self, optimizer: torch.optim.Optimizer) -> list[nn.Parameter]:
        return [p for group in optimizer.param_groups for p in group["params"]
                if id(p) in self._ids and p.grad is not None]

    def _pre_step(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        params = self._mine(optimizer)
        if not params:
            return
        wrong = sorted({str(p.dtype) for p in params if p.dtype != torch.float32})
        if wrong:
            raise RuntimeError(f"low_precision_weights: parameters are now {', '.join(wrong)}; "
                               f"they must stay torch.float32 holding {self.dtype} values "
                               f"(train with precision 'bf16-mixed' or '32-true', not *-true)")
        need_old = self.track_stats or self.rule == "kahan"
        old = [p.detach().clone() for p in params] if need_old else None
        self._pending[id(optimizer)] = (params, old)

    @torch.no_grad()
    def _post_step(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        pending = self._pending.pop(id(optimizer), None)
        if pending is None:
            return
        params, olds = pending
        counts = []  # (updated, lost) per parameter, read back once per step
        for i, p in enumerate(params):
            proposed = p.detach()
            old = olds[i] if olds is not None else None
            new = self._apply(p, proposed, old)
            if self.track_stats:
                counts.append(torch.stack(update_stats(old, proposed, new)))
            p.copy_(new)
        if self.track_stats:
            updated, lost = torch.stack(counts).sum(0).tolist()
            self.stats.append({"step": len(self.stats) + 1, "rule": self.rule,
                               "weights": sum(p.numel() for p in params), "updated": updated,
                               "lost": lost,
                               "lost_share": lost / updated if updated else math.nan})

    def _apply(self, p: nn.Parameter, proposed: torch.Tensor,
               old: torch.Tensor | None) -> torch.Tensor:
        """The rule's new value for `p`, from the optimizer's fp32 result `proposed`."""
        if self.rule == "nearest":
            return self.round_nearest(proposed)
        if self.rule == "stochastic":
            return round_fast(proposed.contiguous(), self.dtype, "stochastic",
                              self._generator(proposed.device))
        c = self.compensation.get(id(p))
        if c is None or c.device != p.device or c.shape != p.shape:
            c = torch.zeros_like(p, dtype=DTYPES[self.dtype])
        t = old + ((proposed - old) + c.float())
        new = self.round_nearest(t)
        residual = t - new
        self.compensation[id(p)] = torch.where(torch.isfinite(residual), residual,
                                               torch.zeros_like(residual)).to(c.dtype)
        return new

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]


def low_precision_weights(model: nn.Module, rule: str = "stochastic", dtype: str = "bf16",
                          seed: int = 0, track_stats: bool = True) -> LowPrecisionWeights:
    """Context manager: keep `model`'s weights at `dtype` values, updated by `rule` (one of
    RULES) after every optimizer step; `seed` drives stochastic rounding. See the module doc."""
    return LowPrecisionWeights(model, rule, dtype, seed, track_stats)
