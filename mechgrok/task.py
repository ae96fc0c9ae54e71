"""The modular-addition task: all pairs (a, b) with label (a + b) mod p, a stratified
train/validation split and label noise on the training set. Pure numpy, no I/O."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import check_option


@dataclass(frozen=True)
class TaskSplit:
    """One run's data. Arrays of residues in [0, p); `train_label` is what the model is
    trained on (noised where `train_noised`), `train_label_true` is (a + b) mod p."""

    modulus: int
    train_a: np.ndarray
    train_b: np.ndarray
    train_label: np.ndarray
    train_label_true: np.ndarray
    train_noised: np.ndarray
    val_a: np.ndarray
    val_b: np.ndarray
    val_label: np.ndarray


def train_pairs_per_class(modulus: int, train_frac: float) -> int:
    """Training pairs drawn from each answer class c: round(train_frac * p), each class
    holding p pairs. Raises ValueError for a modulus outside config.OPTION_LIMITS or when that
    leaves the training or validation set empty."""
    check_option("modulus", modulus)
    if not 0.0 < train_frac < 1.0:
        raise ValueError(f"train_frac must lie in (0, 1), got {train_frac}")
    per_class = int(round(train_frac * modulus))
    if not 1 <= per_class <= modulus - 1:
        raise ValueError(
            f"train_frac {train_frac} gives {per_class} of {modulus} pairs per answer class; "
            "both the training and the validation set need at least one"
        )
    return per_class


def make_task(modulus: int, train_frac: float, noise: float, seed: int) -> TaskSplit:
    """Split all p^2 pairs, stratified by the answer c = (a + b) mod p (every class gets
    round(train_frac * p) training pairs), then replace round(noise * n_train) training labels,
    each by a class drawn uniformly from the p - 1 wrong ones. Validation labels stay clean."""
    if not 0.0 <= noise < 1.0:
        raise ValueError(f"noise must lie in [0, 1), got {noise}")
    per_class = train_pairs_per_class(modulus, train_frac)
    rng = np.random.default_rng(seed)
    p = modulus
    # Class c holds the pairs (a, (c - a) mod p), a = 0..p-1; choose which a's train.
    chosen = np.argsort(rng.random((p, p)), axis=1)  # row c: a random permutation of a
    classes = np.arange(p)[:, None]
    train_a_grid, val_a_grid = chosen[:, :per_class], chosen[:, per_class:]
    train_a = train_a_grid.reshape(-1)
    train_c = np.broadcast_to(classes, train_a_grid.shape).reshape(-1)
    val_a = val_a_grid.reshape(-1)
    val_c = np.broadcast_to(classes, val_a_grid.shape).reshape(-1)
    order = np.lexsort((train_a, (train_c - train_a) % p))  # sort pairs by (b, a)
    train_a, train_c = train_a[order], train_c[order]
    order = np.lexsort((val_a, (val_c - val_a) % p))
    val_a, val_c = val_a[order], val_c[order]

    n_train = train_a.size
    n_noised = int(round(noise * n_train))
    noised = np.zeros(n_train, dtype=bool)
    noised[rng.choice(n_train, size=n_noised, replace=False)] = True
    train_label = train_c.copy()
    train_label[noised] = (train_c[noised] + rng.integers(1, p, size=n_noised)) % p
    return TaskSplit(
        modulus=p,
        train_a=train_a.astype(np.int64),
        train_b=((train_c - train_a) % p).astype(np.int64),
        train_label=train_label.astype(np.int64),
        train_label_true=train_c.astype(np.int64),
        train_noised=noised,
        val_a=val_a.astype(np.int64),
        val_b=((val_c - val_a) % p).astype(np.int64),
        val_label=val_c.astype(np.int64),
    )
