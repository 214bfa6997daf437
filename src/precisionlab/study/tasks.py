"""Named tasks: a dataset and a model, made together from one seed.

A seed draws its own data split (digits, MNIST-1D and character windows all allow it) and the
model's initial weights, so runs at several precisions that share a seed form a pair, and runs
with different seeds vary in both data and initialization. Every chapter builds its models here.

    split, model = tasks.make("digits", seed=1, hidden=[256, 256])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from precisionlab import data as datasets
from precisionlab.data import Split
from precisionlab.models import MLP, CNN1d, TinyTransformer
from precisionlab.validate import one_of

TASKS = ("digits", "mnist1d", "mnist1d-cnn", "chars")


def load(task: str, seed: int, samples: int = 4000, context: int = 64, n_train: int = 2048,
         n_test: int = 512) -> Split:
    """The data of `task` for `seed`: its own split (and, for MNIST-1D, its own samples).

    `samples` sizes MNIST-1D; `context`, `n_train`, `n_test` size the character windows."""
    one_of("task", task, TASKS)
    if task == "digits":
        return datasets.digits(seed)
    if task in ("mnist1d", "mnist1d-cnn"):
        return datasets.mnist1d(seed, n_samples=samples)
    return datasets.char_sequences(seed, context=context, n_train=n_train, n_test=n_test)


def model_for(task: str, split: Split, seed: int, hidden: Sequence[int] = (256, 256),
              channels: int = 32, d_model: int = 64, n_layers: int = 2) -> nn.Module:
    """A freshly initialized model for `task` (weights drawn from `seed`): an MLP with `hidden`
    widths, a 1-D CNN with `channels`, or a TinyTransformer of `d_model` and `n_layers`."""
    one_of("task", task, TASKS)
    torch.manual_seed(seed)
    if task in ("digits", "mnist1d"):
        return MLP([split.n_features, *hidden, split.n_classes])
    if task == "mnist1d-cnn":
        return CNN1d(n_classes=split.n_classes, length=split.n_features, channels=channels)
    context = split.x_train.shape[1]
    return TinyTransformer(split.n_classes, context=context, d_model=d_model, n_layers=n_layers)


def make(task: str, seed: int, samples: int = 4000, context: int = 64, n_train: int = 2048,
         n_test: int = 512, **model: object) -> tuple[Split, nn.Module]:
    """`load` then `model_for`: the split and a fresh model of `task` for `seed`."""
    split = load(task, seed, samples=samples, context=context, n_train=n_train, n_test=n_test)
    return split, model_for(task, split, seed, **model)  # type: ignore[arg-type]
