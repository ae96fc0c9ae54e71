"""Sweeps: grids of runs recorded as batched ensembles, the sweep index, seed statistics
and the dask bridge. Import the submodules; this package imports nothing eagerly."""
