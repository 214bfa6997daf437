"""Chapter 12's measurements: a small causal language model trained here in every precision.

A nanoGPT-style character model (`models.TinyTransformer`) on windows of Python standard-library
source (`data.char_sequences`, hashed by `data.char_corpus`), trained by the book's one loop
(`amp.Trainer`) under each recipe of `RECIPES`: 32-true, bf16-mixed, 16-mixed (with the Trainer's
dynamic loss scaler, the GradScaler algorithm), bf16-true, 16-true, and beside naive 16-true the
pure-fp16 recipe a practitioner would use, Adam with an eps fp16 can hold (`designs.WORKING_PURE`:
torch's 1e-8 rounds to 0 in fp16). Runs that share a seed share their data split, initial weights
and batch order, so each recipe is compared with the 32-true run of its seed. `train` returns the
final validation loss per run and the validation curve; `step_times` times steady-state optimizer
steps per recipe (set-up left out), interleaved in one run (`bench.interleaved`), per seed.
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
from precisionlab.amp.trainer import steady_seconds_per_step
from precisionlab.data import Split, char_corpus
from precisionlab.study import tasks
from precisionlab.study.designs import LM_BASELINE as BASELINE
from precisionlab.study.designs import LM_PRECISIONS as PRECISIONS
from precisionlab.study.designs import WORKING_PURE
from precisionlab.study.store import stored

# Each recipe this chapter trains, by the label its tables carry in their `precision` column:
# label -> (the Trainer's precision, Adam's eps; None: torch's default, TORCH_EPS). The five
# precisions keep Lightning's names and torch's eps; the working pure-fp16 recipe keeps chapter
# 02's label ("16-true, eps 1e-4").
RECIPES: dict[str, tuple[str, float | None]] = {**{p: (p, None) for p in PRECISIONS},
                                                 **WORKING_PURE}
TORCH_EPS = 1e-8  # torch.optim.Adam's default eps: what a recipe with eps None runs


def recipe(label: str) -> tuple[str, float | None]:
    """(Trainer precision, Adam eps) of the recipe `label`; raises naming the known labels."""
    if label not in RECIPES:
        raise ValueError(f"precisions: each must be one of {', '.join(RECIPES)}; got {label!r}")
    return RECIPES[label]


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
def train(seeds: Sequence[int], precisions: Sequence[str] = tuple(RECIPES), steps: int = 200,
          batch: int = 32, lr: float = 3e-3, context: int = 64, d_model: int = 64,
          n_layers: int = 2, eval_every: int = 50, n_train: int = 2048, n_val: int = 256,
          device: str = "cpu") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train one model per (seed, recipe of `precisions`: labels of RECIPES) from the seed's
    weights and batches.

    Returns (runs, curves). runs: seed, precision (the recipe's label), eps (Adam's eps as run),
    val_loss (final, at the training precision), val_perplexity, train_loss (last step),
    skipped_steps, nonfinite_steps, diverged (the final validation loss is not finite),
    final_scale, seconds. curves: seed, precision, step, val_loss every `eval_every` steps (and
    at the last)."""
    for label in precisions:
        recipe(label)
    runs, curves = [], []
    for seed in seeds:
        data = load(seed, context, n_train, n_val, device)
        m0 = model_for(data, seed, d_model, n_layers, device)
        for label in precisions:
            precision, eps = recipe(label)
            trainer = Trainer(precision=precision, steps=steps, batch_size=batch, lr=lr,
                              eval_every=eval_every, seed=seed, device=device, progress=False,
                              eps=eps)
            history = trainer.fit(copy.deepcopy(m0), data)
            last = history.iloc[-1]
            loss = history.loss.to_numpy(dtype=float)
            val = float(last.test_loss)
            runs.append({"seed": seed, "precision": label,
                         "eps": TORCH_EPS if eps is None else eps, "val_loss": val,
                         "val_perplexity": math.exp(val) if math.isfinite(val) else math.nan,
                         "train_loss": float(last.loss),
                         "skipped_steps": int(history.skipped.sum()),
                         "nonfinite_steps": int((~np.isfinite(loss)).sum()),
                         "diverged": not math.isfinite(val),
                         "final_scale": trainer.scaler.get_scale(),
                         "seconds": float(last.seconds)})
            at = (history.step % eval_every == 0) | (history.step == steps)  # NaN losses kept
            evals = history[at]
            curves.append(pd.DataFrame({"seed": seed, "precision": label,
                                        "step": evals.step.to_numpy(),
                                        "val_loss": evals.test_loss.to_numpy(dtype=float)}))
    return pd.DataFrame(runs), pd.concat(curves, ignore_index=True)


@stored
def step_times(seeds: Sequence[int], precisions: Sequence[str] = tuple(RECIPES),
               time_steps: int = 3, batch: int = 32, lr: float = 3e-3, context: int = 64,
               d_model: int = 64, n_layers: int = 2, repeats: int = 5, warmup: int = 1,
               device: str = "cpu") -> pd.DataFrame:
    """Steady-state seconds per optimizer step of each recipe, interleaved in one run per seed
    (the seed's model and batches), with torch's own kernels: 16-bit matmuls run natively here
    even where training emulated them, since the time is what this hardware does.

    Method: each timed call is one `Trainer.fit` of `time_steps` steps (at least 2) on the same
    model; its seconds per step are read from the fit's own clock
    (`amp.trainer.steady_seconds_per_step`: (end of the last step - end of the first) /
    (time_steps - 1)), so casting the model, building the optimizer and scaler,
    and the first step (Adam's state allocated) are left out; on CUDA each step's loss read
    synchronizes. `warmup` untimed calls per recipe come first, `repeats` timed ones follow.
    Returns seed, precision, repeat, seconds (the whole call, set-up included),
    seconds_per_step (steady state) and ratio (this recipe's median seconds_per_step over
    32-true's, same run): one row per repeat, so the spread within a run stays visible."""
    if BASELINE not in precisions:
        raise ValueError(f"precisions: must include {BASELINE!r} (the baseline of the ratios)")
    if isinstance(time_steps, bool) or not isinstance(time_steps, int) or time_steps < 2:
        raise ValueError(f"time_steps: must be an integer >= 2 (a call's first step is set-up, "
                         f"the rest are timed); got {time_steps!r}")
    for label in precisions:
        recipe(label)
    mode = get_matmul16()
    set_matmul16("native")
    tables = []
    try:
        for seed in seeds:
            data = load(seed, context, max(batch, 64), 8, device)
            m0 = model_for(data, seed, d_model, n_layers, device)
            steady: dict[str, list[float]] = {p: [] for p in precisions}

            def call(label: str, model: torch.nn.Module, seed: int = seed, data: Split = data,
                     steady: dict[str, list[float]] = steady):
                precision, eps = recipe(label)
                trainer = Trainer(precision=precision, steps=time_steps, batch_size=batch,
                                  lr=lr, eval_every=None, seed=seed, device=device,
                                  progress=False, eps=eps)

                def run() -> None:
                    steady[label].append(steady_seconds_per_step(trainer.fit(model, data)))
                return run

            cands = {p: call(p, copy.deepcopy(m0)) for p in precisions}
            t = bench.interleaved(cands, repeats=repeats, warmup=warmup, device=device)
            t = t.rename(columns={"candidate": "precision"}).assign(seed=seed)
            # each recipe's calls ran in order: `warmup` untimed ones, then repeat 0, 1, ...
            t["seconds_per_step"] = [steady[p][warmup + r]
                                     for p, r in zip(t.precision, t.repeat, strict=True)]
            med = t.groupby("precision").seconds_per_step.median()
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
