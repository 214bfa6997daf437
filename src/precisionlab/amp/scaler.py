"""Loss scaling written out so the algorithm is visible: the same interface and the same
numbers as ``torch.amp.GradScaler``, without its foreach kernels.

fp16 has 5 exponent bits, so small gradients flush to zero in an fp16 backward pass.
Multiplying the loss by a scale S shifts every gradient up by S; before the optimizer step the
fp32 gradients are multiplied by 1/S again and checked for inf/NaN, and a step whose gradients
overflowed is skipped. (Micikevicius et al., Mixed Precision Training,
https://arxiv.org/abs/1710.03740.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["DynamicLossScaler", "NoLossScaler", "StaticLossScaler"]


def _fp32(x: float) -> float:
    """Round a Python float to the nearest float32, as GradScaler's fp32 scale tensor does."""
    return torch.tensor(x, dtype=torch.float32).item()


def _check_scale(name: str, value: object) -> float:
    """A scale must be a positive number that is finite once stored in float32."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name}: must be a positive finite number; got {value!r}")
    stored = _fp32(value)
    if not (math.isfinite(stored) and stored > 0):
        raise ValueError(f"{name}: must be positive and finite in float32; got {value!r}")
    return stored


class _CheckedScaler:
    """Shared bookkeeping of the static and dynamic scalers: scale, unscale_, check, skip.

    Per optimizer and per iteration, a stage ("unscaled" or "stepped") and an inf/NaN flag;
    ``update()`` reads the flags, adjusts the scale (subclasses) and clears them.
    """

    def __init__(self, scale: float) -> None:
        self._scale = scale  # a Python float that is exactly a float32 value
        self._stage: dict[int, str] = {}  # id(optimizer) -> "unscaled" | "stepped"
        self._found: dict[int, bool] = {}  # id(optimizer) -> inf/NaN in its gradients
        self.skipped_steps = 0  # optimizer steps skipped because of inf/NaN gradients
        self.found_inf = False  # this iteration (or, after update(), the last one) overflowed

    def get_scale(self) -> float:
        """The current scale as a Python float."""
        return self._scale

    def scale(
        self, outputs: torch.Tensor | Iterable[torch.Tensor]
    ) -> torch.Tensor | Iterable[torch.Tensor]:
        """Multiply a loss (or a list/tuple of them) by the scale, held as a float32 tensor."""
        if isinstance(outputs, torch.Tensor):
            # A 0-dim fp32 tensor, as GradScaler uses: an fp16 0-dim loss is promoted to fp32.
            return outputs * torch.tensor(self._scale, dtype=torch.float32, device=outputs.device)
        return type(outputs)(self.scale(o) for o in outputs)

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Multiply the optimizer's gradients by 1/scale in place and record any inf/NaN.

        At most once per optimizer per iteration; call it before clipping gradients.
        """
        stage = self._stage.get(id(optimizer))
        if stage == "unscaled":
            raise RuntimeError(
                "unscale_() has already been called on this optimizer since the last update().")
        if stage == "stepped":
            raise RuntimeError("unscale_() is being called after step().")
        if not self._stage:  # the first optimizer of a new iteration
            self.found_inf = False
        # Reciprocal in float64, then rounded to float32: GradScaler's inv_scale, bit for bit.
        inv_scale = _fp32(1.0 / self._scale) if self._scale > 0 else math.inf
        found = _unscale_grads_(optimizer, inv_scale)
        self._stage[id(optimizer)] = "unscaled"
        self._found[id(optimizer)] = found
        self.found_inf = self.found_inf or found

    def step(self, optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        """Unscale (unless done already), then ``optimizer.step()`` unless gradients overflowed.

        Returns what ``optimizer.step`` returns, or None for a skipped step.
        """
        if "closure" in kwargs:
            raise RuntimeError("step(): closures are not supported with loss scaling.")
        stage = self._stage.get(id(optimizer))
        if stage == "stepped":
            raise RuntimeError("step() has already been called since the last update().")
        if stage is None:
            self.unscale_(optimizer)
        result = None
        if self._found[id(optimizer)]:
            self.skipped_steps += 1
        else:
            result = optimizer.step(*args, **kwargs)
        self._stage[id(optimizer)] = "stepped"
        return result

    def update(self) -> None:
        """End the iteration: adjust the scale from this iteration's inf/NaN flags, clear them."""
        if not self._found:
            raise RuntimeError("update(): no unscale_() or step() since the last update().")
        self._update_scale(any(self._found.values()))
        self._stage.clear()
        self._found.clear()

    def _update_scale(self, found_inf: bool) -> None:
        """Subclasses change the scale here."""


def _unscale_grads_(optimizer: torch.optim.Optimizer, inv_scale: float) -> bool:
    """Multiply every gradient by ``inv_scale`` (a float32 value); True if any was inf/NaN."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"]
             if p.grad is not None]
    for grad in grads:
        if grad.dtype == torch.float16:
            raise ValueError(
                "Attempting to unscale fp16 gradients. Loss scaling unscales into fp32 master "
                "weights, which is what 16-mixed does (fp32 parameters, fp16 autocast); a "
                "16-true model has fp16 parameters and no master weights. Use 16-mixed, or "
                "NoLossScaler.")
    non_finite = []
    with torch.no_grad():
        for grad in grads:
            values = grad._values() if grad.is_sparse else grad
            # Check before multiplying, as GradScaler's kernel does.
            non_finite.append(~torch.isfinite(values).all())
            values.mul_(torch.tensor(inv_scale, dtype=torch.float32, device=values.device))
    if not non_finite:
        return False
    device = non_finite[0].device
    return bool(torch.stack([f.to(device) for f in non_finite]).any())  # one device sync


class StaticLossScaler(_CheckedScaler):
    """A fixed loss scale; steps with inf/NaN gradients are still skipped, as GradScaler does."""

    def __init__(self, scale: float = 2.0**16) -> None:
        super().__init__(_check_scale("scale", scale))

    def state_dict(self) -> dict[str, Any]:
        """The scale and the skipped-step count."""
        return {"scale": self._scale, "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore from ``state_dict()`` (a GradScaler state dict gives its current scale)."""
        self._scale = _check_scale("scale", state_dict["scale"])
        self.skipped_steps = state_dict.get("skipped_steps", 0)


class DynamicLossScaler(_CheckedScaler):
    """GradScaler's dynamic scale: halve on overflow, double after ``growth_interval`` clean steps.

    On a step with inf/NaN gradients: skip it, scale *= backoff_factor, tracker = 0. Otherwise
    tracker += 1, and when it reaches growth_interval: scale *= growth_factor (unless that
    overflows float32), tracker = 0. The scale is a float32 value, rounded after each change.
    """

    def __init__(self, init_scale: float = 2.0**16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000) -> None:
        super().__init__(_check_scale("init_scale", init_scale))
        self.growth_factor, self.backoff_factor, self.growth_interval = _check_dynamic(
            growth_factor, backoff_factor, growth_interval)
        self.growth_tracker = 0  # consecutive clean steps since the last change of scale

    def _update_scale(self, found_inf: bool) -> None:
        if found_inf:
            self._scale = _fp32(self._scale * self.backoff_factor)
            self.growth_tracker = 0
            return
        self.growth_tracker += 1
        if self.growth_tracker == self.growth_interval:
            grown = _fp32(self._scale * self.growth_factor)
            if math.isfinite(grown):  # never grow past float32's range to inf
                self._scale = grown
            self.growth_tracker = 0

    def state_dict(self) -> dict[str, Any]:
        """GradScaler's keys (so either can load the other's), plus the skipped-step count."""
        return {"scale": self._scale, "growth_factor": self.growth_factor,
                "backoff_factor": self.backoff_factor, "growth_interval": self.growth_interval,
                "_growth_tracker": self.growth_tracker, "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore from ``state_dict()`` or from a ``torch.amp.GradScaler`` state dict."""
        self._scale = _check_scale("scale", state_dict["scale"])
        self.growth_factor, self.backoff_factor, self.growth_interval = _check_dynamic(
            state_dict["growth_factor"], state_dict["backoff_factor"],
            state_dict["growth_interval"])
        self.growth_tracker = state_dict["_growth_tracker"]
        self.skipped_steps = state_dict.get("skipped_steps", 0)


def _check_dynamic(growth_factor: float, backoff_factor: float,
                   growth_interval: int) -> tuple[float, float, int]:
    """Validate the dynamic scaler's factors, naming the bad argument."""
    if not (isinstance(growth_factor, int | float) and 1 < growth_factor < math.inf):
        raise ValueError(f"growth_factor: must be a finite number > 1; got {growth_factor!r}")
    if not (isinstance(backoff_factor, int | float) and 0 < backoff_factor < 1):
        raise ValueError(f"backoff_factor: must be a number in (0, 1); got {backoff_factor!r}")
    if isinstance(growth_interval, bool) or not isinstance(growth_interval, int) \
            or growth_interval < 1:
        raise ValueError(f"growth_interval: must be an integer >= 1; got {growth_interval!r}")
    return float(growth_factor), float(backoff_factor), growth_interval


class NoLossScaler:
    """The scaler interface as a no-op, for precisions that need no scaling: one training loop.

    Scale 1.0, never checks or skips; ``step`` is ``optimizer.step()``.
    """

    def __init__(self) -> None:
        self.skipped_steps = 0  # always 0: kept so a training loop can log any scaler
        self.found_inf = False

    def get_scale(self) -> float:
        """Always 1.0."""
        return 1.0

    def scale(
        self, outputs: torch.Tensor | Iterable[torch.Tensor]
    ) -> torch.Tensor | Iterable[torch.Tensor]:
        """Return ``outputs`` unchanged."""
        return outputs

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Nothing to undo."""

    def step(self, optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        """Just ``optimizer.step(*args, **kwargs)``."""
        return optimizer.step(*args, **kwargs)

    def update(self) -> None:
        """Nothing to adjust."""

    def state_dict(self) -> dict[str, Any]:
        """Empty, like a disabled GradScaler's."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore."""
