"""Chapter 7's measurements: the bytes and accuracy of one trained model stored in each format,
and the inference latency of fp32, bf16 and int8 MLPs of growing width.

    stored = size.stored_formats([0, 1, 2], hidden=[256, 256], steps=1500)
    counts = size.count_formats(hidden=[256, 256])
    latency, sizes = size.latency_grid([512, 4096], depth=3, batches=[1, 64])
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn

from precisionlab import bench
from precisionlab.amp import Trainer, get_policy
from precisionlab.amp.trainer import evaluate
from precisionlab.memory import file_bytes, tensor_bytes
from precisionlab.models import MLP
from precisionlab.quant import QuantConfig, QuantSpec, payload_bytes, quantize_, to_int8_backend
from precisionlab.quant.modules import QuantizedLayer
from precisionlab.study import stats, store, tasks
from precisionlab.study.designs import SIM_INT8, TORCHAO_EAGER

IN_FEATURES, N_CLASSES = 784, 10  # the timed MLPs: an MNIST-sized input, 10 classes


def int8_backend_name() -> str:
    """The int8 kernels `quant.to_int8_backend` picks here ('torch.ao' or 'torchao')."""
    from precisionlab.quant.backends import torch_ao_available

    return "torch.ao" if torch_ao_available() else "torchao"


def stored_variants(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """A trained fp32 model stored six ways, as (format, model, the precision it runs at)."""
    model = model.cpu().eval()

    def per_channel(bits: int) -> nn.Module:
        spec = QuantSpec(bits=bits, granularity="per_channel")
        return quantize_(copy.deepcopy(model), QuantConfig(weight=spec))

    return [("fp32", model, "32-true"),
            ("bf16", copy.deepcopy(model).to(torch.bfloat16), "bf16-true"),
            ("fp16", copy.deepcopy(model).to(torch.float16), "16-true"),
            ("int8", per_channel(8), "32-true"), ("int4", per_channel(4), "32-true"),
            (f"int8 ({int8_backend_name()} kernels)", to_int8_backend(model), "32-true")]


@store.stored  # as store.stored: `stored` names a local variable below
def stored_formats(seeds: Sequence[int], task: str = "mnist1d", hidden: Sequence[int] = (256, 256),
                   steps: int = 1500, samples: int = 4000, device: str = "cpu") -> pd.DataFrame:
    """Per seed (its own split and weights, `tasks.make`): train in fp32 with Adam, store each
    way of `stored_variants`; one row per (seed, format): file_bytes, tensor_bytes, accuracy."""
    rows = []
    for seed in seeds:
        split, model = tasks.make(task, seed, samples=samples, hidden=list(hidden))
        Trainer(precision="32-true", optimizer="adam", lr=1e-3, steps=steps, batch_size=128,
                eval_every=None, device=device, seed=seed, progress=False).fit(model, split)
        cpu_split = split.to("cpu")
        for name, stored, precision in stored_variants(model):
            _, accuracy = evaluate(stored, cpu_split, get_policy(precision))
            rows.append({"seed": seed, "format": name, "file_bytes": file_bytes(stored),
                         "tensor_bytes": payload_bytes(stored), "accuracy": accuracy})
    return pd.DataFrame(rows)


def stored_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Every tensor of `model.state_dict()`, with torch.ao's packed Linear params (a tuple of the
    int8 weight and the fp32 bias) unpacked into their two tensors; non-tensor entries dropped."""
    out = []
    for value in model.state_dict().values():
        items = value if isinstance(value, tuple | list) else (value,)
        out += [t for t in items if torch.is_tensor(t)]
    return out


def model_values(model: nn.Module) -> int:
    """How many weights and biases the model computes with, whatever their storage: a
    QuantizedLayer's logical weight shape (not its packed bytes), torch.ao's unpacked weight and
    bias (`_packed_params._weight_bias()`), and every other module's own parameters."""
    total = 0
    for module in model.modules():
        if isinstance(module, QuantizedLayer):
            total += math.prod(module.weight_shape) + (
                0 if module.bias is None else module.bias.numel())
        elif isinstance(getattr(module, "_packed_params", None), nn.Module):  # torch.ao Linear
            total += sum(t.numel() for t in module._packed_params._weight_bias() if t is not None)
        elif not hasattr(module, "_weight_bias"):  # (its packed params: counted just above)
            total += sum(p.numel() for p in module.parameters(recurse=False))
    return total


def parameter_counts(variants: list[tuple[str, nn.Module, str]]) -> pd.DataFrame:
    """Q-5: per stored format (`stored_variants`), the weights and biases the model computes with
    (`model_values`), what `model.parameters()` reports, the elements and dtypes of the stored
    tensors (`stored_tensors`: packed int4 holds two values per element, per-channel scales add
    some) and their bytes (`memory.tensor_bytes`). Counts depend on shapes only: exact anywhere."""
    rows = []
    for name, model, _ in variants:
        stored = stored_tensors(model)
        rows.append({"format": name, "parameters": model_values(model),
                     "parameters_api": sum(p.numel() for p in model.parameters()),
                     "stored_elements": sum(t.numel() for t in stored),
                     "stored_bytes": tensor_bytes(stored),
                     "stored_dtypes": ", ".join(sorted({str(t.dtype).removeprefix("torch.")
                                                 for t in stored}))})
    return pd.DataFrame(rows)


def count_formats(hidden: Sequence[int], seed: int = 0, n_in: int = 40,
                  n_classes: int = 10) -> pd.DataFrame:
    """`parameter_counts` of the chapter's MNIST-1D MLP (`n_in`-hidden-`n_classes`) stored each
    way of `stored_variants`. Its weights are random: the counts depend on shapes only."""
    torch.manual_seed(seed)
    return parameter_counts(stored_variants(MLP([n_in, *hidden, n_classes]).eval()))


def accuracy_changes(stored: pd.DataFrame) -> pd.DataFrame:
    """Per format: bytes over fp32's, and the accuracy change from fp32 in percentage points,
    paired by seed (`stats.paired`), with its 95 % interval."""
    size = stored.groupby("format", sort=False).file_bytes.first()
    rows = []
    for name in size.index:
        iv = (stats.paired(stored, "accuracy", "format", name, "fp32") if name != "fp32"
              else stats.Interval(0.0, 0.0, 0.0, stored.seed.nunique()))
        rows.append({"format": name, "file_bytes": int(size[name]),
                     "bytes_vs_fp32": size[name] / size["fp32"], "change_pp": 100 * iv.mean,
                     "change_low_pp": 100 * iv.low, "change_high_pp": 100 * iv.high,
                     "n": iv.n, "beyond_noise": iv.beyond_noise})
    return pd.DataFrame(rows)


def timed_mlp(width: int, depth: int, seed: int = 0) -> nn.Module:
    """A random 784-width-...-10 MLP with `depth` hidden layers (speed ignores weight values)."""
    torch.manual_seed(seed)
    return MLP([IN_FEATURES] + [width] * depth + [N_CLASSES]).eval()


def candidates(width: int, depth: int, device: str = "cpu",
               compare_torchao: bool = True) -> dict[str, tuple[nn.Module, torch.dtype]]:
    """Name -> (model, input dtype) for every format timed at this width. int8 kernels are CPU
    kernels: on CUDA only fp32 and bf16 are timed."""
    fp32 = timed_mlp(width, depth)
    out = {"fp32": (fp32.to(device), torch.float32),
           "bf16": (copy.deepcopy(fp32).to(device=device, dtype=torch.bfloat16), torch.bfloat16)}
    if device == "cpu":
        backend = int8_backend_name()
        out[f"int8 {backend}"] = (to_int8_backend(fp32), torch.float32)
        out[SIM_INT8] = (quantize_(copy.deepcopy(fp32), QuantConfig()), torch.float32)
        if compare_torchao and backend != "torchao":
            out[TORCHAO_EAGER] = (to_int8_backend(fp32, backend="torchao"), torch.float32)
    return out


@store.stored
def latency_grid(widths: Sequence[int], depth: int, batches: Sequence[int], repeats: int = 7,
                 warmup: int = 3, device: str = "cpu",
                 compare_torchao: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Time every candidate at each width and batch (interleaved, warmed up, medians) in
    `torch.inference_mode`. Returns (latency: width, batch, candidate, median_ms,
    iqr_over_median, speedup_vs_fp32; sizes: width, format, file_bytes, bytes_vs_fp32)."""
    lat_rows, size_rows = [], []
    for width in widths:
        cands = candidates(width, depth, device, compare_torchao)
        base = file_bytes(cands["fp32"][0])
        for name, (m, _) in cands.items():
            if name != TORCHAO_EAGER:
                label = "int8 (ours)" if name == SIM_INT8 else name
                size_rows.append({"width": width, "format": label, "file_bytes": file_bytes(m),
                                  "bytes_vs_fp32": file_bytes(m) / base})
        for batch in batches:
            gen = torch.Generator().manual_seed(batch)
            x = torch.randn(batch, IN_FEATURES, generator=gen).to(device)
            inputs = {name: x.to(dt) for name, (_, dt) in cands.items()}
            with torch.inference_mode():
                calls = {name: (lambda m=m, xi=inputs[name]: m(xi))
                         for name, (m, _) in cands.items()}
                times = bench.interleaved(calls, repeats=repeats, warmup=warmup, device=device)
            r = bench.ratios(times, "fp32")
            for name in cands:
                lat_rows.append({"width": width, "batch": batch, "candidate": name,
                                 "median_ms": 1e3 * r.median_s[name],
                                 "iqr_over_median": r.iqr_over_median[name],
                                 "speedup_vs_fp32": 1 / r.ratio_to_fp32[name]})
    return pd.DataFrame(lat_rows), pd.DataFrame(size_rows)


def check_parameters(seeds: Sequence[int], threads: int, hidden: Sequence[int], train_steps: int,
                     mnist1d_samples: int, widths: Sequence[int], depth: int,
                     batches: Sequence[int], repeats: int, warmup: int,
                     compare_torchao: bool) -> tuple[list[int], list[int]]:
    """Chapter 7's parameters, checked before any compute (one clear error naming the
    parameter); returns the widths and batches sorted."""
    from precisionlab import validate as v

    v.integers("seeds", seeds, 0, 2**32 - 1)
    if len(seeds) < 3:
        raise v.ParameterError(f"seeds: accuracy claims need at least 3 seeds; got {seeds!r}")
    v.integer("threads", threads, 1, 256)
    v.integers("hidden", hidden, 1, 8192, distinct=False)
    v.integer("train_steps", train_steps, 1, 1_000_000)
    v.integer("mnist1d_samples", mnist1d_samples, 100, 1_000_000)
    v.integers("widths", widths, 8, 16384)
    v.integer("depth", depth, 1, 64)
    v.integers("batches", batches, 1, 65536)
    v.integer("repeats", repeats, 5, 1000)  # bench.interleaved needs >= 5 for a median
    v.integer("warmup", warmup, 1, 1000)
    v.one_of("compare_torchao", compare_torchao, [True, False])
    return sorted(widths), sorted(batches)
