"""Chapter 15's measurements: the language model of chapter 12 trained below 16 bits.

The same character model and text (`experiments.language_models.load` / `model_for`), trained by
the book's one loop (`amp.Trainer`) under each recipe of `RECIPES`: the fp32 reference, the
bf16-mixed baseline (fp32 master weights), simulated FP8 and MX training (every Linear swapped
for `amp.float8.Float8Linear`, the first and last kept in high precision, inside bf16-mixed),
naive pure 16-bit (`bf16-true`, `16-true`), pure fp16 with an Adam eps fp16 can hold (`16-true,
eps 1e-4`, `designs.WORKING_PURE`: torch's 1e-8 rounds to 0 in fp16), and pure bf16 weights
updated with stochastic rounding or Kahan compensation (`amp.pure16.low_precision_weights`, no
fp32 master copy).
Runs that share a seed share their data, initial weights and batch order, so each recipe is
compared with the bf16-mixed run of its seed. `train` returns the runs, curves and per-tensor
FP8 statistics; `range_change` drives one Float8Linear through a scripted jump of its input's
range; `step_times` times steady-state optimizer steps per recipe (set-up left out),
interleaved in one run per seed.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from precisionlab import bench
from precisionlab.amp import Trainer, get_policy
from precisionlab.amp.trainer import steady_seconds_per_step
from precisionlab.data import Split
from precisionlab.study.designs import JUMP, RECIPE_SPECS, RECIPES, WORKING_PURE, Recipe
from precisionlab.study.designs import RECIPE_BASELINE as BASELINE
from precisionlab.study.experiments import mixed
from precisionlab.study.experiments.language_models import load, model_for
from precisionlab.study.experiments.language_models import ratios as lm_ratios
from precisionlab.study.store import stored

PURE02 = "data/02_mixed_precision/pure_precision.csv"
"""Chapter 02's pure 16-bit runs (its published table, a declared input of chapter 15)."""
TORCH_EPS = 1e-8  # torch.optim.Adam's default eps: what a recipe with eps None runs


# The parameters `check_parameters` checks (the template's parameters cell).
PARAMETERS = ("seeds", "recipes", "steps", "batch", "lr", "context", "d_model", "n_layers",
              "eval_every", "n_train", "n_val", "range_steps", "jump_at", "drop_at",
              "rounding_n", "time_steps", "repeats", "warmup", "threads", "device", "matmul16")


def check_parameters(params: Mapping[str, object]) -> str:
    """Check chapter 15's parameters (a mapping holding at least `PARAMETERS`) before any
    compute: the first bad one raises naming it. Returns the resolved device."""
    from precisionlab import provenance
    from precisionlab import validate as v
    from precisionlab.amp.float8 import Float8Recipe

    p = params
    recipes, d_model, n_train = p["recipes"], p["d_model"], p["n_train"]
    v.integers("seeds", p["seeds"], 0, 2**32 - 1)
    v.subset_of("recipes", recipes, RECIPES)
    if BASELINE not in recipes:
        raise v.ParameterError(f"recipes: must include {BASELINE!r} (the baseline); "
                               f"got {recipes!r}")
    v.integer("steps", p["steps"], 1, 1_000_000)
    v.integer("n_train", n_train, 1, 1_000_000)
    v.integer("batch", p["batch"], 1, n_train)  # a batch is drawn from the training windows
    v.positive("lr", p["lr"])
    v.integer("context", p["context"], 2, 2000)
    v.integer("d_model", d_model, 4, 4096)
    block = Float8Recipe().block_size
    if d_model % block and any(RECIPE_SPECS[r].float8 for r in recipes):
        raise v.ParameterError(f"d_model: must be a multiple of {block} (the block size the "
                               f"FP8/MX recipes scale by); got {d_model}")
    if d_model % 4:
        raise v.ParameterError(f"d_model: must be a multiple of 4 (4 heads); got {d_model}")
    v.integer("n_layers", p["n_layers"], 1, 64)
    v.integer("eval_every", p["eval_every"], 1, 1_000_000)
    v.integer("n_val", p["n_val"], 1, 100_000)
    v.integer("range_steps", p["range_steps"], 3, 100_000)
    v.integer("jump_at", p["jump_at"], 1, p["range_steps"] - 1)
    v.integer("drop_at", p["drop_at"], p["jump_at"] + 1, p["range_steps"])
    v.integer("rounding_n", p["rounding_n"], 1, 2**28)
    v.integer("time_steps", p["time_steps"], 2, 1000)  # one set-up step, at least one timed
    v.integer("repeats", p["repeats"], 5, 1000)  # bench.interleaved needs >= 5 for a median
    v.integer("warmup", p["warmup"], 0, 1000)
    v.integer("threads", p["threads"], 1, 256)
    v.one_of("device", p["device"], provenance.DEVICES)
    v.one_of("matmul16", p["matmul16"], ["native", "emulated", "auto"])
    device = provenance.resolve_device(p["device"])
    for r in recipes:  # each Trainer checks its own arguments, before any compute
        Trainer(precision=spec_of(r).precision, eps=spec_of(r).eps, steps=p["steps"],
                batch_size=p["batch"], lr=p["lr"], device=device, progress=False)
    return device


def recipe_configs(recipes: Sequence[str]) -> pd.DataFrame:
    """One row per recipe: its Trainer precision, parameter and compute dtype (as 'bfloat16'),
    Linear swap (float8) and pure-bf16 update rule (pure16), "" where none, Adam eps and the eps
    the parameter dtype holds (held): facts of the configuration, the same on every machine."""
    rows = []
    for r in recipes:
        spec = spec_of(r)
        pol = get_policy(spec.precision)
        eps = TORCH_EPS if spec.eps is None else spec.eps
        rows.append({"recipe": r, "precision": spec.precision,
                     "param": str(pol.param_dtype)[6:], "compute": str(pol.compute_dtype)[6:],
                     "float8": spec.float8 or "", "pure16": spec.pure16 or "", "eps": eps,
                     "held": torch.tensor(eps).to(pol.param_dtype).item()})
    return pd.DataFrame(rows, columns=["recipe", "precision", "param", "compute", "float8",
                                       "pure16", "eps", "held"])


def chapter02_pure(root: Path) -> pd.DataFrame:
    """One row per run of chapter 02's pure 16-bit and AMP MLPs (`mixed.finals`: optimizer,
    precision, seed, test_metric, diverged, stalled), read from its published table, with each
    run's recipe label in `precision` (`pure_recipes`), so two Adam recipes on one policy stay
    two runs."""
    path = root / PURE02
    if not path.is_file():
        raise FileNotFoundError(f"{PURE02}: missing; publish chapter 02 first "
                                "(precisionlab book 02_mixed_precision)")
    return mixed.finals(pure_recipes(pd.read_csv(path)), ["optimizer", "precision"])


def pure_recipes(history: pd.DataFrame) -> pd.DataFrame:
    """`history` with each row's recipe label in `precision`, whichever way chapter 02 wrote it:
    the label in `precision` already ('16-true, eps 1e-4'), in a `recipe` column (empty where
    the recipe is the policy itself), or as the policy in `precision` with Adam's eps in an
    `eps` column (empty or torch's 1e-8 for the naive recipe). Tables with neither column
    (older runs) pass unchanged; an eps that `designs.WORKING_PURE` does not name raises."""
    out = history.copy()
    if "recipe" in out.columns:
        label = out.recipe.where(out.recipe.notna() & (out.recipe.astype(str) != ""),
                                 out.precision)
        out["precision"] = label.astype(str)
    elif "eps" in out.columns:
        by_setting = {setting: label for label, setting in WORKING_PURE.items()}
        eps = pd.to_numeric(out.eps, errors="coerce")
        for i in out.index[eps.notna() & (eps != TORCH_EPS)]:
            setting = (out.at[i, "precision"], float(eps[i]))
            if setting not in by_setting:
                raise ValueError(f"{PURE02}: a {setting[0]} run with Adam eps {setting[1]:g} "
                                 f"that designs.WORKING_PURE does not name (known: "
                                 f"{', '.join(WORKING_PURE)})")
            out.at[i, "precision"] = by_setting[setting]
    return out


FLOAT8_RECIPES = tuple(r for r, s in RECIPE_SPECS.items() if s.float8)
# Delayed scaling as Transformer Engine's DelayedScaling defaults it for training: an amax
# history of 16 steps, the scale from its maximum, no margin.
DELAYED = {"history_len": 16, "amax_compute_algo": "max", "margin": 0}


def float8_recipe(scaling: str, **overrides: object):
    """The `amp.float8.Float8Recipe` for `scaling` (delayed: DELAYED unless overridden)."""
    from precisionlab.amp.float8 import Float8Recipe

    extra = dict(DELAYED) if scaling == "delayed" else {}
    extra.update(overrides)
    return Float8Recipe(scaling=scaling, **extra)


def prepare(model: nn.Module, recipe: str) -> nn.Module:
    """`model` ready for `recipe`: for FP8/MX recipes every Linear but the first and last is
    swapped (in place) for a Float8Linear; other recipes leave it as it is."""
    spec = spec_of(recipe)
    if spec.float8 is None:
        return model
    from precisionlab.amp.float8 import convert_to_float8_training, keep_first_last

    return convert_to_float8_training(model, float8_recipe(spec.float8),
                                      module_filter_fn=keep_first_last(model))


@contextlib.contextmanager
def weights_for(model: nn.Module, recipe: str, seed: int) -> Iterator[nn.Module]:
    """While active, the pure-bf16 update rule of `recipe` holds on `model` (if it has one)."""
    spec = spec_of(recipe)
    if spec.pure16 is None:
        yield model
        return
    from precisionlab.amp.pure16 import low_precision_weights

    with low_precision_weights(model, spec.pure16, dtype="bf16", seed=seed):
        yield model


def spec_of(recipe: str) -> Recipe:
    """The spec of `recipe`; raises naming the known recipes."""
    if recipe not in RECIPE_SPECS:
        raise ValueError(f"recipe: must be one of {', '.join(RECIPES)}; got {recipe!r}")
    return RECIPE_SPECS[recipe]


def kept_modules(model: nn.Module) -> tuple[list[str], list[str]]:
    """(converted, kept): the Linear layers an FP8 recipe swaps and those it keeps in high
    precision (`keep_first_last`), by qualified name."""
    from precisionlab.amp.float8 import keep_first_last

    keep = keep_first_last(model)
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    converted = [n for n, m in linears if keep(m, n)]
    return converted, [n for n, _ in linears if n not in converted]


def _stats_summary(model: nn.Module, seed: int, recipe: str) -> pd.DataFrame:
    """Per step and tensor kind: mean and max over the converted modules of the underflow and
    saturation fractions, and the largest amax."""
    from precisionlab.amp.float8 import float8_stats

    s = float8_stats(model)
    if s.empty:
        return pd.DataFrame()
    g = s.groupby(["step", "tensor"], sort=True)
    out = g.agg(underflow=("underflow", "mean"), underflow_max=("underflow", "max"),
                saturated=("saturated", "mean"), saturated_max=("saturated", "max"),
                amax=("amax", "max")).reset_index()
    return out.assign(seed=seed, recipe=recipe)


@stored
def train(seeds: Sequence[int], recipes: Sequence[str] = RECIPES, steps: int = 60,
          batch: int = 16, lr: float = 3e-3, context: int = 16, d_model: int = 32,
          n_layers: int = 2, eval_every: int = 10, n_train: int = 1024, n_val: int = 64,
          device: str = "cpu") -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Train one model per (seed, recipe) from the seed's weights and batches.

    Returns (runs, curves, fp8). runs: seed, recipe, family, precision (the Trainer's), eps
    (Adam's, as run), val_loss (final), train_loss (last step), nonfinite_steps, diverged (final
    validation loss not finite),
    stalled (mean share per step of weights with a gradient that did not move: updates lost
    to rounding), seconds. curves: seed, recipe, step, val_loss every `eval_every` steps and
    at the last.
    fp8: per seed, FP8/MX recipe, step and tensor kind, the underflow and saturation fractions
    (mean and max over the converted Linears) and the largest amax."""
    for r in recipes:
        spec_of(r)
    runs, curves, fp8 = [], [], []
    for seed in seeds:
        data = load(seed, context, n_train, n_val, device)
        m0 = model_for(data, seed, d_model, n_layers, device)
        for recipe in recipes:
            spec = spec_of(recipe)
            model = prepare(copy.deepcopy(m0), recipe)
            trainer = Trainer(precision=spec.precision, steps=steps, batch_size=batch, lr=lr,
                              eval_every=eval_every, seed=seed, device=device, progress=False,
                              track_stalled=True, eps=spec.eps)
            with weights_for(model, recipe, seed):
                history = trainer.fit(model, data)
            last = history.iloc[-1]
            loss = history.loss.to_numpy(dtype=float)
            val = float(last.test_loss)
            runs.append({"seed": seed, "recipe": recipe, "family": spec.family,
                         "precision": spec.precision,
                         "eps": TORCH_EPS if spec.eps is None else spec.eps, "val_loss": val,
                         "train_loss": float(last.loss),
                         "nonfinite_steps": int((~np.isfinite(loss)).sum()),
                         "diverged": not math.isfinite(val),
                         "stalled": float(history.stalled.mean()),
                         "seconds": float(last.seconds)})
            at = (history.step % eval_every == 0) | (history.step == steps)
            evals = history[at]
            curves.append(pd.DataFrame({"seed": seed, "recipe": recipe,
                                        "step": evals.step.to_numpy(),
                                        "val_loss": evals.test_loss.to_numpy(dtype=float)}))
            if spec.float8:
                fp8.append(_stats_summary(model, seed, recipe))
    fp8_table = (pd.concat(fp8, ignore_index=True) if fp8 else
                 pd.DataFrame(columns=["step", "tensor", "underflow", "underflow_max",
                                       "saturated", "saturated_max", "amax", "seed", "recipe"]))
    return pd.DataFrame(runs), pd.concat(curves, ignore_index=True), fp8_table


def range_schedule(steps: int = 48, jump_at: int = 8, drop_at: int = 28) -> np.ndarray:
    """The input scale per step (1-based steps): JUMP on [jump_at, drop_at), else 1."""
    if not 1 <= jump_at < drop_at <= steps:
        raise ValueError(f"jump_at, drop_at: need 1 <= jump_at < drop_at <= steps ({steps}); "
                         f"got {jump_at}, {drop_at}")
    step = np.arange(1, steps + 1)
    return np.where((step >= jump_at) & (step < drop_at), JUMP, 1.0)


RANGE_CASES = {"current": {"scaling": "current"},
               "delayed, max of 16": {"scaling": "delayed", "amax_compute_algo": "max"},
               "delayed, most recent": {"scaling": "delayed",
                                        "amax_compute_algo": "most_recent"}}


def range_change(steps: int = 48, jump_at: int = 8, drop_at: int = 28, width: int = 32,
                 rows: int = 64, spread: float = 2.0, seed: int = 0,
                 device: str = "cpu") -> pd.DataFrame:
    """One Float8Linear (width x width) per case of RANGE_CASES fed the same scripted inputs:
    one tensor of log-normal magnitudes (sigma `spread`, random signs, `rows` rows) times
    `range_schedule`, so only the range changes from step to step. Each step is a forward and
    backward pass. Returns case, step, input_scale, and the input
    tensor's amax, scale, underflow and saturated fractions from `float8_stats`."""
    from precisionlab.amp.float8 import convert_to_float8_training, float8_stats

    scale = range_schedule(steps, jump_at, drop_at)
    g = torch.Generator().manual_seed(seed)
    base = (torch.randn(rows, width, generator=g).sign()
            * torch.exp(spread * torch.randn(rows, width, generator=g)))
    tables = []
    for case, kwargs in RANGE_CASES.items():
        torch.manual_seed(seed)
        layer = nn.Sequential(nn.Linear(width, width, bias=False)).to(device)
        overrides = {k: v for k, v in kwargs.items() if k != "scaling"}
        convert_to_float8_training(layer, float8_recipe(kwargs["scaling"], **overrides))
        for t in range(steps):
            x = (base * float(scale[t])).to(device)
            layer(x).sum().backward()
            layer.zero_grad(set_to_none=True)
        s = float8_stats(layer)
        s = s[s.tensor == "input"].sort_values("step").reset_index(drop=True)
        s = s.assign(case=case, input_scale=scale[s.step.to_numpy(dtype=int) - 1])
        tables.append(s[["case", "step", "input_scale", "amax", "scale", "underflow",
                         "saturated"]])
    return pd.concat(tables, ignore_index=True)


@stored
def step_times(seeds: Sequence[int], recipes: Sequence[str] = RECIPES, time_steps: int = 3,
               batch: int = 16, lr: float = 3e-3, context: int = 16, d_model: int = 32,
               n_layers: int = 2, repeats: int = 5, warmup: int = 1,
               device: str = "cpu") -> pd.DataFrame:
    """Steady-state seconds per optimizer step of each recipe, interleaved in one run per seed
    (`bench.interleaved`), with the training's 16-bit matmul setting.

    Each timed call is one `Trainer.fit` of `time_steps` steps (at least 2) on the same model;
    its seconds per step come from the fit's own clock (`amp.trainer.steady_seconds_per_step`),
    so the Linear swap, model cast, optimizer built and first step are left out. `warmup`
    untimed calls per recipe come first, `repeats` timed ones follow. Returns seed, recipe,
    repeat, seconds (the whole call, set-up included), seconds_per_step (steady state) and ratio
    (this recipe's median seconds_per_step over bf16-mixed's, same run): one row per repeat."""
    if BASELINE not in recipes:
        raise ValueError(f"recipes: must include {BASELINE!r} (the baseline of the ratios)")
    if isinstance(time_steps, bool) or not isinstance(time_steps, int) or time_steps < 2:
        raise ValueError(f"time_steps: must be an integer >= 2 (a call's first step is set-up, "
                         f"the rest are timed); got {time_steps!r}")
    for r in recipes:
        spec_of(r)
    tables = []
    for seed in seeds:
        data = load(seed, context, max(batch, 64), 8, device)
        m0 = model_for(data, seed, d_model, n_layers, device)
        steady: dict[str, list[float]] = {r: [] for r in recipes}
        cands = {r: _timed_step(r, prepare(copy.deepcopy(m0), r), data, seed, time_steps,
                                batch, lr, device, steady[r]) for r in recipes}
        t = bench.interleaved(cands, repeats=repeats, warmup=warmup, device=device).rename(
            columns={"candidate": "recipe"})
        # each recipe's calls ran in order: `warmup` untimed ones, then repeat 0, 1, ...
        per_step = [steady[r][warmup + k] for r, k in zip(t.recipe, t.repeat, strict=True)]
        t = t.assign(seed=seed, seconds_per_step=per_step)
        med = t.groupby("recipe").seconds_per_step.median()
        tables.append(t.assign(ratio=t.recipe.map(med / med[BASELINE])))
    return pd.concat(tables, ignore_index=True)


def _timed_step(recipe: str, model: nn.Module, data: Split, seed: int, time_steps: int,
                batch: int, lr: float, device: str,
                steady: list[float]) -> Callable[[], None]:
    """A call that runs `time_steps` optimizer steps of `recipe` on `model` and appends their
    steady-state seconds per step to `steady`."""
    spec = spec_of(recipe)
    trainer = Trainer(precision=spec.precision, steps=time_steps, batch_size=batch, lr=lr,
                      eval_every=None, seed=seed, device=device, progress=False, eps=spec.eps)

    def run() -> None:
        with weights_for(model, recipe, seed):
            history = trainer.fit(model, data)
        steady.append(steady_seconds_per_step(history))
    return run


def ratios(times: pd.DataFrame) -> pd.DataFrame:
    """One row per (seed, recipe): median seconds per step and its ratio to bf16-mixed's
    (chapter 12's `ratios`, by recipe)."""
    return lm_ratios(times.rename(columns={"recipe": "precision"})).rename(
        columns={"precision": "recipe"})
