"""The modular-arithmetic task: all pairs (a, b) of operands with label a o b mod p (o one of
operations.OPERATIONS; the paper's is +), a train/validation split stratified by the answer,
and label noise on the training set. Pure numpy, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mechgrok.config import check_option
from mechgrok.errors import InvalidOptionError
from mechgrok.operations import operands, second_operand


@dataclass(frozen=True)
class TaskSplit:
    """One run's data. Arrays of residues in [0, p); `train_label` is what the model is
    trained on (noised where `train_noised`), `train_label_true` is a o b mod p."""

    modulus: int
    train_a: np.ndarray
    train_b: np.ndarray
    train_label: np.ndarray
    train_label_true: np.ndarray
    train_noised: np.ndarray
    val_a: np.ndarray
    val_b: np.ndarray
    val_label: np.ndarray


def train_pairs_per_class(modulus: int, train_frac: float, operation: str = "add") -> int:
    """Training pairs drawn from each answer class c: round(train_frac * m), each class
    holding m pairs (m = p operands, p - 1 for mul and div). Raises ValueError for a modulus
    outside config.OPTION_LIMITS or when that leaves the training or validation set empty."""
    check_option("modulus", modulus)
    if not 0.0 < train_frac < 1.0:
        raise InvalidOptionError(f"train_frac must lie in (0, 1), got {train_frac}")
    m = operands(operation, modulus).size
    per_class = int(round(train_frac * m))
    if not 1 <= per_class <= m - 1:
        raise InvalidOptionError(
            f"train_frac {train_frac} gives {per_class} of {m} pairs per answer class; "
            "both the training and the validation set need at least one"
        )
    return per_class


def make_task(
    modulus: int, train_frac: float, noise: float, seed: int, operation: str = "add"
) -> TaskSplit:
    """Split all pairs of operands, stratified by the answer c = a o b mod p (every class gets
    round(train_frac * m) training pairs of its m), then replace round(noise * n_train)
    training labels, each by an answer drawn uniformly from the m - 1 wrong ones. Validation
    labels stay clean. Pairs are ordered by (b, a)."""
    if not 0.0 <= noise < 1.0:
        raise InvalidOptionError(f"noise must lie in [0, 1), got {noise}")
    per_class = train_pairs_per_class(modulus, train_frac, operation)
    rng = np.random.default_rng(seed)
    p = modulus
    values = operands(operation, p)
    m = values.size
    # Class c holds the pairs (a, b(a, c)) for the m operands a; choose which a's train.
    chosen = values[
        np.argsort(rng.random((m, m)), axis=1)
    ]  # row c: a random permutation of the operands
    classes = values[:, None]
    train_a_grid, val_a_grid = chosen[:, :per_class], chosen[:, per_class:]
    train_a = train_a_grid.reshape(-1)
    train_c = np.broadcast_to(classes, train_a_grid.shape).reshape(-1)
    val_a = val_a_grid.reshape(-1)
    val_c = np.broadcast_to(classes, val_a_grid.shape).reshape(-1)
    train_b, val_b = (
        second_operand(operation, train_a, train_c, p),
        second_operand(operation, val_a, val_c, p),
    )
    order = np.lexsort((train_a, train_b))  # sort pairs by (b, a)
    train_a, train_b, train_c = train_a[order], train_b[order], train_c[order]
    order = np.lexsort((val_a, val_b))
    val_a, val_b, val_c = val_a[order], val_b[order], val_c[order]

    n_train = train_a.size
    n_noised = int(round(noise * n_train))
    noised = np.zeros(n_train, dtype=bool)
    noised[rng.choice(n_train, size=n_noised, replace=False)] = True
    train_label = train_c.copy()
    # a wrong answer drawn uniformly: shift the class's position among the operands by 1..m-1
    position = np.searchsorted(values, train_c[noised])
    train_label[noised] = values[(position + rng.integers(1, m, size=n_noised)) % m]
    return TaskSplit(
        modulus=p,
        train_a=train_a.astype(np.int64),
        train_b=train_b.astype(np.int64),
        train_label=train_label.astype(np.int64),
        train_label_true=train_c.astype(np.int64),
        train_noised=noised,
        val_a=val_a.astype(np.int64),
        val_b=val_b.astype(np.int64),
        val_label=val_c.astype(np.int64),
    )
