"""Calibration observers: choose the clipping range [lo, hi] that the integers will cover.

- min-max: the whole observed range (nothing clipped; one outlier stretches every step);
- percentile p: clip the tails beyond the p-th percentile (of |x| if symmetric);
- mse: the clipping threshold that minimises the mean squared quantization error;
- entropy: TensorRT's calibration, the threshold whose quantized histogram is closest to the
  observed one in KL divergence.

`observe_range` works on a 2-D `rows` view (one row per scale); `Observer` accumulates
activations over calibration batches for one per-tensor range.
"""

from __future__ import annotations

import numpy as np
import torch

from precisionlab.quant.affine import QuantSpec, fake_quantize, qparams

MSE_CANDIDATES = 100  # clipping thresholds tried by the mse observer: amax * k / 100
ENTROPY_BINS = 2048  # histogram bins of |x| for the entropy observer (TensorRT's default)


def observe_range(r: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row clipping range (lo, hi) of `r` (shape [rows, n]) by `spec.observer`."""
    if r.numel() == 0:
        raise ValueError("calibration data: the observer got no values to calibrate on")
    r = r.detach().float()
    if spec.observer == "minmax":
        return r.amin(dim=1), r.amax(dim=1)
    if spec.observer == "percentile":
        return _percentile_range(r, spec)
    if spec.observer == "mse":
        return _mse_range(r, spec)
    return _entropy_range(r, spec)


def _quantile(r: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row quantile with linear interpolation (numpy's default), exact for any size."""
    if r.numel() <= 16_000_000:  # torch.quantile's input limit
        return torch.quantile(r, q, dim=1)
    return torch.from_numpy(np.quantile(r.numpy(), q, axis=1)).float()


def _percentile_range(r: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    p = spec.percentile / 100.0
    if spec.symmetric:
        amax = _quantile(r.abs(), p)
        return -amax, amax
    return _quantile(r, 1.0 - p), _quantile(r, p)


def _mse_range(r: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Shrink the min-max range by k/100 (k = 1..100) and keep, per row, the k of least MSE."""
    lo0, hi0 = r.amin(dim=1), r.amax(dim=1)
    best_err = torch.full_like(lo0, float("inf"))
    best_lo, best_hi = lo0.clone(), hi0.clone()
    for k in range(1, MSE_CANDIDATES + 1):
        lo, hi = lo0 * (k / MSE_CANDIDATES), hi0 * (k / MSE_CANDIDATES)
        scale, zp = qparams(lo, hi, spec)
        err = (fake_quantize(r, scale[:, None], zp[:, None], spec.qmin, spec.qmax) - r)
        err = err.pow(2).mean(dim=1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_lo, best_hi = torch.where(better, lo, best_lo), torch.where(better, hi, best_hi)
    return best_lo, best_hi


def entropy_threshold(hist: np.ndarray, n_levels: int) -> int:
    """TensorRT's KL calibration on a histogram of |x|: the number of bins to keep.

    For each candidate cut i, the kept bins (with the clipped tail folded into the last one)
    are the reference P; Q squeezes them into `n_levels` levels and spreads each level back
    over its nonzero bins. The cut of least KL(P || Q) wins.
    """
    hist = hist.astype(np.float64)
    n_bins = len(hist)
    best_i, best_kl = n_bins, np.inf
    for i in range(min(n_levels, n_bins), n_bins + 1):
        p = hist[:i].copy()
        p[i - 1] += hist[i:].sum()
        kept = hist[:i]  # Q is built from the kept bins only: clipped mass is what it misses
        nonzero = kept != 0
        level = np.minimum((np.arange(i) * n_levels) // i, n_levels - 1)
        level_sum = np.bincount(level, weights=kept, minlength=n_levels)
        level_count = np.bincount(level, weights=nonzero, minlength=n_levels)
        q = np.where(nonzero, level_sum[level] / np.maximum(level_count[level], 1), 0.0)
        if p.sum() == 0 or q.sum() == 0:
            continue
        p, q = p / p.sum(), q / q.sum()
        mask = p > 0
        if np.any(q[mask] == 0):
            kl = np.inf
        else:
            kl = float(np.sum(p[mask] * np.log(p[mask] / q[mask])))
        if kl < best_kl:
            best_i, best_kl = i, kl
    return best_i


def _entropy_range(r: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    values = r.reshape(-1)
    amax = float(values.abs().max())
    lo0, hi0 = values.min().reshape(1), values.max().reshape(1)
    if amax == 0.0:
        return lo0, hi0
    hist = torch.histc(values.abs(), bins=ENTROPY_BINS, min=0.0, max=amax).numpy()
    # The first bin holds every exact zero: after a ReLU about half of all values. Counted as
    # it is, that one spike dominates the KL search and favours cuts that clip much of the
    # rest; pytorch-quantization's _compute_amax_entropy gives it the second bin's count.
    hist[0] = hist[1]
    # A symmetric grid spends half its levels on each sign; an asymmetric one all of them on
    # the span, which for one-signed data (after a ReLU) is the same |x| histogram.
    n_levels = 2 ** (spec.bits - 1) if spec.symmetric else 2**spec.bits
    t = entropy_threshold(hist, n_levels) * amax / ENTROPY_BINS
    return torch.clamp(lo0, min=-t), torch.clamp(hi0, max=t)


class Observer:
    """Collects activations over calibration batches, then gives one per-tensor range.

    min-max keeps a running min and max; the other observers keep the values themselves (up
    to `max_values`, a strided subsample beyond that) because their ranges need the whole
    distribution.
    """

    def __init__(self, spec: QuantSpec, max_values: int = 4_000_000) -> None:
        if spec.granularity != "per_tensor":
            raise ValueError(f"granularity: activations are quantized per tensor here; "
                             f"got {spec.granularity!r}")
        self.spec = spec
        self.max_values = max_values
        self._lo: torch.Tensor | None = None
        self._hi: torch.Tensor | None = None
        self._values: list[torch.Tensor] = []
        self.count = 0

    def update(self, x: torch.Tensor) -> None:
        """Observe one batch of activations."""
        flat = x.detach().float().reshape(-1).cpu()
        if flat.numel() == 0:
            return
        self.count += flat.numel()
        lo, hi = flat.min(), flat.max()
        self._lo = lo if self._lo is None else torch.minimum(self._lo, lo)
        self._hi = hi if self._hi is None else torch.maximum(self._hi, hi)
        if self.spec.observer != "minmax":
            self._values.append(flat)

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The calibrated (lo, hi), each of shape [1]."""
        if self.count == 0:
            raise ValueError("calibration data: no activations were observed; pass at least "
                             "one non-empty batch to calibrate")
        if self.spec.observer == "minmax":
            return self._lo.reshape(1), self._hi.reshape(1)
        values = torch.cat(self._values)
        if values.numel() > self.max_values:
            values = values[:: -(-values.numel() // self.max_values)]
        return observe_range(values.reshape(1, -1), self.spec)
