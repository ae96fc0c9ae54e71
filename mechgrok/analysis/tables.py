"""Per-neuron measures of the activation table (models.tables) for the analysis: Nanda et
al.'s 2D frequency of each neuron's post-activation table and its share of the variance,
the frequency clusters they form, and additivity.

A transformer's trajectory stores these per snapshot, computed from its parameters when the
snapshot was written (the table is not additive there, and its effective curves alone do not
give it back); for the two-hot MLP the post-activation table is exactly
activation(W_a[a] + W_b[b] + b_in), built here from the curves, and the pre-activation table
is additive (`additivity` 1)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from mechgrok.models.activations import activate
from mechgrok.models.tables import frequency_2d

CLUSTER_SHARE = 0.85  # Nanda et al.: a neuron belongs to frequency k when k's block holds >= 85%
STORED = ("additivity", "neuron_freq_2d", "neuron_freq_share")
PER_FREQUENCY = ("neurons_per_frequency",)  # (step, frequency) variables


def table_measures(part: xr.Dataset, weights: dict, activation: str) -> dict[str, np.ndarray]:
    """(step, neuron) additivity, neuron_freq_2d, neuron_freq_share, (step,)
    clustered_share, additivity_median and (step, frequency) neurons_per_frequency of a
    trajectory slice; `weights` are its curves in
    the group's token order (pipeline.weights_in_group_order)."""
    if all(name in part for name in STORED):
        out = {name: part[name].values for name in STORED}
        # read through netCDF's fill value as float: unwritten entries are NaN
        out["neuron_freq_2d"] = np.nan_to_num(out["neuron_freq_2d"], nan=0).astype(np.int64)
    else:
        W_a, W_b, b_in = weights["W_a"], weights["W_b"], weights["b_in"]
        steps, H, _ = W_a.shape
        freq = np.zeros((steps, H), np.int64)
        share = np.zeros((steps, H))
        for i in range(steps):
            pre = W_a[i].T[:, None, :] + W_b[i].T[None, :, :]  # (a, b, neuron)
            if b_in is not None:
                pre = pre + b_in[i]
            post = activate(activation, pre.astype(np.float32))
            freq[i], share[i] = frequency_2d(post)  # the curves are in the group's order
        out = {
            "additivity": np.ones((steps, H)),
            "neuron_freq_2d": freq,
            "neuron_freq_share": share,
        }
    clustered = out["neuron_freq_share"] >= CLUSTER_SHARE
    out["clustered_share"] = clustered.mean(1)
    n = weights["W_a"].shape[-1]
    out["neurons_per_frequency"] = neurons_per_frequency(
        out["neuron_freq_2d"], out["neuron_freq_share"], (n - 1) // 2
    )
    out["additivity_median"] = np.median(out["additivity"], 1)
    return out


def neurons_per_frequency(freq: np.ndarray, share: np.ndarray, n_freqs: int) -> np.ndarray:
    """(step, frequency) number of neurons clustered at each frequency 1..n_freqs."""
    clustered = np.where(share >= CLUSTER_SHARE, freq, 0)
    counts = np.zeros((freq.shape[0], n_freqs + 1), np.int64)
    for i, row in enumerate(clustered):
        counts[i] = np.bincount(row, minlength=n_freqs + 1)[: n_freqs + 1]
    return counts[:, 1:]
