"""Quantized layers and the torchao-style API that swaps them into a model.

    quantize_(model, QuantConfig(weight=QuantSpec(bits=4, granularity="per_group",
                                                  group_size=32)))       # weight-only PTQ
    quantize_(model, QuantConfig(weight=QuantSpec(granularity="per_channel"),
                                 activation=QuantSpec(symmetric=False, observer="entropy")))
    calibrate(model, x_cal)                                              # static activations
    prepare_qat(model, config); calibrate(model, x_cal); Trainer(...).fit(model, data)
    convert(model)                                                       # QAT

`QuantizedLinear` / `QuantizedConv` store their weights as integers (packed for 4 bits and
below) and compute in float32 on the dequantized weights: the arithmetic is exactly the
integer model's, the speed is not. Real int8 kernels come from `backends.to_int8_backend`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from precisionlab.memory import tensor_bytes
from precisionlab.quant.affine import (
    QTensor,
    QuantSpec,
    check_shape,
    qparams,
    quantize_with_range,
    rows,
    ste_fake_quantize,
    unrows,
)
from precisionlab.quant.observers import Observer, observe_range

SWAPPABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


def quantize_tensor(x: torch.Tensor, spec: QuantSpec, lo: torch.Tensor | None = None,
                    hi: torch.Tensor | None = None) -> QTensor:
    """Quantize `x` by `spec`; the range comes from `spec.observer` unless `lo`/`hi` are given."""
    if lo is None or hi is None:
        lo, hi = observe_range(rows(x.detach(), spec), spec)
    return quantize_with_range(x, spec, lo, hi)


@dataclass(frozen=True)
class QuantConfig:
    """What `quantize_` does to each Linear/Conv: the weight spec, and the activation spec
    (None = weight-only). Activations are quantized per tensor, calibrated statically."""

    weight: QuantSpec = QuantSpec(granularity="per_channel")
    activation: QuantSpec | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.weight, QuantSpec):
            raise ValueError(f"weight: must be a QuantSpec; got {self.weight!r}")
        if self.activation is not None:
            if not isinstance(self.activation, QuantSpec):
                raise ValueError(f"activation: must be a QuantSpec or None; "
                                 f"got {self.activation!r}")
            if self.activation.granularity != "per_tensor":
                raise ValueError("activation: activations are quantized per tensor; got "
                                 f"granularity={self.activation.granularity!r}")

    def describe(self) -> str:
        """e.g. 'W int8 sym per_channel minmax / A int8 asym per_tensor p99.99'; `parse`
        reads it back."""
        act = "A fp32" if self.activation is None else f"A {self.activation.describe()}"
        return f"W {self.weight.describe()} / {act}"

    @classmethod
    def parse(cls, text: str) -> QuantConfig:
        """The config a `describe()` label names: so a configuration can be one Papermill
        string parameter, e.g. 'W int4 sym per_group(32) minmax / A fp32'."""
        parts = text.split(" / ") if isinstance(text, str) else []
        if len(parts) != 2 or not parts[0].startswith("W ") or not parts[1].startswith("A "):
            raise ValueError(f"text: expected 'W <weight spec> / A <activation spec or fp32>' "
                             f"as QuantConfig.describe() writes it; got {text!r}")
        act = parts[1][2:].strip()
        return cls(weight=QuantSpec.parse(parts[0][2:]),
                   activation=None if act == "fp32" else QuantSpec.parse(act))

    def to_dict(self) -> dict[str, object]:
        """{'weight': {...}, 'activation': {...} or None}: primitives only (YAML, JSON)."""
        return {"weight": self.weight.to_dict(),
                "activation": None if self.activation is None else self.activation.to_dict()}

    @classmethod
    def from_dict(cls, values: dict[str, object]) -> QuantConfig:
        """Inverse of `to_dict`; unknown keys are an error."""
        if not isinstance(values, dict) or set(values) - {"weight", "activation"}:
            raise ValueError(f"values: must be a dict with keys 'weight' and 'activation'; "
                             f"got {values!r}")
        act = values.get("activation")
        return cls(weight=QuantSpec.from_dict(values.get("weight", {})),
                   activation=None if act is None else QuantSpec.from_dict(act))


def _functional(layer: nn.Module) -> Callable[..., torch.Tensor]:
    """The layer's computation as op(x, weight, bias), so a quantized weight can be passed in."""
    if isinstance(layer, nn.Linear):
        return F.linear
    if isinstance(layer, nn.Conv1d | nn.Conv2d):
        if layer.padding_mode != "zeros":
            raise ValueError(f"layer: only padding_mode='zeros' convolutions can be quantized; "
                             f"got {layer.padding_mode!r}")
        conv = F.conv1d if isinstance(layer, nn.Conv1d) else F.conv2d
        return partial(conv, stride=layer.stride, padding=layer.padding,
                       dilation=layer.dilation, groups=layer.groups)
    raise TypeError(f"layer: can quantize {', '.join(c.__name__ for c in SWAPPABLE)}; "
                    f"got {type(layer).__name__}")


class _ActivationQuant(nn.Module):
    """Static per-tensor input quantization: observe while `calibrate` runs, then fake-quantize.

    Used before calibration it raises: a silently unquantized input would fake the results.
    """

    def __init__(self, spec: QuantSpec) -> None:
        super().__init__()
        self.spec = spec
        self.observer: Observer | None = None
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))
        self.register_buffer("scale", torch.ones(1))
        self.register_buffer("zero_point", torch.zeros(1, dtype=torch.int32))

    def start(self) -> None:
        """Begin (or restart) observing activations."""
        self.observer = Observer(self.spec)

    def freeze(self) -> None:
        """Turn what was observed into the scale and zero point; stop observing."""
        lo, hi = self.observer.range()
        self.set_range(lo, hi)
        self.observer = None

    def set_range(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        """Fix the input range [lo, hi] directly (used by `convert` after QAT)."""
        scale, zero_point = qparams(lo.reshape(1), hi.reshape(1), self.spec)
        self.scale.copy_(scale)
        self.zero_point.copy_(zero_point)
        self.calibrated.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer is not None:
            self.observer.update(x)
            return x
        if not bool(self.calibrated):
            raise RuntimeError("activation quantization is not calibrated: run "
                               "calibrate(model, inputs) before using the model")
        return ste_fake_quantize(x, self.scale, self.zero_point, self.spec.qmin, self.spec.qmax)


class QuantizedLayer(nn.Module):
    """A Linear or Conv whose weight is stored as integers (`qweight`, packed when <= 4 bits)
    with float32 scales; the input is fake-quantized too if an activation spec is given."""

    def __init__(self, layer: nn.Module, config: QuantConfig) -> None:
        super().__init__()
        self._op = _functional(layer)
        self._layer_repr = repr(layer)
        self._kind = type(layer).__name__
        check_shape(layer.weight.shape, config.weight, name=f"{self._kind}.weight")
        q = quantize_tensor(layer.weight.detach().float().cpu(), config.weight)
        device = layer.weight.device
        self.spec = config.weight
        self.weight_shape = q.shape
        self.packed = q.packed
        self.register_buffer("qweight", q.data.to(device))
        self.register_buffer("weight_scale", q.scale.to(device))
        if not config.weight.symmetric:
            self.register_buffer("weight_zero_point", q.zero_point.to(device))
        else:
            self.weight_zero_point = None
        self.bias = (None if layer.bias is None
                     else nn.Parameter(layer.bias.detach().clone(), requires_grad=False))
        self.input_quant = (None if config.activation is None
                            else _ActivationQuant(config.activation).to(device))

    def qtensor(self) -> QTensor:
        """The stored weight as a `QTensor` (integers, scales, spec)."""
        zp = (self.weight_zero_point if self.weight_zero_point is not None
              else torch.zeros_like(self.weight_scale, dtype=torch.int32))
        return QTensor(self.qweight.cpu(), self.weight_scale.cpu(), zp.cpu(), self.weight_shape,
                       self.spec, self.packed)

    def dequantized_weight(self) -> torch.Tensor:
        """The float32 weight the integers stand for."""
        return self.qtensor().dequantize().to(self.weight_scale.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_quant is not None:
            x = self.input_quant(x)
        w = self.dequantized_weight().to(x.dtype)
        return self._op(x, w, None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"{self._layer_repr}, weight={self.spec.describe()}"


class FakeQuantLayer(nn.Module):
    """A Linear or Conv for quantization-aware training: its float weight trains, and every
    forward pass sees it (and the input) fake-quantized, with straight-through gradients.

    The weight range follows the current weights (by the spec's observer); the input range is a
    moving average of batch min/max while training (as torch.ao's QAT observers do), fixed in
    eval mode.
    """

    def __init__(self, layer: nn.Module, config: QuantConfig, momentum: float = 0.01) -> None:
        super().__init__()
        check_shape(layer.weight.shape, config.weight, name=f"{type(layer).__name__}.weight")
        self.layer = layer
        self.config = config
        self.momentum = momentum
        self._op = _functional(layer)
        if config.activation is not None:
            self.register_buffer("act_lo", torch.zeros(1, device=layer.weight.device))
            self.register_buffer("act_hi", torch.zeros(1, device=layer.weight.device))
            self.register_buffer("act_seen", torch.zeros((), dtype=torch.bool,
                                                         device=layer.weight.device))

    def fake_weight(self) -> torch.Tensor:
        """The weight as the integer model would see it (gradients straight through)."""
        spec = self.config.weight
        w = self.layer.weight
        r = rows(w, spec)
        lo, hi = observe_range(r.detach(), spec)
        scale, zp = qparams(lo, hi, spec)
        fq = ste_fake_quantize(r, scale[:, None], zp[:, None], spec.qmin, spec.qmax)
        return unrows(fq, w.shape, spec)

    @torch.no_grad()
    def set_input_range(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        """Fix the input range [lo, hi] (e.g. from calibration); training moves it from there
        by the moving average unless `momentum` is 0."""
        self.act_lo.copy_(lo.reshape(1))
        self.act_hi.copy_(hi.reshape(1))
        self.act_seen.fill_(True)

    def _fake_input(self, x: torch.Tensor) -> torch.Tensor:
        spec = self.config.activation
        if self.training:
            with torch.no_grad():
                lo, hi = x.detach().min().reshape(1).float(), x.detach().max().reshape(1).float()
                if not bool(self.act_seen):
                    self.set_input_range(lo, hi)
                else:
                    self.act_lo.lerp_(lo, self.momentum)
                    self.act_hi.lerp_(hi, self.momentum)
        elif not bool(self.act_seen):
            raise RuntimeError("FakeQuantLayer: its input range was never observed; train "
                               "(or run it in train mode) before evaluating")
        scale, zp = qparams(self.act_lo, self.act_hi, spec)
        return ste_fake_quantize(x, scale, zp, spec.qmin, spec.qmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.activation is not None:
            x = self._fake_input(x)
        return self._op(x, self.fake_weight().to(x.dtype), self.layer.bias)


def _swap(model: nn.Module, make: Callable[[nn.Module], nn.Module],
          filter_fn: Callable[[nn.Module, str], bool] | None, kinds: tuple[type, ...]) -> int:
    """Replace every submodule of `kinds` that `filter_fn(module, name)` accepts; count them."""
    swapped = [name for name, m in model.named_modules()
               if isinstance(m, QuantizedLayer | FakeQuantLayer)]
    targets = [(name, m) for name, m in model.named_modules()
               if isinstance(m, kinds) and name and (filter_fn is None or filter_fn(m, name))
               and not any(name.startswith(f"{done}.") for done in swapped)]  # not inside one
    made = {name: make(m) for name, m in targets}  # build all first: errors change nothing
    for name, new in made.items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return len(made)


def quantize_(model: nn.Module, config: QuantConfig,
              filter_fn: Callable[[nn.Module, str], bool] | None = None) -> nn.Module:
    """Swap, in place, each Linear/Conv1d/Conv2d (that `filter_fn(module, fqn)` accepts) for a
    `QuantizedLayer`. With an activation spec, call `calibrate` before using the model."""
    if not isinstance(config, QuantConfig):
        raise ValueError(f"config: must be a QuantConfig; got {config!r}")
    if _swap(model, lambda m: QuantizedLayer(m, config), filter_fn, SWAPPABLE) == 0:
        raise ValueError("model: has no Linear/Conv1d/Conv2d layer to quantize (after filter_fn)")
    return model


@torch.no_grad()
def run_calibration(model: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> None:
    """Run the calibration set `inputs` through `model` in eval mode, `batch_size` at a time,
    for the observers or hooks that watch it; the model's train/eval mode is restored."""
    if inputs is None or len(inputs) == 0:
        raise ValueError("inputs: calibration needs at least one example; got none")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: must be a positive integer; got {batch_size!r}")
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(inputs), batch_size):
            model(inputs[start:start + batch_size])
    finally:
        model.train(was_training)


def calibrate(model: nn.Module, inputs: torch.Tensor, batch_size: int = 256,
              momentum: float | None = None) -> nn.Module:
    """The library's one calibration step: run `inputs` (the calibration set, len(inputs)
    examples, `batch_size` at a time) through `model` and fix each quantized layer's input
    range from what its observer saw. Returns `model`, changed in place.

    - a `quantize_`d model: each layer's activation observer watches its input, then freezes;
    - a `prepare_qat`ed model: each `FakeQuantLayer` observes its input with the weights
      quantized and the activations not yet quantized, exactly as the `quantize_`d model would,
      so QAT at step 0 computes what PTQ computes. Training then moves each range by a moving
      average with the layer's `momentum` (0.01 unless given here); `momentum=0` freezes the
      calibrated ranges, as torch.ao's `disable_observer` does.
    """
    static = [m for m in model.modules() if isinstance(m, _ActivationQuant)]
    fake = [m for m in model.modules()
            if isinstance(m, FakeQuantLayer) and m.config.activation is not None]
    if not static and not fake:
        raise ValueError("model: nothing to calibrate; quantize_ or prepare_qat it with an "
                         "activation spec first")
    if momentum is not None and (isinstance(momentum, bool) or not isinstance(momentum, int | float)
                                 or not 0 <= momentum <= 1):
        raise ValueError(f"momentum: must be None or a number from 0 to 1; got {momentum!r}")
    if static:
        for layer in static:
            layer.start()
        try:
            run_calibration(model, inputs, batch_size)
            for layer in static:
                layer.freeze()
        finally:
            for layer in static:
                layer.observer = None
    if fake:
        _calibrate_fake_quant(model, fake, inputs, batch_size, momentum)
    return model


@torch.no_grad()
def _calibrate_fake_quant(model: nn.Module, layers: list[FakeQuantLayer], inputs: torch.Tensor,
                          batch_size: int, momentum: float | None) -> None:
    configs = {layer: layer.config for layer in layers}
    observers = {layer: Observer(layer.config.activation) for layer in layers}
    hooks = [layer.register_forward_pre_hook(lambda m, args: observers[m].update(args[0]))
             for layer in layers]
    try:
        for layer in layers:  # weight-only while observing, as a quantize_d model observes
            layer.config = QuantConfig(weight=layer.config.weight, activation=None)
        run_calibration(model, inputs, batch_size)
    finally:
        for hook in hooks:
            hook.remove()
        for layer, config in configs.items():
            layer.config = config
    for layer in layers:
        layer.set_input_range(*observers[layer].range())
        if momentum is not None:
            layer.momentum = float(momentum)


def prepare_qat(model: nn.Module, config: QuantConfig,
                filter_fn: Callable[[nn.Module, str], bool] | None = None) -> nn.Module:
    """Swap, in place, each Linear/Conv for a `FakeQuantLayer` that trains through the rounding."""
    if not isinstance(config, QuantConfig):
        raise ValueError(f"config: must be a QuantConfig; got {config!r}")
    if _swap(model, lambda m: FakeQuantLayer(m, config), filter_fn, SWAPPABLE) == 0:
        raise ValueError("model: has no Linear/Conv1d/Conv2d layer to prepare (after filter_fn)")
    return model


def convert(model: nn.Module) -> nn.Module:
    """After QAT: replace each `FakeQuantLayer` by a `QuantizedLayer` with the trained weights
    and input range, so the model stores integers and computes what it computed in eval mode."""
    def make(fq: FakeQuantLayer) -> QuantizedLayer:
        q = QuantizedLayer(fq.layer, fq.config)
        if q.input_quant is not None:
            q.input_quant.set_range(fq.act_lo, fq.act_hi)
        return q

    if _swap(model, make, None, (FakeQuantLayer,)) == 0:
        raise ValueError("model: has no FakeQuantLayer to convert; call prepare_qat first")
    return model


def payload_bytes(model: nn.Module) -> int:
    """Bytes of the tensors in `model.state_dict()` alone (no file format overhead), by
    `memory.tensor_bytes`. What it counts that a plain `tensor_bytes(state_dict().values())`
    would not: torch.ao's packed params (tuples of tensors inside the state_dict) and the
    float64 scales and int64 zero points of its per-channel quantized tensors, which live
    beside the integers rather than in a tensor of the state_dict."""
    return tensor_bytes(_stored_tensors(model.state_dict().values()))


def _stored_tensors(values: Iterable[object]) -> Iterator[torch.Tensor]:
    """The tensors held by state_dict values, nested packed params and per-channel
    quantization parameters included; non-tensor values (ints, dtypes) hold no payload."""
    for value in values:
        if isinstance(value, torch.Tensor):
            yield value
            if value.is_quantized and value.qscheme() in (torch.per_channel_affine,
                                                          torch.per_channel_symmetric):
                yield value.q_per_channel_scales()
                yield value.q_per_channel_zero_points()
        elif isinstance(value, tuple | list):
            yield from _stored_tensors(value)


def zero_fraction(model: nn.Module) -> float:
    """Share of quantized weights that are exactly zero (the integer equals the zero point)."""
    zeros = total = 0
    for m in model.modules():
        if isinstance(m, QuantizedLayer):
            q = m.qtensor()
            ints = q.int_values()
            zeros += int((ints == q.zero_point.reshape(-1, 1)).sum())
            total += ints.numel()
    if total == 0:
        raise ValueError("model: has no QuantizedLayer; quantize_ it first")
    return zeros / total
