"""Which steps a run snapshots. `--every N` is a closed form (a run of 10^9 steps snapshots
every step without a list of 10^9 entries); the log schedule has at most
per_decade x log10(steps) + 2 points and is kept as a set. The saturation and final steps are
added while training."""

from __future__ import annotations

import math

import numpy as np

from mechgrok.config import RunConfig


class SnapshotSchedule:
    """The steps in [0, config.steps] a run snapshots: every `every` steps, or (every = 0)
    the log schedule floor(10^(j / per_decade)), j = 0, 1, ...; always 0 and the step cap."""

    def __init__(self, config: RunConfig):
        self.cap, self.every = config.steps, config.every
        self._log: frozenset[int] | None = None
        if self.every == 0:
            n_points = int(math.ceil(config.per_decade * math.log10(max(self.cap, 1)))) + 1
            steps = np.floor(10.0 ** (np.arange(n_points) / config.per_decade)).astype(np.int64)
            self._log = frozenset([0, self.cap, *steps[steps <= self.cap].tolist()])

    def __contains__(self, step: int) -> bool:
        if self._log is not None:
            return step in self._log
        return 0 <= step <= self.cap and (step % self.every == 0 or step == self.cap)

    def count_after(self, step: int) -> int:
        """How many scheduled steps lie after `step` (all of them for step = -1)."""
        if self._log is not None:
            return sum(s > step for s in self._log)
        if step >= self.cap:
            return 0
        first = 0 if step < 0 else step // self.every + 1  # multiples of `every` after `step`
        multiples = self.cap // self.every + 1 - first
        return multiples + (self.cap % self.every != 0)

    def __len__(self) -> int:
        return self.count_after(-1)

    def steps(self) -> np.ndarray:
        """The scheduled steps in order (a list as long as the schedule: for small ones)."""
        if self._log is not None:
            return np.array(sorted(self._log), dtype=np.int64)
        return np.unique(np.append(np.arange(0, self.cap + 1, self.every), self.cap))
