"""Offline datasets, as float32 tensors split by seed: nothing is downloaded, ever."""

from __future__ import annotations

import hashlib
import importlib.util
import random
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class Split:
    """Train and test tensors of one dataset (features standardized on the train part)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: int | None = None  # set when the label set is known (e.g. a vocabulary)

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_classes(self) -> int:
        return self.classes if self.classes is not None else int(self.y_train.max()) + 1

    def to(self, device: str) -> Split:
        """The same split on another device."""
        return replace(self, **{k: getattr(self, k).to(device)
                                for k in ("x_train", "y_train", "x_test", "y_test")})


def _check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: must be a positive int; got {value!r}")


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed: must be an int in [0, 2**32); got {seed!r}")


def _check_fraction(name: str, value: float) -> None:
    if not 0 < value < 1:
        raise ValueError(f"{name}: must be in (0, 1); got {value!r}")


def digits(seed: int = 0, test_fraction: float = 0.25) -> Split:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), a seeded stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    _check_fraction("test_fraction", test_fraction)
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return _standardized("digits", x_tr, y_tr, x_te, y_te)


def _standardized(name: str, x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray,
                  y_te: np.ndarray, classes: int | None = None) -> Split:
    """A Split with features standardized by the train part's per-feature mean and std.

    Features constant in the train part keep scale 1: dividing by a tiny std would blow up
    the rare test example where such a feature (a digits border pixel) is not 0.
    """
    mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return Split(
        name,
        torch.tensor((x_tr - mean) / std, dtype=torch.float32),
        torch.tensor(y_tr, dtype=torch.int64),
        torch.tensor((x_te - mean) / std, dtype=torch.float32),
        torch.tensor(y_te, dtype=torch.int64),
        classes=classes,
    )


def close_pairs(seed: int = 0, n_samples: int = 8000, test_fraction: float = 0.25,
                min_gap: float = 1e-6, max_gap: float = 1e-1) -> Split:
    """Which of two nearly equal numbers is larger? A task that needs fine input resolution.

    Each example is a pair (a, b) in [0.6, 0.9) whose gap |a - b| is log-uniform in
    [min_gap, max_gap]; the label is 1 if a > b. A 16-bit cast of the inputs erases gaps below
    the format's spacing there (bf16: 2^-8, fp16: 2^-11), so accuracy on small gaps measures
    the resolution a precision keeps. Features are raw (not standardized): they are the
    measurements. The gap of example i is |x[i, 0] - x[i, 1]|.
    """
    _check_seed(seed)
    _check_positive_int("n_samples", n_samples)
    _check_fraction("test_fraction", test_fraction)
    if not 0 < min_gap < max_gap <= 0.1:
        raise ValueError(f"min_gap, max_gap: need 0 < min_gap < max_gap <= 0.1; "
                         f"got {min_gap!r}, {max_gap!r}")
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.7, 0.8, n_samples)
    gap = np.exp(rng.uniform(np.log(min_gap), np.log(max_gap), n_samples))
    b = a + np.where(rng.random(n_samples) < 0.5, -gap, gap)
    x = np.stack([a, b], axis=1).astype(np.float32)
    y = (x[:, 0] > x[:, 1]).astype(np.int64)  # from the float32 values the model sees
    n_test = int(round(n_samples * test_fraction))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    return Split("close pairs", xt[n_test:], yt[n_test:], xt[:n_test], yt[:n_test], classes=2)


def mnist1d(seed: int = 0, n_samples: int = 4000, test_fraction: float = 0.2) -> Split:
    """MNIST-1D (Greydanus 2020): 40-sample 1-D signals of 10 digit templates, 10 classes.

    Generated locally by the package's `make_dataset` with its default templates and
    `get_dataset_args()` (num_samples and seed overridden); `get_dataset` is never called, as it
    downloads. The generator reseeds the global `random`/`np.random`; their states are restored.
    Its samples come shuffled; the last `test_fraction` of them is the test part.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    _check_seed(seed)
    _check_positive_int("n_samples", n_samples)
    if n_samples % 10:
        raise ValueError(f"n_samples: must be a multiple of 10 (equal classes); got {n_samples}")
    _check_fraction("test_fraction", test_fraction)
    n_test = round(n_samples * test_fraction)
    if not 0 < n_test < n_samples:
        raise ValueError(f"test_fraction: leaves an empty part of {n_samples} samples; "
                         f"got {test_fraction!r}")

    args = get_dataset_args()
    args.num_samples, args.seed = n_samples, seed
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    x = np.concatenate([data["x"], data["x_test"]])
    y = np.concatenate([data["y"], data["y_test"]])
    return _standardized("mnist1d", x[:-n_test], y[:-n_test], x[-n_test:], y[-n_test:],
                         classes=10)


# Pure-Python modules shipped with every CPython 3.11; their source is the char-level corpus.
CORPUS_MODULES = ("bisect", "colorsys", "fractions", "functools", "glob",
                  "heapq", "shlex", "statistics", "string", "textwrap")


@dataclass(frozen=True)
class CharCorpus:
    """ASCII text with its sorted character vocabulary and sha256, for char-level models."""

    text: str
    vocab: str
    sha256: str
    modules: tuple[str, ...]

    def encode(self, s: str) -> torch.Tensor:
        """Token ids (int64) of the characters of `s`."""
        index = {c: i for i, c in enumerate(self.vocab)}
        try:
            return torch.tensor([index[c] for c in s], dtype=torch.int64)
        except KeyError as err:
            raise ValueError(f"s: character {err.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids: torch.Tensor | Iterable[int]) -> str:
        """The string of a 1-D sequence of token ids."""
        return "".join(self.vocab[i] for i in torch.as_tensor(ids).tolist())


def _module_source(name: str) -> str:
    """Source of a stdlib module, newlines normalized, keeping printable ASCII and newlines."""
    spec = importlib.util.find_spec(name)
    if spec is None or not str(spec.origin).endswith(".py"):
        raise RuntimeError(f"no Python source for stdlib module {name!r} in this install")
    text = Path(spec.origin).read_text(encoding="utf-8")
    return "".join(c for c in text if c == "\n" or " " <= c <= "~")


def char_corpus(max_chars: int = 200_000) -> CharCorpus:
    """The sources of CORPUS_MODULES joined by newlines, cut to `max_chars` (~199k in 3.11).

    Deterministic for a given Python version; `sha256` of the text says exactly which text it is.
    """
    _check_positive_int("max_chars", max_chars)
    parts: list[str] = []
    for name in CORPUS_MODULES:
        if sum(len(p) + 1 for p in parts) >= max_chars:
            break  # later modules would be cut off entirely
        parts.append(_module_source(name))
    text = "\n".join(parts)[:max_chars]
    return CharCorpus(text, "".join(sorted(set(text))),
                      hashlib.sha256(text.encode("ascii")).hexdigest(),
                      CORPUS_MODULES[:len(parts)])


def char_sequences(seed: int = 0, context: int = 64, n_train: int = 2048, n_test: int = 512,
                   max_chars: int = 200_000) -> Split:
    """Next-character windows of `char_corpus(max_chars)`: x (N, context) ids, y = x shifted by one.

    Window starts are drawn (seeded, with replacement) so that train windows lie in the first 90%
    of the text and test windows in the last 10%; n_classes is the vocabulary size.
    """
    _check_seed(seed)
    for name, value in (("context", context), ("n_train", n_train), ("n_test", n_test)):
        _check_positive_int(name, value)
    corpus = char_corpus(max_chars)
    cut = int(0.9 * len(corpus.text))
    if context + 1 > len(corpus.text) - cut:
        raise ValueError(f"context: windows of context + 1 = {context + 1} chars must fit in the "
                         f"last 10% ({len(corpus.text) - cut} chars) of the text; "
                         "lower context or raise max_chars")
    ids = corpus.encode(corpus.text)
    gen = torch.Generator().manual_seed(seed)
    offsets = torch.arange(context + 1)

    def windows(lo: int, hi: int, n: int) -> torch.Tensor:  # (n, context + 1) within [lo, hi)
        starts = torch.randint(lo, hi - context, (n,), generator=gen)
        return ids[starts[:, None] + offsets]

    train, test = windows(0, cut, n_train), windows(cut, len(ids), n_test)
    x_train, y_train, x_test, y_test = (t.contiguous() for t in (
        train[:, :-1], train[:, 1:], test[:, :-1], test[:, 1:]))
    return Split("chars", x_train, y_train, x_test, y_test, classes=len(corpus.vocab))
