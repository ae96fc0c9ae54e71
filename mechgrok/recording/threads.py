"""How many threads torch trains with. torch's default (one per core) collapses when another
process is busy on the same cores: its OpenMP threads spin-wait for each other, and a p = 23
recording of 100 steps took 20 s instead of 1 s beside one busy process. So the count is
chosen from the work per step and the cores other processes leave free, and can be given."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

from mechgrok.errors import InvalidOptionError

PARALLEL_FLOP_PER_STEP = 5e7  # below this (e.g. p = 23, width 128: 14 MFLOP) a step is too small to share between threads


def training_flop_per_step(modulus: int, width: int, n_train: int, n_models: int = 1) -> float:
    """FLOP of one training step's three GEMMs (forward, two in the backward pass), all models."""
    return 3 * 2 * n_train * width * modulus * n_models


def free_cores(interval: float = 0.1) -> int:
    """Cores not busy with other processes, at least 1: all cores minus those busy during
    `interval` seconds (from /proc/stat, while this process waits; elsewhere the 1-minute
    load average, which lags and counts this process's own recent work)."""
    cores = os.cpu_count() or 1
    try:
        busy = _busy_cores(interval, cores)
    except (OSError, ValueError, IndexError):
        try:
            busy = os.getloadavg()[0]
        except OSError:
            busy = 0.0
    return max(1, min(cores, cores - int(round(busy))))


def _busy_cores(interval: float, cores: int) -> float:
    def counters() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # all jiffies, idle + iowait

    total_before, idle_before = counters()
    time.sleep(interval)
    total_after, idle_after = counters()
    total = total_after - total_before
    return 0.0 if total <= 0 else (1 - (idle_after - idle_before) / total) * cores


def choose_threads(flop_per_step: float, requested: int | None = None) -> int:
    """`requested`, else 1 for small steps and the free cores for large ones."""
    if requested is not None:
        cores = os.cpu_count() or 1
        if not 1 <= requested <= 4 * cores:  # more only adds OS threads that wait on each other
            raise InvalidOptionError(
                f"threads must be 1 to {4 * cores} (4 x this machine's {cores} cores), got {requested}"
            )
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
