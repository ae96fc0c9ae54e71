"""Opening the netCDF4 files mechgrok writes (trajectories and analyses) as lazy xarray
Datasets straight through h5py: the same Dataset as `xarray.open_dataset(path,
engine="h5netcdf")`, without h5netcdf's bookkeeping.

h5netcdf recomputes an unlimited dimension's length (`step`) from every variable on it
each time any variable's shape is asked, and it asks on every open and every read: opening
a trajectory took ~0.2-0.4 s and each lazy read ~40 ms whatever its size. Here each file's
dimension lengths are read once, at open. Only the root group is read (mechgrok's groups,
such as a trajectory's `resume`, are not data).
"""

from __future__ import annotations

import os
from typing import IO

import h5py
import numpy as np
import xarray as xr
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.core import indexing

# HDF5 and netCDF4 bookkeeping attributes, never shown (the ones h5netcdf hides)
HIDDEN_ATTRS = frozenset(
    [
        "REFERENCE_LIST",
        "CLASS",
        "DIMENSION_LIST",
        "NAME",
        "_Netcdf4Dimid",
        "_Netcdf4Coordinates",
        "_nc3_strict",
        "_NCProperties",
    ]
)
# netCDF4 marks a dimension that has no coordinate variable by this NAME on its scale dataset
PURE_DIMENSION = b"This is a netCDF dimension but not a netCDF variable"


def dimension_names(f: h5py.File, dataset: h5py.Dataset) -> tuple[str, ...] | None:
    """The netCDF dimension names of a dataset (its attached dimension scales), or None."""
    if dataset.attrs.get("CLASS") == b"DIMENSION_SCALE":  # a coordinate is its own dimension
        return (dataset.name.lstrip("/"),) if dataset.ndim == 1 else None
    if dataset.ndim == 0:
        return ()
    if "DIMENSION_LIST" not in dataset.attrs:
        return None
    names = []
    for refs in dataset.attrs["DIMENSION_LIST"]:
        if len(refs) == 0:
            return None
        names.append(f[refs[0]].name.lstrip("/"))
    return tuple(names)


class _LazyVariable(BackendArray):
    """One HDF5 dataset as xarray's lazy backend array, `shape` its netCDF shape: a variable
    shorter than its unlimited dimension (caught between two appends) reads as padded with
    its HDF5 fill value, as h5netcdf does."""

    def __init__(self, dataset: h5py.Dataset, shape: tuple[int, ...]):
        self.dataset, self.shape, self.dtype = dataset, shape, dataset.dtype

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER_1VECTOR, self._read
        )

    def _read(self, key: tuple) -> np.ndarray:
        if self.dataset.shape == self.shape:
            return np.asarray(self.dataset[key])
        padding = [(0, full - stored) for full, stored in zip(self.shape, self.dataset.shape)]
        return _outer_index(
            np.pad(self.dataset[()], padding, constant_values=self.dataset.fillvalue), key
        )


def _outer_index(array: np.ndarray, key: tuple) -> np.ndarray:
    """array[key] with outer indexing (each index array picks along its own axis, integers
    drop their axis), one axis at a time."""
    dropped = []
    for axis, index in enumerate(key):
        if isinstance(index, (int, np.integer)):
            index = np.array([index])
            dropped.append(axis)
        array = array[(slice(None),) * axis + (index,)]
    return array.squeeze(axis=tuple(dropped)) if dropped else array


def _attributes(attrs: h5py.AttributeManager) -> dict:
    """Attributes as h5netcdf gives them: fixed-length strings decoded, one-element arrays as
    their element, string arrays as lists."""
    out = {}
    for name in attrs:
        if name in HIDDEN_ATTRS:
            continue
        value = attrs[name]
        if isinstance(value, h5py.Empty):
            info = h5py.check_string_dtype(value.dtype)
            out[name] = b"" if info and info.length == 1 else np.array([], dtype=value.dtype)
            continue
        info = h5py.check_string_dtype(attrs.get_id(name).dtype)
        if info is not None:
            if info.length is not None and info.length > 1:
                value = (
                    value.decode(info.encoding, "surrogateescape")  # type: ignore[union-attr]
                    if np.isscalar(value)
                    else [b.decode(info.encoding, "surrogateescape") for b in value.flat]
                )
            elif not np.isscalar(value):
                value = value.tolist()
        if not np.isscalar(value) and len(value) == 1:
            value = value[0]
        out[name] = value
    return out


def _encoding(dataset: h5py.Dataset, dims: tuple[str, ...], shape: tuple[int, ...]) -> dict:
    """What xarray's h5netcdf backend records of how a variable is stored."""
    encoding = {
        "dtype": dataset.dtype,
        "contiguous": dataset.chunks is None,
        "chunksizes": dataset.chunks,
        "shuffle": dataset.shuffle,
        "fletcher32": dataset.fletcher32,
        "original_shape": shape,
        "zlib": dataset.compression == "gzip",
    }
    if dataset.chunks is not None:
        encoding["preferred_chunks"] = dict(zip(dims, dataset.chunks))
    if dataset.compression == "gzip":
        encoding["complevel"] = dataset.compression_opts
    elif dataset.compression is not None:
        encoding.update(compression=dataset.compression, compression_opts=dataset.compression_opts)
    return encoding


class FastNetCDFBackend(BackendEntrypoint):
    """xarray backend for mechgrok's netCDF4 files: `xr.open_dataset(source,
    engine=FastNetCDFBackend)`; xarray does the rest (chunks, decoding options, closing)."""

    description = "netCDF4 files written by mechgrok (h5netcdf layout), read through h5py"
    open_dataset_parameters = ("filename_or_obj", "drop_variables")

    def open_dataset(self, filename_or_obj, *, drop_variables=None, **decoders) -> xr.Dataset:
        f = h5py.File(filename_or_obj, "r")
        try:
            source = (
                os.fspath(filename_or_obj)
                if isinstance(filename_or_obj, (str, os.PathLike))
                else None
            )
            ds = xr.decode_cf(_raw_dataset(f, source), drop_variables=drop_variables, **decoders)
        except BaseException:
            f.close()
            raise
        ds.set_close(f.close)
        return ds

    def guess_can_open(self, filename_or_obj) -> bool:
        return False  # chosen by name only, never instead of xarray's own engines


def _raw_dataset(f: h5py.File, source: str | None) -> xr.Dataset:
    """The root group's variables, lazy and not yet CF-decoded; `source` (the path) goes
    into each lazy variable's encoding, as xarray's h5netcdf backend puts it."""
    datasets = {name: obj for name, obj in f.items() if isinstance(obj, h5py.Dataset)}
    dims = {}
    for name, dataset in datasets.items():
        found = dimension_names(f, dataset)
        if found is None:
            raise ValueError(f"variable {name!r} has no netCDF dimensions")
        dims[name] = found
    sizes: dict[str, int] = {}
    for name, dataset in datasets.items():
        for dim, length in zip(dims[name], dataset.shape):
            sizes[dim] = max(sizes.get(dim, 0), length)
    variables = {}
    for name, dataset in datasets.items():
        if dataset.attrs.get("NAME", b"").startswith(PURE_DIMENSION):
            continue
        shape = tuple(sizes[dim] for dim in dims[name])
        data: np.ndarray | indexing.LazilyIndexedArray
        if (
            h5py.check_string_dtype(dataset.dtype) is not None
        ):  # text: small, read now, as str as xarray does
            data = np.asarray(dataset.asstr()[()]).astype(str)
            encoding = {"dtype": data.dtype}
        else:
            data = indexing.LazilyIndexedArray(_LazyVariable(dataset, shape))
            encoding = _encoding(dataset, dims[name], shape) | (
                {"source": source} if source is not None else {}
            )
        variables[name] = xr.Variable(
            dims[name], data, _attributes(dataset.attrs), encoding=encoding
        )
    return xr.Dataset(variables, attrs=_attributes(f.attrs))


def open_netcdf(source: str | os.PathLike | IO[bytes], chunks: dict | None = None) -> xr.Dataset:
    """A netCDF4 file's root group as a lazy, CF-decoded xarray.Dataset, as
    `xarray.open_dataset(source, engine="h5netcdf", chunks=chunks)` gives it; closing the
    Dataset closes the file. `source` is a path or a binary file object. Raises OSError for
    a file that is not HDF5 and ValueError for a dataset without netCDF dimensions."""
    return xr.open_dataset(source, engine=FastNetCDFBackend, chunks=chunks)
