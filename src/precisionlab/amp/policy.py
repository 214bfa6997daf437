"""Precision policies named as Lightning names them: which dtype the weights live in, which
dtype the matmuls run in, and whether torch.autocast does the casting.

``*-mixed`` keeps fp32 master weights (so fp32 optimizer state) and lets autocast run matmuls
and convolutions in the low-precision dtype; ``*-true`` casts the whole model, the naive cast.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["PRECISIONS", "Policy", "get_policy"]

PRECISIONS = ("64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true")


@dataclass(frozen=True)
class Policy:
    """One precision setting: parameter dtype, compute dtype, and whether autocast mixes them."""

    name: str
    param_dtype: torch.dtype  # parameters, and so gradients and optimizer state
    compute_dtype: torch.dtype  # what matmuls and convolutions run in
    mixed: bool  # fp32 master weights + torch.autocast

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager:
        """The forward-pass context: ``torch.autocast`` for mixed policies, a no-op otherwise."""
        if self.mixed:
            return torch.autocast(device_type, dtype=self.compute_dtype)
        return contextlib.nullcontext()

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Cast the model's floating parameters and buffers to ``param_dtype`` (in place).

        For ``*-true`` this is the whole recipe; for ``*-mixed`` an fp32 model is left as is.
        """
        return model.to(self.param_dtype)

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """Cast a floating input to ``param_dtype`` for ``*-true``; token ids and mixed: as is."""
        if self.mixed or not x.is_floating_point():
            return x
        return x.to(self.param_dtype)

    @property
    def needs_loss_scaling(self) -> bool:
        """True for 16-mixed only: fp16 gradients underflow without it, bf16 has fp32's range."""
        return self.mixed and self.compute_dtype == torch.float16


_POLICIES = {
    p.name: p
    for p in [
        Policy("64-true", torch.float64, torch.float64, mixed=False),
        Policy("32-true", torch.float32, torch.float32, mixed=False),
        Policy("16-mixed", torch.float32, torch.float16, mixed=True),
        Policy("bf16-mixed", torch.float32, torch.bfloat16, mixed=True),
        Policy("16-true", torch.float16, torch.float16, mixed=False),
        Policy("bf16-true", torch.bfloat16, torch.bfloat16, mixed=False),
    ]
}


def get_policy(precision: str | Policy) -> Policy:
    """The policy for a precision name (a Policy passes through unchanged)."""
    if isinstance(precision, Policy):
        return precision
    if precision not in _POLICIES:
        raise ValueError(f"precision: unknown {precision!r}; known: {', '.join(PRECISIONS)}")
    return _POLICIES[precision]
