"""Chapter 04's measurements: accumulated runs (GA-1), step costs (GA-2), summed gradients (GA-3).

`distances` trains the digits MLP with k accumulated micro-batches, with batches k times
smaller and with rounding-only changes, and measures how far each run ends from the plain run.
`costs` counts the matmul FLOPs and the peak of saved activations of one optimizer step of a
tiny character transformer per k; `timings` times it. `gradient_errors` measures the error of
the accumulated gradient of one full batch against the exact one, per precision, and of exact
parts summed in fp32/fp16/bf16 alone. Every seed draws its own digits split (`tasks`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn

from precisionlab import bench, memory
from precisionlab.amp import Trainer
from precisionlab.study import tasks
from precisionlab.study.store import stored

UP = {"32-true": "64-true", "bf16-mixed": "32-true", "16-mixed": "32-true"}  # one precision up
ACC_NAME = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def _train(model0: nn.Module, precision: str, data, seed: int, steps: int, batch: int,
           optimizer: str, lr: float, device: str, k: int = 1) -> nn.Module:
    """A copy of `model0` trained by the Trainer (`batch` examples in `k` micro-batches)."""
    model = copy.deepcopy(model0)
    Trainer(precision=precision, optimizer=optimizer, lr=lr, steps=steps, batch_size=batch,
            accumulation_steps=k, seed=seed, eval_every=None, progress=False,
            device=device).fit(model, data)
    return model


@stored
def distances(seeds: Sequence[int], precisions: Sequence[str], ks: Sequence[int],
              batch_size: int, hidden: Sequence[int], steps: int, optimizer: str = "sgd",
              lr: float = 0.1, device: str = "cpu") -> pd.DataFrame:
    """GA-1: rows (seed, precision, comparison, k, rel_diff), the relative distance of the final
    weights from the plain (k = 1) run: 'accumulation' and 'smaller batch' (B/k, no
    accumulation) per k > 1, and the yardsticks '1-ulp nudge' and 'next precision up' (k = 1)."""
    rows = []
    for seed in seeds:
        data, model0 = tasks.make("digits", seed, hidden=list(hidden))
        data, model0 = data.to(device), model0.to(device)
        nudged = copy.deepcopy(model0)
        with torch.no_grad():  # every weight one fp32 ulp up
            for p in nudged.parameters():
                p.copy_(torch.nextafter(p, torch.full_like(p, math.inf)))
        args = dict(data=data, seed=seed, steps=steps, optimizer=optimizer, lr=lr, device=device)
        plain = {p: _train(model0, p, batch=batch_size, **args)
                 for p in {*precisions, "32-true", "64-true"}}
        for p in precisions:
            others = [("1-ulp nudge", 1, _train(nudged, p, batch=batch_size, **args)),
                      ("next precision up", 1, plain[UP[p]])]
            for k in sorted(ks)[1:]:
                others += [("accumulation", k, _train(model0, p, batch=batch_size, k=k, **args)),
                           ("smaller batch", k, _train(model0, p, batch=batch_size // k, **args))]
            rows += [{"seed": seed, "precision": p, "comparison": comparison, "k": k,
                      "rel_diff": memory.relative_error(other, plain[p])}
                     for comparison, k, other in others]
    return pd.DataFrame(rows)


def step_setup(seed: int, tf_batch: int, tf_context: int, tf_d_model: int, tf_layers: int,
               device: str = "cpu"):
    """The character data and TinyTransformer whose optimizer step GA-2 costs."""
    data, model = tasks.make("chars", seed, context=tf_context, n_train=max(4 * tf_batch, 256),
                             n_test=64, d_model=tf_d_model, n_layers=tf_layers)
    return data.to(device), model.to(device)


def _trainer(precision: str, k: int, tf_batch: int, optimizer: str, lr: float, seed: int,
             device: str, steps: int = 1) -> Trainer:
    return Trainer(precision=precision, optimizer=optimizer, lr=lr, steps=steps,
                   batch_size=tf_batch, accumulation_steps=k, seed=seed, eval_every=None,
                   progress=False, device=device)


def costs(data, model: nn.Module, precisions: Sequence[str], ks: Sequence[int], tf_batch: int,
          optimizer: str = "sgd", lr: float = 0.1, seed: int = 0,
          device: str = "cpu") -> pd.DataFrame:
    """GA-2: per precision and k, one optimizer step's counted costs: peak saved activation
    bytes, weight/grad/optimizer-state bytes (static_bytes), matmul FLOPs, and on CUDA the
    allocator's peak."""
    return pd.DataFrame([_step_cost(data, model, p, k, tf_batch, optimizer, lr, seed, device)
                         for p in precisions for k in ks])


def _step_cost(data, model: nn.Module, p: str, k: int, tf_batch: int, optimizer: str, lr: float,
               seed: int, device: str) -> dict:
    """One row of `costs`: each measurement trains its own fresh copy for one step."""
    m, tr = copy.deepcopy(model), _trainer(p, k, tf_batch, optimizer, lr, seed, device)
    act = memory.saved_activation_bytes(lambda: tr.fit(m, data), exclude=m.parameters())
    weights = sum(q.numel() * q.element_size() for q in m.parameters())
    state = sum(t.numel() * t.element_size() for st in tr.optimizer_.state.values()
                for t in st.values() if torch.is_tensor(t))
    row = {"precision": p, "k": k, "micro_batch": tf_batch // k, "activation_bytes": act,
           "weight_bytes": weights, "grad_bytes": weights, "optimizer_state_bytes": state,
           "static_bytes": 2 * weights + state}
    m2, tr2 = copy.deepcopy(model), _trainer(p, k, tf_batch, optimizer, lr, seed, device)
    row["matmul_flops"] = memory.matmul_flops(lambda: tr2.fit(m2, data))
    if device == "cuda":
        m3, tr3 = copy.deepcopy(model), _trainer(p, k, tf_batch, optimizer, lr, seed, device)
        row["cuda_peak_bytes"] = memory.peak_cuda_bytes(lambda: tr3.fit(m3, data), device)
    return row


def timings(data, model: nn.Module, precisions: Sequence[str], ks: Sequence[int], tf_batch: int,
            optimizer: str = "sgd", lr: float = 0.1, seed: int = 0, device: str = "cpu",
            time_steps: int = 1, repeats: int = 5) -> pd.DataFrame:
    """GA-2's timing: per precision, the k candidates interleaved (`bench.interleaved`), one
    row per repeat with seconds_per_step and its ratio to the median at k = 1 (time_ratio)."""
    out = []
    for p in precisions:
        cands = {}
        for k in ks:
            m = copy.deepcopy(model)
            tr = _trainer(p, k, tf_batch, optimizer, lr, seed, device, steps=time_steps)
            cands[k] = lambda tr=tr, m=m: tr.fit(m, data)
        t = bench.interleaved(cands, repeats=repeats, warmup=1, device=device)
        t["seconds_per_step"] = t.seconds / time_steps
        out.append(t.assign(precision=p))
    t = pd.concat(out).rename(columns={"candidate": "k"})
    base = t[t.k == min(ks)].groupby("precision").seconds_per_step.median()
    return t.assign(time_ratio=t.seconds_per_step / t.precision.map(base))


@stored
def gradient_errors(seeds: Sequence[int], precisions: Sequence[str], ks: Sequence[int],
                    grad_batch: int, hidden: Sequence[int], device: str = "cpu"
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """GA-3: (errors, parts). errors: (seed, precision, k, rel_error) of the gradient of one
    batch of `grad_batch` digits accumulated over k micro-batches at each precision, against
    the exact one; parts: (seed, accumulator, k, rel_error, flushed_parts) of exact fp64
    micro-batch gradients summed in an fp32/fp16/bf16 buffer."""
    rows, parts = [], []
    for seed in seeds:
        data, model = tasks.make("digits", seed, hidden=list(hidden))
        data, model = data.to(device), model.to(device)
        order = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(seed))
        idx = order[:grad_batch].to(device)
        x, y = data.x_train[idx], data.y_train[idx]
        for p in precisions:
            ref = memory.reference_gradient(model, x, y, p)
            for k in ks:
                g = memory.accumulated_gradient(model, x, y, k, p)
                rows.append({"seed": seed, "precision": p, "k": k,
                             "rel_error": memory.relative_error(g, ref)})
        ref = memory.reference_gradient(model, x, y, "32-true")
        for k, by_dtype in memory.sum_exact_parts(model, x, y, list(ks)).items():
            for dtype, s in by_dtype.items():
                parts.append({"seed": seed, "accumulator": ACC_NAME[dtype], "k": k,
                              "rel_error": memory.relative_error(s.grads, ref),
                              "flushed_parts": s.flushed})
    return pd.DataFrame(rows), pd.DataFrame(parts)
