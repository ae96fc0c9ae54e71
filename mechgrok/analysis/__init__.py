"""Analysis of trajectories: per-neuron Fourier structure, the phase law, idealized models
with controls, and progress measures, as xarray Datasets.

Importing this package registers the `ds.mechgrok` accessor; `open_trajectory` here is the
store's reader, so Datasets opened through it carry the accessor."""

from mechgrok.analysis import accessor as accessor  # registers `ds.mechgrok`
from mechgrok.store.reader import open_trajectory

__all__ = ["open_trajectory"]
