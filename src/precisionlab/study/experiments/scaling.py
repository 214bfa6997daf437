"""Chapter 03's measurements: loss-scale sweeps, gradient underflow, the dynamic scaler.

Two tasks, each seed drawing its own split and weights from `precisionlab.study.tasks`: "mlp" (an
MLP on MNIST-1D) and "transformer" (a TinyTransformer on character windows). `sweep` trains every
configuration (32-true, bf16-mixed, 16-mixed without scaling, at static scales, with the dynamic
scaler, and 16-true: the whole model cast to fp16, which no scaler can serve) from the same weights
and batches; `underflow` pauses a 32-true run at checkpoints and counts the gradient entries
16-mixed flushes at each scale (`amp.underflow`). Both return tidy tables;
`precisionlab.study.reports.scaling` turns them into the chapter's tables, figures and glued
prose."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from precisionlab.amp import Trainer
from precisionlab.amp.underflow import underflow_during_training
from precisionlab.study import tasks
from precisionlab.study.designs import DYNAMIC as DYNAMIC  # `NAME as NAME`: re-exported for callers
from precisionlab.study.designs import NONE as NONE
from precisionlab.study.designs import SCALING_TASK_NAMES, configs, label
from precisionlab.study.store import stored

TASK_OF = {"mlp": "mnist1d", "transformer": "chars"}  # chapter task -> study.tasks name
TASK_NAMES = SCALING_TASK_NAMES  # chapter task -> its name in tables and figures


def load(task: str, seed: int, device: str = "cpu", tf_context: int = 32, **_: object):
    """The split of chapter task `task` ("mlp" or "transformer") for `seed`, on `device`."""
    return tasks.load(TASK_OF[task], seed, context=tf_context).to(device)


def model_for(task: str, split, seed: int, device: str = "cpu",
              mlp_hidden: Sequence[int] = (256, 256), tf_d_model: int = 32, tf_layers: int = 2,
              **_: object):
    """A fresh fp32 model of chapter task `task` for `seed` (the same weights every call)."""
    return tasks.model_for(TASK_OF[task], split, seed, hidden=list(mlp_hidden),
                           d_model=tf_d_model, n_layers=tf_layers).to(device)


@stored
def sweep(task: str, seeds: Sequence[int], log2_scales: Sequence[int], steps: int, batch: int,
          lr: float, init_scale: float = 2.0**16, growth_interval: int = 2000,
          device: str = "cpu", **model: object) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train every configuration of `configs(log2_scales)` per seed (same weights and batches).

    Returns (runs, traces): one row per run (task, config, precision, scaler, log2_scale, seed,
    train_loss on a training sample as large as the test split (n_eval), train_accuracy, test_loss,
    test_accuracy, skipped_steps, steps, final_scale, nonfinite_steps (steps whose training loss
    was inf/NaN), first_nonfinite (the first such step, NaN if none), skipped_share) and the
    dynamic scaler's scale per step (task, seed, step, loss_scale, skipped, loss)."""
    runs, traces = [], []
    for seed in seeds:
        data = load(task, seed, device, **model)  # type: ignore[arg-type]
        n_eval = len(data.x_test)  # train loss on as many training examples as the test split
        train_view = dataclasses.replace(data, x_test=data.x_train[:n_eval],
                                         y_test=data.y_train[:n_eval])
        for precision, scaler in configs(log2_scales):
            net = model_for(task, data, seed, device, **model)  # type: ignore[arg-type]
            trainer = Trainer(precision=precision, loss_scaler=scaler, steps=steps,
                              batch_size=batch, lr=lr, init_scale=init_scale,
                              growth_interval=growth_interval, seed=seed, device=device)
            history = trainer.fit(net, data)
            train_loss, train_acc = trainer.evaluate(net, train_view)
            last = history.iloc[-1]
            bad = ~np.isfinite(history.loss.to_numpy(dtype=float))
            static = not isinstance(scaler, str)
            runs.append({
                "task": task, "config": label(precision, scaler), "precision": precision,
                "scaler": "static" if static else scaler,
                "log2_scale": math.log2(scaler) if static else (
                    0.0 if precision == "16-mixed" else math.nan),
                "seed": seed, "n_eval": n_eval, "train_loss": train_loss,
                "train_accuracy": train_acc,
                "test_loss": last.test_loss, "test_accuracy": last.test_metric,
                "skipped_steps": int(history.skipped.sum()), "steps": len(history),
                "final_scale": trainer.scaler.get_scale(), "nonfinite_steps": int(bad.sum()),
                "first_nonfinite": float(history.step[bad].min()) if bad.any() else math.nan})
            if scaler == "dynamic":
                traces.append(history[["step", "loss_scale", "skipped", "loss"]]
                              .assign(task=task, seed=seed))
    runs = pd.DataFrame(runs)
    runs["skipped_share"] = runs.skipped_steps / runs.steps
    return runs, pd.concat(traces, ignore_index=True)


@stored
def underflow(task: str, seeds: Sequence[int], log2_scales: Sequence[int], steps: int,
              checkpoints: Sequence[float], batch: int, lr: float, device: str = "cpu",
              **model: object) -> pd.DataFrame:
    """Per seed, a 32-true run paused at `checkpoints` (fractions of `steps`): the 16-mixed
    gradient entries flushed or overflowed at scales 2^0 and 2^k (`amp.underflow` columns, with
    task and seed). The 32-true run is the sweep's: same weights, batches and updates."""
    scales = [1.0] + [2.0**k for k in log2_scales]
    at = sorted({round(f * steps) for f in checkpoints})
    tables = []
    for seed in seeds:
        data = load(task, seed, device, **model)  # type: ignore[arg-type]
        net = model_for(task, data, seed, device, **model)  # type: ignore[arg-type]
        t = underflow_during_training(net, data, steps=steps, checkpoints=at, scales=scales,
                                      batch_size=batch, lr=lr, seed=seed)
        tables.append(t.assign(task=task, seed=seed))
    return pd.concat(tables, ignore_index=True)
