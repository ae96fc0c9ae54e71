"""Planted weights with known frequencies, phases and amplitudes (ground truth for tests)."""

from __future__ import annotations

import numpy as np
import xarray as xr


def planted_rows(freq, phase, p, kind="cos", amplitude=1.0, offset=0.0):
    """(n, p) rows f(2 pi freq x / p - phase) * amplitude + offset, f = cos or square."""
    theta = 2 * np.pi * np.asarray(freq)[:, None] * np.arange(p) / p - np.asarray(phase)[:, None]
    wave = np.cos(theta) if kind == "cos" else np.where(np.cos(theta) >= 0, 1.0, -1.0)
    return np.asarray(amplitude)[..., None] * wave + offset


def planted_algorithm(
    p=23, phases_per_axis=5, freqs=(1, 3, 5, 7), kind="square", seed=0, noise=0.0
):
    """The paper's algorithm: at each planted frequency, one neuron for every pair on an
    evenly spaced grid of (phi_a, phi_b), with phi_out = phi_a + phi_b. Spread this evenly
    the idealized Sq->Cos and Cos->Cos models are right on all pairs (checked in tests)."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(-np.pi, np.pi, phases_per_axis, endpoint=False) + rng.uniform(0, 0.2)
    phase_a, phase_b = (
        np.tile(g.ravel(), len(freqs)) for g in np.meshgrid(grid, grid + 0.37, indexing="ij")
    )
    freq = np.repeat(freqs, phases_per_axis**2)
    n = freq.size
    phase_a, phase_b = np.angle(np.exp(1j * phase_a)), np.angle(np.exp(1j * phase_b))
    phase_out = np.angle(np.exp(1j * (phase_a + phase_b)))
    W_a = planted_rows(freq, phase_a, p, kind, 0.5) + noise * rng.standard_normal((n, p))
    W_b = planted_rows(freq, phase_b, p, kind, 0.5) + noise * rng.standard_normal((n, p))
    W_out = planted_rows(freq, phase_out, p, "cos", 0.7) + noise * rng.standard_normal((n, p))
    return dict(
        freq=freq,
        phase_a=phase_a,
        phase_b=phase_b,
        phase_out=phase_out,
        W_a=W_a,
        W_b=W_b,
        W_out=W_out,
    )


def as_dataset(*snapshots: dict) -> xr.Dataset:
    """A hand-built trajectory-shaped Dataset from planted snapshots (no metrics)."""
    stack = {name: np.stack([s[name] for s in snapshots]) for name in ("W_a", "W_b", "W_out")}
    n, p = stack["W_a"].shape[1:]
    return xr.Dataset(
        {name: (("step", "neuron", "token"), value) for name, value in stack.items()},
        coords={
            "step": np.arange(len(snapshots)) * 10,
            "neuron": np.arange(n),
            "token": np.arange(p),
        },
    )
