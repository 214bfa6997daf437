"""What one optimizer step costs, and what accumulating its gradient in parts does to it.

Three measurements of cost, each exact or taken from the device's own counters:

- `saved_activation_bytes`: the peak bytes of the tensors autograd keeps for the backward pass
  (the activations), counted through ``torch.autograd.graph.saved_tensors_hooks``. It needs no
  allocator, so it works on the CPU, where PyTorch keeps no peak-memory statistics.
- `peak_cuda_bytes`: the peak of ``torch.cuda.max_memory_allocated`` during a call, on a GPU.
- `step_memory`: weights, gradients, optimizer state and saved activations of one Trainer
  step, by kind (with the CUDA peak on a GPU).
- `tensor_bytes` / `file_bytes`: the book's byte counters, the elements of tensors and the file
  `torch.save(model.state_dict())` writes (what a model costs on disk, any format or packing).
- `matmul_flops`: the matrix-multiply FLOPs of a call (forward and backward), counted by
  ``torch.utils.flop_counter.FlopCounterMode``; a count, not a timing, so it is deterministic.

And, under its own header below, what accumulation does to the gradient's precision:
`accumulated_gradient` (the gradient the Trainer steps with after k micro-batches, at a given
precision), `reference_gradient` (the exact one), `sum_exact_parts` (the accumulator alone),
and `relative_error` / `flushed_share` to compare them.
"""

from __future__ import annotations

import copy
import io
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from precisionlab.amp.policy import get_policy
from precisionlab.amp.trainer import Trainer, loss_and_accuracy

__all__ = [
    "PartsSum",
    "accumulated_gradient",
    "file_bytes",
    "flushed_share",
    "matmul_flops",
    "peak_cuda_bytes",
    "reference_gradient",
    "relative_error",
    "saved_activation_bytes",
    "step_memory",
    "sum_exact_parts",
    "tensor_bytes",
]


# --------------------------------------------------------------------------------------------
# Cost of a step: saved activations, peak device memory, matmul FLOPs
# --------------------------------------------------------------------------------------------

def _storage_key(t: torch.Tensor) -> tuple[str, int]:
    return (str(t.device), t.untyped_storage().data_ptr())


def _byte_span(t: torch.Tensor) -> tuple[int, int]:
    """[first, last + 1) bytes of its storage that a (possibly strided) view reaches."""
    if t.numel() == 0:
        return (0, 0)
    item = t.element_size()
    reach = 1 + sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride(),
                                                                      strict=True))
    start = t.storage_offset() * item
    return (start, start + reach * item)


def _union_length(spans: Iterable[tuple[int, int]]) -> int:
    """Total length of the union of half-open intervals."""
    total, end = 0, None
    for lo, hi in sorted(spans):
        if end is None or lo >= end:
            total += hi - lo
            end = hi
        elif hi > end:
            total += hi - end
            end = hi
    return total


class _SavedLedger:
    """Live bytes of saved tensors, per storage, counting each byte of a storage once."""

    def __init__(self, excluded: set[tuple[str, int]]) -> None:
        self.excluded = excluded
        self.spans: dict[tuple[str, int], list[tuple[int, int]]] = {}
        self.bytes_of: dict[tuple[str, int], int] = {}
        self.live = 0
        self.peak = 0
        self.lock = threading.Lock()  # CUDA backward may release from the engine's thread

    def add(self, key: tuple[str, int], span: tuple[int, int]) -> None:
        with self.lock:
            self.spans.setdefault(key, []).append(span)
            self._recount(key)
            self.peak = max(self.peak, self.live)

    def remove(self, key: tuple[str, int], span: tuple[int, int]) -> None:
        with self.lock:
            spans = self.spans[key]
            spans.remove(span)
            if not spans:
                del self.spans[key]
            self._recount(key)

    def _recount(self, key: tuple[str, int]) -> None:
        new = _union_length(self.spans.get(key, ()))
        self.live += new - self.bytes_of.get(key, 0)
        if new:
            self.bytes_of[key] = new
        else:
            self.bytes_of.pop(key, None)


class _Saved:
    """What autograd stores instead of a saved tensor while the hooks are on: the tensor itself
    (no copy) plus a note in the ledger, taken back when autograd lets go of it."""

    __slots__ = ("key", "ledger", "span", "tensor")

    def __init__(self, tensor: torch.Tensor, ledger: _SavedLedger) -> None:
        self.tensor, self.ledger = tensor, ledger
        self.key, self.span = _storage_key(tensor), _byte_span(tensor)
        if self.key in ledger.excluded:
            self.ledger = None
        else:
            ledger.add(self.key, self.span)

    def __del__(self) -> None:
        if self.ledger is not None:
            self.ledger.remove(self.key, self.span)


def saved_activation_bytes(fn: Callable[[], object],
                           exclude: Iterable[torch.Tensor] = ()) -> int:
    """Peak bytes held by the tensors autograd saves for backward while `fn()` runs.

    Every tensor saved for a backward pass is noted when it is saved and forgotten when autograd
    frees it (after its node's backward, or when an unused graph is dropped), so the peak is the
    activation memory of `fn` at its worst moment. Bytes are those of the memory each saved
    tensor reaches (a view counts only its own part; a storage saved twice counts once).
    Tensors sharing storage with `exclude` (pass the model's parameters) are not counted: they
    exist whether or not anything is saved. Copies made for the forward pass, such as the bf16
    weights autocast casts, are counted, since they live only because backward needs them.
    """
    excluded = {_storage_key(t) for t in exclude}
    ledger = _SavedLedger(excluded)

    def pack(tensor: torch.Tensor) -> _Saved:
        return _Saved(tensor, ledger)

    def unpack(saved: _Saved) -> torch.Tensor:
        return saved.tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        fn()
    return ledger.peak


def peak_cuda_bytes(fn: Callable[[], object], device: str = "cuda") -> int:
    """Peak CUDA memory allocated during `fn()`, above what was allocated before it started."""
    if not str(device).startswith("cuda"):
        raise ValueError(f"device: peak_cuda_bytes needs a CUDA device; got {device!r}")
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before



def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the tensors' elements (numel x element size), summed."""
    return sum(t.numel() * t.element_size() for t in tensors)


def file_bytes(model: nn.Module) -> int:
    """Bytes of `torch.save(model.state_dict())`: what the model costs on disk, whatever its
    formats (fp32, 16-bit casts, our packed integers, torch.ao's packed int8 weights)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def step_memory(model: nn.Module, data, precision: str = "32-true", batch_size: int = 64,
                accumulation_steps: int = 1, optimizer: str = "adam",
                device: str = "cpu") -> dict[str, int]:
    """The memory one Trainer optimizer step holds, by kind, for a copy of `model`.

    - weight_bytes: the parameters (fp32 for 32-true and *-mixed);
    - grad_bytes: their `.grad` buffers (the parameters' dtype, so the same bytes);
    - optimizer_state_bytes: the optimizer's tensors after the step (Adam: two moments + step);
    - activation_bytes: peak bytes autograd keeps for backward, counted exactly with
      `precisionlab.memory.saved_activation_bytes` (with autocast this includes the fp16/bf16
      weight copies the forward pass saves);
    - total_bytes: their sum, a model of the step's peak: an upper bound for these four kinds
      (gradients grow while activations are freed), leaving out temporaries and workspaces;
    - cuda_peak_bytes (CUDA only): ``torch.cuda.max_memory_allocated`` over one more step that
      starts by moving a fresh copy of the model to the GPU, above what was allocated before
      (the data): everything the step allocates, temporaries and workspaces included.
    """
    def trainer() -> Trainer:
        return Trainer(precision=precision, optimizer=optimizer, steps=1, batch_size=batch_size,
                       accumulation_steps=accumulation_steps, eval_every=None, progress=False,
                       device=device)

    # Cast first, as the Trainer will (a no-op for 32-true and *-mixed): the parameters the count
    # leaves out must be the ones the step trains, 16-bit for *-true, not the fp32 originals.
    m = get_policy(precision).prepare_model(copy.deepcopy(model).to(device))
    tr = trainer()
    act = saved_activation_bytes(lambda: tr.fit(m, data), exclude=m.parameters())
    params = [p for p in m.parameters() if p.requires_grad]
    state = [t for st in tr.optimizer_.state.values() for t in st.values() if torch.is_tensor(t)]
    out = {"weight_bytes": tensor_bytes(m.parameters()), "grad_bytes": tensor_bytes(params),
           "optimizer_state_bytes": tensor_bytes(state), "activation_bytes": act}
    out["total_bytes"] = sum(out.values())
    if str(device).startswith("cuda"):
        m2, tr2, d2 = copy.deepcopy(model).cpu(), trainer(), data.to(device)
        out["cuda_peak_bytes"] = peak_cuda_bytes(lambda: tr2.fit(m2.to(device), d2), device)
    return out


def matmul_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matrix products (mm, addmm, bmm, convolutions, attention) that `fn()` runs,
    forward and backward, as PyTorch's FlopCounterMode counts them (2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


# --------------------------------------------------------------------------------------------
# Gradient accumulation at a precision: the gradient it produces, and its error
# --------------------------------------------------------------------------------------------

def accumulated_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int,
                         precision: str = "32-true") -> list[torch.Tensor]:
    """The gradient the Trainer would step with: `x, y` split into `k` equal micro-batches, each
    loss divided by `k` and (scaled, for 16-mixed) backpropagated into the same `.grad`, then
    unscaled. Returned as float64 copies, one per parameter; `model` itself is left untouched.

    The `.grad` buffers have the parameters' dtype: fp32 for 32-true and the mixed policies,
    fp16 for 16-true, bf16 for bf16-true, so that is the precision the k parts are summed in.
    The loss scaler is the one the Trainer uses by default (dynamic, 2**16 at the start, for
    16-mixed; none otherwise). An overflow shows as inf/NaN in the result.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or len(x) % k:
        raise ValueError(f"k: must be a positive integer dividing the batch ({len(x)}); got {k!r}")
    if len(x) != len(y):
        raise ValueError(f"y: must have one target per example of x ({len(x)}); got {len(y)}")
    trainer = Trainer(precision=precision, accumulation_steps=k, batch_size=len(x),
                      optimizer="sgd", progress=False)  # its configuration, not its loop
    policy = get_policy(precision)
    model = policy.prepare_model(copy.deepcopy(model))
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = None
    scaler = trainer.make_scaler()
    device_type = x.device.type
    micro = len(x) // k
    for i in range(k):
        xb, yb = x[i * micro:(i + 1) * micro], y[i * micro:(i + 1) * micro]
        with policy.autocast(device_type):
            loss, _ = loss_and_accuracy(model(policy.prepare_input(xb)), yb)
            loss = loss / k
        scaler.scale(loss).backward()
    scaler.unscale_(torch.optim.SGD(params, lr=1.0))
    return [p.grad.detach().double().clone() if p.grad is not None
            else torch.zeros_like(p, dtype=torch.float64) for p in params]


def reference_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                       precision: str = "32-true") -> list[torch.Tensor]:
    """The exact (float64, one batch) gradient of the weights and inputs `precision` stores.

    For 32-true and the mixed policies that is the fp32 model and data; for 16-true and
    bf16-true the weights and inputs rounded to fp16/bf16. Setting a precision's gradient
    against this leaves out the rounding of storage and measures only its arithmetic.
    """
    policy = get_policy(precision)
    held = policy.prepare_model(copy.deepcopy(model))
    return accumulated_gradient(held, policy.prepare_input(x).to(
        torch.float64 if x.is_floating_point() else x.dtype), y, 1, "64-true")


@dataclass(frozen=True)
class PartsSum:
    """k exact micro-batch gradients summed in one accumulator dtype."""

    grads: list[torch.Tensor]  # the sums, as float64, one per parameter
    flushed: float  # share of the parts' nonzero entries that rounded to zero on the way in


ACCUMULATOR_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def sum_exact_parts(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ks: Sequence[int],
                    dtypes: Sequence[torch.dtype] = ACCUMULATOR_DTYPES,
                    ) -> dict[int, dict[torch.dtype, PartsSum]]:
    """The accumulator alone: for each k in `ks`, the k micro-batch gradients (each of loss / k)
    computed exactly in float64, rounded to each dtype and added one by one into a `.grad`-like
    buffer of that dtype.

    What a low-precision `.grad` does to the sum, with no rounding in the forward or backward
    pass: every addition rounds once to the accumulator's precision, and a part smaller than
    the dtype's smallest subnormal is lost entirely (counted in `flushed`). One backward pass per
    micro-batch of the largest k serves every k: a coarser part is the float64 sum of
    consecutive finest parts (exact to float64's roundoff).
    """
    ks = sorted(set(ks))
    finest = ks[-1] if ks else 0
    bad = [k for k in ks if isinstance(k, bool) or not isinstance(k, int) or k < 1
           or finest % k]
    if not ks or bad or len(x) % finest:
        raise ValueError(f"ks: must be positive integers, each dividing the largest, which must "
                         f"divide the batch ({len(x)}); got {ks!r}")
    model = copy.deepcopy(model).double()
    params = [p for p in model.parameters() if p.requires_grad]
    sums = {k: {d: [torch.zeros_like(p, dtype=d) for p in params] for d in dtypes} for k in ks}
    lost = {k: dict.fromkeys(dtypes, 0) for k in ks}
    nonzero = dict.fromkeys(ks, 0)
    group = {k: [torch.zeros_like(p) for p in params] for k in ks}  # the part being gathered
    micro = len(x) // finest
    inputs = x.double() if x.is_floating_point() else x
    for i in range(finest):
        loss, _ = loss_and_accuracy(model(inputs[i * micro:(i + 1) * micro]),
                                    y[i * micro:(i + 1) * micro])
        finest_part = torch.autograd.grad(loss / finest, params)
        for k in ks:
            for buf, g in zip(group[k], finest_part, strict=True):
                buf.add_(g)
            if (i + 1) % (finest // k):
                continue  # this k's micro-batch is not complete yet
            nonzero[k] += sum(int((g != 0).sum()) for g in group[k])
            for d in dtypes:
                for acc, g in zip(sums[k][d], group[k], strict=True):
                    rounded = g.to(d)
                    lost[k][d] += int(((rounded == 0) & (g != 0)).sum())
                    acc.add_(rounded)  # computed and rounded in the accumulator's dtype
            for buf in group[k]:
                buf.zero_()
    return {k: {d: PartsSum([t.double() for t in sums[k][d]],
                            lost[k][d] / nonzero[k] if nonzero[k] else 0.0) for d in dtypes}
            for k in ks}


def _flat(tensors: Sequence[torch.Tensor] | nn.Module) -> torch.Tensor:
    if isinstance(tensors, nn.Module):
        tensors = [p.detach() for p in tensors.parameters()]
    return torch.cat([t.detach().double().flatten().cpu() for t in tensors])


def relative_error(values: Sequence[torch.Tensor] | nn.Module,
                   reference: Sequence[torch.Tensor] | nn.Module) -> float:
    """||values - reference|| / ||reference|| over all tensors (or parameters) together, in fp64.

    Works for gradients (lists of tensors) and for models (their parameters, in order)."""
    a, b = _flat(values), _flat(reference)
    if a.shape != b.shape:
        raise ValueError(f"values: {a.numel()} numbers against {b.numel()} in the reference")
    norm = torch.linalg.vector_norm(b)
    if norm == 0:
        raise ValueError("reference: is all zeros, a relative error is undefined")
    return float(torch.linalg.vector_norm(a - b) / norm)


def flushed_share(values: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]) -> float:
    """Share of the reference's nonzero entries that are exactly zero in `values`."""
    a, b = _flat(values), _flat(reference)
    nonzero = b != 0
    return float((a[nonzero] == 0).double().mean()) if bool(nonzero.any()) else 0.0
