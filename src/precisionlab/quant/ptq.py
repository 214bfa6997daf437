"""Post-training quantization of a trained float model, measured: apply a `QuantConfig` to a
copy, fix its activation ranges from a calibration set, and score it on the test split.

    collected = collect_inputs(model, data.x_train[:256])   # the float model's layer inputs
    ranges = ranges_for(collected, QuantSpec(symmetric=False))
    row = evaluate_ptq(model, data, config, ranges)    # test_loss, test_accuracy, bytes, zeros

Activation ranges are calibrated on the *float* model, once per activation spec, and then fixed
into every quantized copy: the recipe of NVIDIA's pytorch-quantization (its calibration pass runs
with the quantizers disabled), and much cheaper than recalibrating each weight configuration.
(A single model is calibrated by `quant.calibrate`, the library's one calibration step; this
module only caches the float model's layer inputs so a sweep computes each range once.)
`quantize_ptq` does the swap; a per-group spec whose group size does not
divide a layer's input width falls back to per-channel for that layer, and says which layers it
did that to.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import replace

import torch
from torch import nn

from precisionlab.amp.trainer import evaluate  # the one evaluation; re-exported for callers
from precisionlab.data import Split
from precisionlab.memory import tensor_bytes
from precisionlab.quant.affine import QuantSpec
from precisionlab.quant.lowrank import LowRankLinear, low_rank_
from precisionlab.quant.modules import (
    SWAPPABLE,
    QuantConfig,
    QuantizedLayer,
    quantize_,
    run_calibration,
    zero_fraction,
)
from precisionlab.quant.observers import Observer

__all__ = ["Ranges", "clipped_fraction", "collect_inputs",
           "evaluate", "evaluate_low_rank", "evaluate_ptq", "float_zero_fraction", "quantize_ptq",
           "ranges_for", "weight_bytes"]

Ranges = dict[str, tuple[torch.Tensor, torch.Tensor]]  # layer name -> (lo, hi), each shape [1]


def _targets(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The (name, layer) pairs that `quantize_` would swap, in model order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, SWAPPABLE) and name]


@torch.no_grad()
def collect_inputs(model: nn.Module, inputs: torch.Tensor, batch_size: int = 256
                   ) -> dict[str, list[torch.Tensor]]:
    """The input batches each Linear/Conv of a float `model` receives while `inputs` run through.

    Layers that are fed the very same tensor (the q, k and v projections of an attention block)
    get the same list objects, so a range is computed once for all of them.
    """
    targets = _targets(model)
    if not targets:
        raise ValueError("model: has no Linear/Conv1d/Conv2d layer to calibrate")
    seen: dict[str, list[torch.Tensor]] = {name: [] for name, _ in targets}

    def hook(name: str) -> Callable:
        def record(module: nn.Module, args: tuple) -> None:
            seen[name].append(args[0])  # no_grad: no graph; the object itself, for sharing
        return record

    handles = [m.register_forward_pre_hook(hook(name)) for name, m in targets]
    try:
        run_calibration(model, inputs, batch_size)
    finally:
        for h in handles:
            h.remove()
    shared: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for name, batches in seen.items():
        seen[name] = shared.setdefault(tuple(id(t) for t in batches), batches)
    return seen


def ranges_for(collected: Mapping[str, list[torch.Tensor]], spec: QuantSpec) -> Ranges:
    """Each layer's input range under the activation `spec`, from the library's `Observer`."""
    if spec.granularity != "per_tensor":
        raise ValueError(f"granularity: activations are quantized per tensor here; "
                         f"got {spec.granularity!r}")
    done: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    out: Ranges = {}
    for name, batches in collected.items():
        if id(batches) not in done:
            observer = Observer(spec)
            for batch in batches:
                observer.update(batch)
            done[id(batches)] = observer.range()
        out[name] = done[id(batches)]
    return out


def clipped_fraction(collected: Mapping[str, list[torch.Tensor]], ranges: Ranges) -> float:
    """Share of the calibration activations that fall outside their layer's range, averaged
    over the layers (each distinct input once): how much a calibrator clips."""
    shares: dict[int, float] = {}
    for name, batches in collected.items():
        if id(batches) not in shares:
            lo, hi = (float(t) for t in ranges[name])
            values = torch.cat([b.reshape(-1) for b in batches])
            shares[id(batches)] = float(((values < lo) | (values > hi)).float().mean())
    if not shares:
        raise ValueError("collected: no layer inputs; run collect_inputs first")
    return sum(shares.values()) / len(shares)


def _group_fits(layer: nn.Module, spec: QuantSpec) -> bool:
    if spec.granularity != "per_group":
        return True
    return math.prod(layer.weight.shape[1:]) % spec.group_size == 0


def quantize_ptq(model: nn.Module, config: QuantConfig, ranges: Ranges | None = None
                 ) -> tuple[nn.Module, list[str]]:
    """A quantized copy of `model` and the names of layers that fell back to per-channel.

    With an activation spec, `ranges` (from `ranges_for` with that spec) must cover every
    quantized layer; they are fixed into the copy, which is then ready to use.
    """
    if not isinstance(config, QuantConfig):
        raise ValueError(f"config: must be a QuantConfig; got {config!r}")
    if config.activation is not None and ranges is None:
        raise ValueError("ranges: a config with an activation spec needs calibrated ranges "
                         "(ranges_for(collect_inputs(model, inputs), config.activation))")
    names = [name for name, _ in _targets(model)]
    if ranges is not None and config.activation is not None:
        missing = [name for name in names if name not in ranges]
        if missing:
            raise ValueError(f"ranges: no calibrated range for layer(s) {', '.join(missing)}")
    q = copy.deepcopy(model)
    spec = config.weight
    fallback = [name for name, m in _targets(q) if not _group_fits(m, spec)]
    if len(fallback) < len(names):
        quantize_(q, config, filter_fn=lambda m, name: name not in fallback)
    if fallback:
        channel = replace(spec, granularity="per_channel", group_size=None)
        quantize_(q, replace(config, weight=channel), filter_fn=lambda m, name: name in fallback)
    if config.activation is not None:
        for name, m in q.named_modules():
            if isinstance(m, QuantizedLayer):
                m.input_quant.set_range(*ranges[name])
    return q, fallback


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the weights of the Linear/Conv layers (quantized, low-rank or float), counted by
    `memory.tensor_bytes`: the stored integers plus their float32 scales (and int32 zero points
    if asymmetric) for quantized ones. Biases, embeddings and norms are left out: they are the
    same in every variant of a model, unlike `payload_bytes`, which counts the whole state."""
    tensors: list[torch.Tensor] = []
    for m in model.modules():
        if isinstance(m, QuantizedLayer):
            tensors += m.qtensor().stored()
        elif isinstance(m, SWAPPABLE):
            tensors.append(m.weight)
    return tensor_bytes(tensors)


def _n_weights(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, SWAPPABLE))


def float_zero_fraction(model: nn.Module) -> float:
    """Share of the Linear/Conv weights of a float model that are exactly zero."""
    weights = [m.weight.detach() for m in model.modules() if isinstance(m, SWAPPABLE)]
    if not weights:
        raise ValueError("model: has no Linear/Conv1d/Conv2d layer")
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def evaluate_ptq(model: nn.Module, data: Split, config: QuantConfig,
                 ranges: Ranges | None = None) -> dict[str, object]:
    """Quantize a copy of `model` by `config` and score it on the test split.

    Returns test_loss, test_accuracy, weight_bytes, bits_per_weight (storage of the quantized
    weights, scales included, per weight), zero_fraction (weights whose integer is the zero
    point) and fallback (layers quantized per-channel because the group did not fit).
    """
    q, fallback = quantize_ptq(model, config, ranges)
    loss, acc = evaluate(q, data)
    n_bytes = weight_bytes(q)
    return {"test_loss": loss, "test_accuracy": acc, "weight_bytes": n_bytes,
            "bits_per_weight": 8 * n_bytes / _n_weights(model), "zero_fraction": zero_fraction(q),
            "fallback": ",".join(fallback)}


def evaluate_low_rank(model: nn.Module, data: Split, bits: int) -> dict[str, object]:
    """Factorize every Linear of a copy of `model` at the bytes of a `bits`-bit weight (see
    `low_rank_`) and score it: test_loss, test_accuracy, weight_bytes, the ranks, and the number
    formats really stored: weight_dtype (the float model's Linear weights), factor_dtypes (the
    factors), factor_bits (the widest factor's bits per value) and float32_factors."""
    weight_dtypes = {str(m.weight.dtype) for m in model.modules() if isinstance(m, nn.Linear)}
    q = low_rank_(copy.deepcopy(model), bits)
    loss, acc = evaluate(q, data)
    factors = [m for m in q.modules() if isinstance(m, LowRankLinear)]
    stored = {p.dtype for m in factors for p in m.parameters()}
    return {"test_loss": loss, "test_accuracy": acc, "weight_bytes": weight_bytes(q),
            "ranks": ",".join(str(m.rank) for m in factors),
            "weight_dtype": ",".join(sorted(weight_dtypes)),
            "factor_dtypes": ",".join(sorted(str(d) for d in stored)),
            "factor_bits": max(torch.empty(0, dtype=d).element_size() * 8 for d in stored),
            "float32_factors": stored == {torch.float32}}
