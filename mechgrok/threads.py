"""How many threads torch trains with. torch's default (one per core) collapses when another
process is busy on the same cores: its OpenMP threads spin-wait for each other, and a p = 23
recording of 100 steps took 20 s instead of 1 s beside one busy process. So the count is
chosen from the work per step and the cores other processes leave free, and can be given."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

PARALLEL_FLOP_PER_STEP = 5e7  # below this (e.g. p = 23, width 128: 14 MFLOP) a step is too small to share between threads


def training_flop_per_step(modulus: int, width: int, n_train: int, n_models: int = 1) -> float:
    """FLOP of one training step's three GEMMs (forward, two in the backward pass), all models."""
    return 3 * 2 * n_train * width * modulus * n_models


def free_cores() -> int:
    """Cores not busy with other processes: all cores minus the 1-minute load average, at least 1."""
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    return max(1, min(cores, cores - int(round(busy))))


def choose_threads(flop_per_step: float, requested: int | None = None) -> int:
    """`requested`, else 1 for small steps and the free cores for large ones."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads must be >= 1, got {requested}")
        return requested
    return 1 if flop_per_step < PARALLEL_FLOP_PER_STEP else free_cores()


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch intra-op threads set to `count` inside the block, restored after (a caller's
    own setting in a notebook is left as it was)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
