"""Chapter 12's measurements: a small causal language model trained here in every precision.

A nanoGPT-style character model (`models.TinyTransformer`) on windows of Python standard-library
source (`data.char_sequences`, hashed by `data.char_corpus`), trained by the book's one loop
(`amp.Trainer`) at 32-true, bf16-mixed, 16-mixed (with the Trainer's dynamic loss scaler, the
GradScaler algorithm), bf16-true and 16-true. Runs that share a seed share their data split,
initial weights and batch order, so each precision is compared with the 32-true run of its seed.
`train` returns the final validation loss per run and the validation curve; `step_times` times
one optimizer step per precision, interleaved in one run (`bench.interleaved`), per seed.
`precisionlab.study.rules.language_models.llm5` judges the two tables.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from precisionlab import bench
from precisionlab.amp import Trainer, get_matmul16, set_matmul16
from precisionlab.data import Split, char_corpus
from precisionlab.study import tasks
from precisionlab.study.designs import LM_BASELINE as BASELINE
from precisionlab.study.designs import LM_PRECISIONS as PRECISIONS
from precisionlab.study.store import stored


def load(seed: int, context: int = 64, n_train: int = 2048, n_val: int = 256,
         device: str = "cpu") -> Split:
    """Seed `seed`'s character windows: training windows from the first 90 % of the corpus,
    validation windows (the split's test part) from the last 10 %."""
    return tasks.load("chars", seed, context=context, n_train=n_train, n_test=n_val).to(device)


def model_for(split: Split, seed: int, d_model: int = 64, n_layers: int = 2,
              device: str = "cpu") -> torch.nn.Module:
    """A fresh fp32 TinyTransformer for `split`, its weights drawn from `seed`."""
    return tasks.model_for("chars", split, seed, d_model=d_model, n_layers=n_layers).to(device)


def corpus_facts(split: Split) -> dict[str, object]:
    """What the text is: its sha256, the modules it comes from, its length and vocabulary."""
    corpus = char_corpus()
    return {"sha256": corpus.sha256, "modules": ", ".join(corpus.modules),
            "characters": len(corpus.text), "vocabulary": len(corpus.vocab),
            "train_windows": len(split.x_train), "val_windows": len(split.x_test),
            "context": int(split.x_train.shape[1])}


@stored
def train(seeds: Sequence[int], precisions: Sequence[str] = PRECISIONS, steps: int = 200,
          batch: int = 32, lr: float = 3e-3, context: int = 64, d_model: int = 64,
          n_layers: int = 2, eval_every: int = 50, n_train: int = 2048, n_val: int = 256,
          device: str = "cpu") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train one model per (seed, precision) from the seed's weights and batches.

    Returns (runs, curves). runs: seed, precision, val_loss (final, at the training precision),
    val_perplexity, train_loss (last step), skipped_steps, nonfinite_steps, diverged (the final
    validation loss is not finite), final_scale, seconds. curves: seed, precision, step,
    val_loss every `eval_every` steps (and at the last)."""
    runs, curves = [], []
    for seed in seeds:
        data = load(seed, context, n_train, n_val, device)
        m0 = model_for(data, seed, d_model, n_layers, device)
        for precision in precisions:
            trainer = Trainer(precision=precision, steps=steps, batch_size=batch, lr=lr,
                              eval_every=eval_every, seed=seed, device=device, progress=False)
            history = trainer.fit(copy.deepcopy(m0), data)
            last = history.iloc[-1]
            loss = history.loss.to_numpy(dtype=float)
            val = float(last.test_loss)
            runs.append({"seed": seed, "precision": precision, "val_loss": val,
                         "val_perplexity": math.exp(val) if math.isfinite(val) else math.nan,
                         "train_loss": float(last.loss),
                         "skipped_steps": int(history.skipped.sum()),
                         "nonfinite_steps": int((~np.isfinite(loss)).sum()),
                         "diverged": not math.isfinite(val),
                         "final_scale": trainer.scaler.get_scale(),
                         "seconds": float(last.seconds)})
            at = (history.step % eval_every == 0) | (history.step == steps)  # NaN losses kept
            evals = history[at]
            curves.append(pd.DataFrame({"seed": seed, "precision": precision,
                                        "step": evals.step.to_numpy(),
                                        "val_loss": evals.test_loss.to_numpy(dtype=float)}))
    return pd.DataFrame(runs), pd.concat(curves, ignore_index=True)


@stored
def step_times(seeds: Sequence[int], precisions: Sequence[str] = PRECISIONS,
               time_steps: int = 2, batch: int = 32, lr: float = 3e-3, context: int = 64,
               d_model: int = 64, n_layers: int = 2, repeats: int = 5, warmup: int = 1,
               device: str = "cpu") -> pd.DataFrame:
    """Seconds per optimizer step of each precision, interleaved in one run per seed (the
    seed's model and batches), with torch's own kernels: 16-bit matmuls run natively here even
    where training emulated them, since the time is what this hardware does. Returns seed,
    precision, repeat, seconds, seconds_per_step, ratio (this precision's median step time over
    32-true's in the same run)."""
    if BASELINE not in precisions:
        raise ValueError(f"precisions: must include {BASELINE!r} (the baseline of the ratios)")
    mode = get_matmul16()
    set_matmul16("native")
    tables = []
    try:
        for seed in seeds:
            data = load(seed, context, max(batch, 64), 8, device)
            m0 = model_for(data, seed, d_model, n_layers, device)

            def call(precision: str, model: torch.nn.Module, seed: int = seed,
                     data: Split = data):
                trainer = Trainer(precision=precision, steps=time_steps, batch_size=batch,
                                  lr=lr, eval_every=None, seed=seed, device=device,
                                  progress=False)
                return lambda: trainer.fit(model, data)

            cands = {p: call(p, copy.deepcopy(m0)) for p in precisions}
            t = bench.interleaved(cands, repeats=repeats, warmup=warmup, device=device)
            med = t.groupby("candidate").seconds.median()
            t = t.rename(columns={"candidate": "precision"}).assign(seed=seed)
            t["seconds_per_step"] = t.seconds / time_steps
            t["ratio"] = t.precision.map(med / med[BASELINE])
            tables.append(t)
    finally:
        set_matmul16(mode)
    return pd.concat(tables, ignore_index=True)


def ratios(times: pd.DataFrame) -> pd.DataFrame:
    """One row per (seed, precision): median seconds per step and its ratio to 32-true's."""
    return (times.groupby(["seed", "precision"], sort=False)
            .agg(s_per_step=("seconds_per_step", "median"), ratio=("ratio", "first"))
            .reset_index())
