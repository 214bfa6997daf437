"""Uniform affine quantization of tensors: q = clamp(round(x / scale) + zero_point, qmin, qmax).

A `QuantSpec` says how (bits, symmetric or not, per tensor / channel / group, which observer);
`quantize_with_range` turns a float tensor and its clipping range into integers plus their
scales (`quant.modules.quantize_tensor` asks an observer for the range first), `dequantize`
turns them back. The arithmetic follows torch's reference kernels
(`torch.fake_quantize_per_*_affine`, `torch.ao` observers) so the two agree bit for bit where
they overlap; tests hold them to it. This module imports no observer: observers give ranges,
affine turns ranges into integers, the API on top (`quant.modules`) orchestrates both.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields

import torch

from precisionlab.formats import IntFormat
from precisionlab.memory import tensor_bytes

GRANULARITIES = ("per_tensor", "per_channel", "per_group")
OBSERVERS = ("minmax", "percentile", "mse", "entropy")
EPS = torch.finfo(torch.float32).eps  # smallest scale, as torch.ao's observers use


@dataclass(frozen=True)
class QuantSpec:
    """How to quantize one tensor: bits, scheme, granularity and the observer that sets the range.

    Symmetric uses the narrow signed range [-(2^(b-1) - 1), 2^(b-1) - 1] with zero point 0 (as
    TensorRT does); asymmetric uses [0, 2^b - 1] with a zero point. `axis` is the channel axis for
    per-channel; `group_size` groups consecutive values along the input (flattened trailing) dims.
    """

    bits: int = 8
    symmetric: bool = True
    granularity: str = "per_tensor"
    axis: int = 0
    group_size: int | None = None
    observer: str = "minmax"
    percentile: float = 99.99

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 2 <= self.bits <= 8:
            raise ValueError(f"bits: must be an integer from 2 to 8 for integer quantization "
                             f"(use a float format for 16 bits); got {self.bits!r}")
        if not isinstance(self.symmetric, bool):
            raise ValueError(f"symmetric: must be True or False; got {self.symmetric!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity: must be one of {', '.join(GRANULARITIES)}; "
                             f"got {self.granularity!r}")
        if self.observer not in OBSERVERS:
            raise ValueError(f"observer: must be one of {', '.join(OBSERVERS)}; "
                             f"got {self.observer!r}")
        p = self.percentile
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 < p <= 100:
            raise ValueError(f"percentile: must be a number in (0, 100]; got {p!r}")
        if self.granularity == "per_group":
            g = self.group_size
            if isinstance(g, bool) or not isinstance(g, int) or g < 1:
                raise ValueError(f"group_size: per_group needs a positive integer group size; "
                                 f"got {g!r}")
        elif self.group_size is not None:
            raise ValueError(f"group_size: only used with granularity='per_group'; "
                             f"got group_size={self.group_size!r} with {self.granularity!r}")
        if self.observer == "entropy" and self.granularity != "per_tensor":
            raise ValueError("observer: 'entropy' calibrates one histogram, so it needs "
                             f"granularity='per_tensor'; got {self.granularity!r}")

    @property
    def grid(self) -> IntFormat:
        """The integer format that stores the values (`formats.IntFormat`): signed b-bit for a
        symmetric grid (used in its narrow range, without the most negative value), unsigned
        b-bit for an asymmetric one."""
        if self.symmetric:
            return IntFormat(f"int{self.bits}", self.bits, signed=True)
        return IntFormat(f"uint{self.bits}", self.bits, signed=False)

    @property
    def qmin(self) -> int:
        grid = self.grid
        return -grid.max_value if self.symmetric else grid.min_value

    @property
    def qmax(self) -> int:
        return self.grid.max_value

    def describe(self) -> str:
        """A short label, e.g. 'int4 sym per_group(32) minmax'; `QuantSpec.parse` reads it back
        (an axis other than 0 shows as 'per_channel(axis=1)'; the percentile shows only for the
        percentile observer, the one that uses it)."""
        gran = self.granularity
        if gran == "per_group":
            gran = f"per_group({self.group_size})"
        elif gran == "per_channel" and self.axis != 0:
            gran = f"per_channel(axis={self.axis})"
        obs = f"p{self.percentile:g}" if self.observer == "percentile" else self.observer
        return f"int{self.bits} {'sym' if self.symmetric else 'asym'} {gran} {obs}"

    @classmethod
    def parse(cls, text: str) -> QuantSpec:
        """The spec a `describe()` label names, e.g. 'int8 asym per_tensor p99.9': so a spec
        can travel as a Papermill parameter or a table cell."""
        m = _SPEC_RE.fullmatch(text.strip()) if isinstance(text, str) else None
        if m is None:
            raise ValueError(f"text: expected 'int<bits> sym|asym <granularity> <observer>' as "
                             f"QuantSpec.describe() writes it (e.g. 'int4 sym per_group(32) "
                             f"minmax'); got {text!r}")
        obs = m["obs"]
        kwargs: dict[str, object] = {"bits": int(m["bits"]), "symmetric": m["sym"] == "sym",
                                     "granularity": m["gran"]}
        if m["group"]:
            kwargs["group_size"] = int(m["group"])
        if m["axis"]:
            kwargs["axis"] = int(m["axis"])
        if obs.startswith("p"):
            kwargs |= {"observer": "percentile", "percentile": float(obs[1:])}
        else:
            kwargs["observer"] = obs
        return cls(**kwargs)

    def to_dict(self) -> dict[str, object]:
        """The fields as a flat dict of primitives (for YAML, JSON, Papermill)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, object]) -> QuantSpec:
        """Inverse of `to_dict`; missing keys take their defaults, unknown keys are an error."""
        if not isinstance(values, dict):
            raise ValueError(f"values: must be a dict of QuantSpec fields; got {values!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"values: unknown QuantSpec field(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
        return cls(**values)


_SPEC_RE = re.compile(
    r"int(?P<bits>\d+) (?P<sym>sym|asym) "
    r"(?P<gran>per_tensor|per_channel|per_group)(?:\((?:axis=(?P<axis>-?\d+)|(?P<group>\d+))\))? "
    r"(?P<obs>minmax|mse|entropy|p[0-9.]+)")


def check_shape(x_shape: torch.Size | tuple[int, ...], spec: QuantSpec, name: str = "x") -> None:
    """Raise a clear error if `spec`'s granularity cannot apply to a tensor of this shape."""
    if spec.granularity == "per_channel":
        if not -len(x_shape) <= spec.axis < len(x_shape):
            raise ValueError(f"axis: {spec.axis} is out of range for {name} of shape "
                             f"{tuple(x_shape)}")
    if spec.granularity == "per_group":
        if len(x_shape) < 2:
            raise ValueError(f"group_size: per_group needs a tensor of at least 2 dims; "
                             f"{name} has shape {tuple(x_shape)}")
        n = math.prod(x_shape[1:])
        if n % spec.group_size:
            raise ValueError(f"group_size: {spec.group_size} does not divide the input "
                             f"dimension {n} of {name} (shape {tuple(x_shape)})")


def rows(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """`x` as a 2-D view with one row per scale: 1 row, one per channel, or one per group."""
    check_shape(x.shape, spec)
    if spec.granularity == "per_tensor":
        return x.reshape(1, -1)
    if spec.granularity == "per_channel":
        return x.movedim(spec.axis, 0).reshape(x.shape[spec.axis], -1)
    return x.reshape(-1, spec.group_size)


def unrows(r: torch.Tensor, shape: torch.Size, spec: QuantSpec) -> torch.Tensor:
    """Inverse of `rows`: back to the tensor's own shape."""
    if spec.granularity == "per_channel":
        moved = (shape[spec.axis],) + tuple(s for i, s in enumerate(shape)
                                            if i != spec.axis % len(shape))
        return r.reshape(moved).movedim(0, spec.axis)
    return r.reshape(shape)


def qparams(lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (float32) and zero point (int32) for the range [lo, hi], torch.ao's formula.

    The range is widened to contain 0 so that 0 is exactly representable (zero padding, ReLU).
    """
    lo = torch.clamp(lo.float(), max=0.0)
    hi = torch.clamp(hi.float(), min=0.0)
    qmin, qmax = spec.qmin, spec.qmax
    if spec.symmetric:
        amax = torch.maximum(-lo, hi)
        scale = amax / (float(qmax - qmin) / 2)
        scale = torch.clamp(scale, min=EPS)
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
    else:
        scale = (hi - lo) / float(qmax - qmin)
        scale = torch.clamp(scale, min=EPS)
        zero_point = qmin - torch.round(lo / scale).to(torch.int32)
        zero_point = torch.clamp(zero_point, qmin, qmax)
    return scale, zero_point


def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int,
             qmax: int) -> torch.Tensor:
    """Integers clamp(round_half_even(x * (1 / scale)) + zero_point, qmin, qmax), as int32.

    Multiplying by the float32 reciprocal (not dividing) is what torch's CPU kernels do.
    """
    inv_scale = 1.0 / scale.float()
    q = torch.round(x.float() * inv_scale) + zero_point
    return torch.clamp(q, qmin, qmax).to(torch.int32)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """Floats (q - zero_point) * scale."""
    return (q - zero_point).float() * scale.float()


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int,
                  qmax: int) -> torch.Tensor:
    """Quantize then dequantize (no gradient; see `ste_fake_quantize` for training)."""
    return dequantize(quantize(x, scale, zero_point, qmin, qmax), scale, zero_point).to(x.dtype)


class _FakeQuantSTE(torch.autograd.Function):
    """Straight-through estimator: gradient 1 where the value was inside the range, else 0."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax):  # type: ignore[override]
        q = torch.round(x.float() * (1.0 / scale.float())) + zero_point
        ctx.save_for_backward((q >= qmin) & (q <= qmax))
        return ((torch.clamp(q, qmin, qmax) - zero_point) * scale).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


def ste_fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int,
                      qmax: int) -> torch.Tensor:
    """Fake quantization that trains: forward rounds, backward passes the gradient straight
    through inside the range and zeroes it where the value was clipped (as torch's does)."""
    return _FakeQuantSTE.apply(x, scale, zero_point, qmin, qmax)


@dataclass
class QTensor:
    """Integers and their scales: what a quantized weight really stores.

    `data` holds the integers as int8/uint8, or packed two per byte (`packed=True`) for 4 bits
    and below, so that `nbytes` is the real storage.
    """

    data: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    shape: torch.Size
    spec: QuantSpec
    packed: bool

    def stored(self) -> list[torch.Tensor]:
        """The tensors really kept: the integers, their float32 scales and, if asymmetric,
        their int32 zero points (a symmetric spec's zero points are all 0 and not stored)."""
        return [self.data, self.scale] + ([] if self.spec.symmetric else [self.zero_point])

    @property
    def nbytes(self) -> int:
        """Bytes of `stored()`, by `memory.tensor_bytes`."""
        return tensor_bytes(self.stored())

    def int_values(self) -> torch.Tensor:
        """The integers as int32, in `rows` layout (one row per scale)."""
        n_rows = self.scale.numel()
        if self.packed:
            flat = unpack_int4(self.data, math.prod(self.shape)).to(torch.int32) + self.spec.qmin
        else:
            flat = self.data.to(torch.int32)
        return flat.reshape(n_rows, -1)

    def dequantize(self) -> torch.Tensor:
        """Back to float32 in the original shape."""
        r = dequantize(self.int_values(), self.scale.reshape(-1, 1),
                       self.zero_point.reshape(-1, 1))
        return unrows(r, self.shape, self.spec)


def quantize_with_range(x: torch.Tensor, spec: QuantSpec, lo: torch.Tensor,
                        hi: torch.Tensor) -> QTensor:
    """Quantize `x` by `spec` over the clipping range [lo, hi] (one value per `rows` row)."""
    r = rows(x.detach(), spec)
    scale, zero_point = qparams(lo.reshape(-1), hi.reshape(-1), spec)
    q = quantize(r, scale.reshape(-1, 1), zero_point.reshape(-1, 1), spec.qmin, spec.qmax)
    if spec.bits <= 4:
        data, packed = pack_int4((q - spec.qmin).reshape(-1).to(torch.uint8)), True
    else:
        data = q.reshape(-1).to(torch.int8 if spec.symmetric else torch.uint8)
        packed = False
    return QTensor(data, scale, zero_point, x.shape, spec, packed)


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """Pack unsigned 4-bit values (0..15) two per byte: low nibble first; odd length padded."""
    flat = values.reshape(-1).to(torch.uint8)
    if flat.numel() and int(flat.max()) > 15:
        raise ValueError("values: pack_int4 takes integers from 0 to 15")
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    pairs = flat.reshape(-1, 2)
    return pairs[:, 0] | (pairs[:, 1] << 4)


def unpack_int4(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """Inverse of `pack_int4`: the first `numel` 4-bit values as uint8."""
    low = packed & 0x0F
    high = packed >> 4
    return torch.stack([low, high], dim=1).reshape(-1)[:numel]
