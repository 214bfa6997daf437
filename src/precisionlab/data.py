"""Offline datasets, as float32 tensors split by seed: nothing is downloaded, ever."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Split:
    """Train and test tensors of one dataset (features standardized on the train part)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_classes(self) -> int:
        return int(self.y_train.max()) + 1

    def to(self, device: str) -> Split:
        """The same split on another device."""
        return Split(self.name, *(t.to(device) for t in
                                  (self.x_train, self.y_train, self.x_test, self.y_test)))


def digits(seed: int = 0, test_fraction: float = 0.25) -> Split:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), a seeded stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction: must be in (0, 1); got {test_fraction!r}")
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y)
    mean, std = x_tr.mean(axis=0), x_tr.std(axis=0) + 1e-6  # some border pixels are constant 0
    return Split(
        "digits",
        torch.tensor((x_tr - mean) / std, dtype=torch.float32),
        torch.tensor(y_tr, dtype=torch.int64),
        torch.tensor((x_te - mean) / std, dtype=torch.float32),
        torch.tensor(y_te, dtype=torch.int64),
    )
