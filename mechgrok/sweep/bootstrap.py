"""Seed statistics for sweeps: the mean over seeds with a percentile-bootstrap interval. Pure numpy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 4000
LEVEL = 0.95


@dataclass(frozen=True)
class SeedSummary:
    """Mean of a number over n seeds (NaN values left out) and its 95% percentile-bootstrap
    interval [low, high] (NaN with fewer than two seeds)."""

    mean: float
    low: float
    high: float
    n: int

    def text(self, digits: int = 3) -> str:
        """'0.812 [0.790, 0.834]', '0.812' for one seed, '-' for none."""
        if self.n == 0:
            return "-"
        if self.n == 1:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def seed_summary(
    values, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0
) -> SeedSummary:
    """Mean of the finite `values` (one per seed) and the percentile-bootstrap interval of
    that mean at `level`, from `resamples` resamples drawn with a fixed seed (reproducible)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return SeedSummary(np.nan, np.nan, np.nan, 0)
    mean = float(values.mean())
    if values.size == 1:
        return SeedSummary(mean, np.nan, np.nan, 1)
    draws = np.random.default_rng(seed).choice(values, size=(resamples, values.size)).mean(1)
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return SeedSummary(mean, float(low), float(high), int(values.size))
