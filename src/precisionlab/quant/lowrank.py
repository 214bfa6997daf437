"""Low-rank factorization: the contrast to quantization (claim Q-4).

A weight W (out x in) is replaced by two thinner float32 factors from its truncated SVD,
W ~ (U_r S_r) V_r^T. It saves bytes by keeping fewer numbers, not by storing them in fewer bits:
a method of rank, not of precision. `rank_for_bytes` picks the rank with the byte budget of a
b-bit quantized weight, so the two can be compared at equal size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def rank_for_bytes(out_features: int, in_features: int, n_bytes: float,
                   bytes_per_value: int = 4) -> int:
    """Largest rank r whose two factors (r x (in + out) values) fit in `n_bytes` (at least 1)."""
    if n_bytes <= 0:
        raise ValueError(f"n_bytes: must be > 0; got {n_bytes!r}")
    return max(1, int(n_bytes // (bytes_per_value * (in_features + out_features))))


class LowRankLinear(nn.Sequential):
    """Linear(in, r, no bias) then Linear(r, out): the truncated SVD of a Linear layer."""

    def __init__(self, layer: nn.Linear, rank: int) -> None:
        full = min(layer.in_features, layer.out_features)
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= full:
            raise ValueError(f"rank: must be an integer from 1 to {full}; got {rank!r}")
        w = layer.weight.detach().double()
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        down = nn.Linear(layer.in_features, rank, bias=False)
        up = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
        with torch.no_grad():
            down.weight.copy_(vh[:rank])
            up.weight.copy_(u[:, :rank] * s[:rank])
            if layer.bias is not None:
                up.bias.copy_(layer.bias)
        super().__init__(down, up)
        self.to(device=layer.weight.device, dtype=layer.weight.dtype)  # where the layer lived
        self.rank = rank


def low_rank_(model: nn.Module, bits: int,
              filter_fn: Callable[[nn.Module, str], bool] | None = None) -> nn.Module:
    """Replace, in place, each Linear by a `LowRankLinear` with the bytes of a `bits`-bit weight
    (out x in x bits / 8, plus one float32 scale per output channel)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
        raise ValueError(f"bits: the byte budget is that of a 1- to 16-bit weight; got {bits!r}")
    targets = [(name, m) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and name and (filter_fn is None or filter_fn(m, name))]
    if not targets:
        raise ValueError("model: has no nn.Linear layer to factorize")
    for name, layer in targets:
        budget = layer.out_features * layer.in_features * bits / 8 + 4 * layer.out_features
        rank = rank_for_bytes(layer.out_features, layer.in_features, budget)
        rank = min(rank, min(layer.in_features, layer.out_features))
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child,
                LowRankLinear(layer, rank))
    return model
