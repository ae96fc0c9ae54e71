"""The HDF5 trajectory format, in one place: create, append, resume and open.

A trajectory is a netCDF4-compatible HDF5 file (readable by h5py, h5netcdf and
`xarray.open_dataset(path, engine="h5netcdf")`):

- dims: `step` (unlimited), `neuron` (H), `token` (p residues; also W_out's output class),
  `train_pair` (training pairs; validation is every other pair).
- on (step, neuron, token), float32: `W_a`, `W_b` (input rows of each neuron over the p
  tokens), `W_out` (output column of each neuron, over the p classes); `b_in` (step, neuron)
  and `b_out` (step, token) when biases are on.
- on step, float64: `train_loss` (nats), `train_acc` (labels used), `train_acc_true`
  (true labels), `val_loss`, `val_acc` (clean validation set).
- on train_pair: `train_a`, `train_b`, `train_label` (used), `train_label_true`,
  `train_noised` (1 where the label was replaced).
- attributes: one per RunConfig field (betas as a two-element array), `saturation_step`
  (-1 until reached), `final_step` and `stop_reason` (-1 / "" while recording),
  `n_snapshots` (the committed count), `format_version`, `mechgrok_version`,
  `torch_version`, `created`.
- group `resume`: AdamW moments and the stopping rule's memory at the latest two
  checkpointed snapshots (double-buffered, so a kill while writing one leaves the other).

Each snapshot is written, then `n_snapshots` is raised and the file flushed: a reader, or
a recording killed at any moment, sees every completed snapshot; a snapshot half-written
when the process died is beyond `n_snapshots` and is dropped on open and on resume.
Optimizer state is checkpointed at some snapshots only (the recorder's policy); a resume
restarts from the latest checkpoint and, training being deterministic, regenerates the
snapshots after it that are already on file without writing them again.
"""
from __future__ import annotations

import dataclasses
import os
from datetime import datetime, timezone
from pathlib import Path

import h5netcdf
import h5py
import numpy as np
import torch
import xarray as xr

from .errors import OutputExistsError, TrajectoryError
from .model import PARAM_NAMES, MLPParams
from .task import TaskSplit
from .config import RunConfig
from .train import RunState, Snapshot

FORMAT_VERSION = 1
METRIC_NAMES = ("train_loss", "train_acc", "train_acc_true", "val_loss", "val_acc")
WEIGHT_NAMES = ("W_a", "W_b", "W_out")
REQUIRED_ATTRS = ("modulus", "width", "n_snapshots", "format_version")


def _mechgrok_version() -> str:
    from . import __version__

    return __version__


def _config_attrs(config: RunConfig) -> dict:
    attrs = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        attrs[field.name] = np.asarray(value, dtype=np.float64) if field.name == "betas" else (
            int(value) if isinstance(value, bool) else value)
    return attrs


def config_from_attrs(attrs, path: Path | str = "") -> RunConfig:
    """Rebuild the RunConfig a trajectory was recorded with from its attributes."""
    kwargs = {}
    for field in dataclasses.fields(RunConfig):
        if field.name not in attrs:
            raise TrajectoryError(f"{path}: attribute {field.name!r} missing; not a complete mechgrok trajectory")
        value = attrs[field.name]
        if field.name == "betas":
            kwargs["betas"] = tuple(float(v) for v in np.asarray(value).ravel())
        elif field.type in ("bool", bool):
            kwargs[field.name] = bool(attr_int(value))
        elif field.type in ("int", int):
            kwargs[field.name] = attr_int(value)
        elif field.type in ("float", float):
            kwargs[field.name] = float(np.asarray(value).reshape(-1)[0])
        else:
            kwargs[field.name] = value.decode() if isinstance(value, bytes) else str(value)
    return RunConfig(**kwargs)


class TrajectoryWriter:
    """Streams one run's snapshots into a trajectory file (see module docstring)."""

    def __init__(self, file: h5netcdf.File, path: Path, config: RunConfig):
        self._file = file
        self.path = path
        self.config = config
        self.n_snapshots = attr_int(file.attrs["n_snapshots"])
        self.last_step = int(file.variables["step"][self.n_snapshots - 1]) if self.n_snapshots else -1
        self._checkpoints = 0
        # Appends go straight to the h5py datasets: h5netcdf's per-write checks cost ~1 ms each.
        h5 = file._h5file
        self._along_step = {name: h5[name] for name in file.variables if file.variables[name].dimensions[:1] == ("step",)}
        self._resume = {name: h5["resume"][name] for name in ("adam_m", "adam_v", "memory", "slot_step")}

    @classmethod
    def create(cls, path: str | os.PathLike, config: RunConfig, task: TaskSplit, force: bool = False) -> "TrajectoryWriter":
        """Start a new trajectory. Refuses an existing path unless `force`."""
        path = Path(path)
        if path.exists() and not force:
            raise OutputExistsError(f"{path} exists; pass --resume to continue it or --force to overwrite it")
        path.parent.mkdir(parents=True, exist_ok=True)
        p, H = config.modulus, config.width
        f = h5netcdf.File(path, "w", locking=False)  # readers may open it while it records
        try:
            f.dimensions = {"step": None, "neuron": H, "token": p, "train_pair": task.train_a.size}
            f.create_variable("step", ("step",), np.int64, chunks=(1024,))
            f.create_variable("neuron", ("neuron",), np.int64, data=np.arange(H))
            f.create_variable("token", ("token",), np.int64, data=np.arange(p))
            for name in WEIGHT_NAMES:
                f.create_variable(name, ("step", "neuron", "token"), np.float32, chunks=(1, H, p))
            if config.bias:
                f.create_variable("b_in", ("step", "neuron"), np.float32, chunks=(64, H))
                f.create_variable("b_out", ("step", "token"), np.float32, chunks=(64, p))
            for name in METRIC_NAMES:
                f.create_variable(name, ("step",), np.float64, chunks=(1024,))
            for name in ("train_a", "train_b", "train_label", "train_label_true"):
                f.create_variable(name, ("train_pair",), np.int64, data=getattr(task, name))
            f.create_variable("train_noised", ("train_pair",), np.int8, data=task.train_noised.astype(np.int8))
            _describe_variables(f)
            n_flat = 2 * p * H + H + H * p + p
            resume = f.create_group("resume")
            resume.dimensions = {"slot": 2, "flat_param": n_flat, "memory_field": 3}
            resume.create_variable("slot_step", ("slot",), np.int64, data=np.full(2, -1))
            resume.create_variable("adam_m", ("slot", "flat_param"), np.float32)
            resume.create_variable("adam_v", ("slot", "flat_param"), np.float32)
            resume.create_variable("memory", ("slot", "memory_field"), np.float64)
            resume.attrs["memory_fields"] = "best_val_acc best_val_step saturation_step"
            f.attrs.update(_config_attrs(config))
            f.attrs.update(dict(
                saturation_step=-1, final_step=-1, stop_reason="", n_snapshots=0,
                format_version=FORMAT_VERSION, mechgrok_version=_mechgrok_version(),
                torch_version=str(torch.__version__), created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                conventions="mechgrok trajectory; W_a[step, neuron, token]: input weight of neuron from token a",
            ))
            f.flush()
            f._h5file.flush()
        except BaseException:
            f.close()
            raise
        return cls(f, path, config)

    @classmethod
    def reopen(cls, path: str | os.PathLike) -> tuple["TrajectoryWriter", RunState | None]:
        """Open an unfinished trajectory to continue it. Returns the writer and the state at its
        latest checkpoint (None when it has no snapshot yet); drops a half-written snapshot."""
        path = Path(path)
        check_trajectory_file(path)
        f = h5netcdf.File(path, "a", locking=False)
        try:
            config = config_from_attrs(f.attrs, path)
            writer = cls(f, path, config)
            n = writer.n_snapshots
            if f.dimensions["step"].size != n:
                f.resize_dimension("step", n)
            state = writer._read_latest_state() if n else None
        except BaseException:
            f.close()
            raise
        return writer, state

    def _read_latest_state(self) -> RunState:
        f, cfg = self._file, self.config
        slots = f["resume"].variables
        committed = np.asarray(f.variables["step"][: self.n_snapshots])
        slot_steps = np.asarray(slots["slot_step"][:])
        usable = [(step, slot) for slot, step in enumerate(slot_steps) if step >= 0 and step in committed]
        if not usable:
            raise TrajectoryError(f"{self.path}: no optimizer checkpoint among its snapshots; cannot resume")
        step, slot = max(usable)
        index = int(np.flatnonzero(committed == step)[0])
        self._checkpoints = slot + 1
        weights = {name: np.asarray(f.variables[name][index]) for name in WEIGHT_NAMES}
        zeros = {"b_in": np.zeros(cfg.width, np.float32), "b_out": np.zeros(cfg.modulus, np.float32)}
        for name in ("b_in", "b_out"):
            weights[name] = np.asarray(f.variables[name][index]) if cfg.bias else zeros[name]
        params = _params_from_snapshot(weights)
        m = MLPParams.from_flat(torch.from_numpy(np.asarray(slots["adam_m"][slot])[None].copy()), cfg.modulus, cfg.width)
        v = MLPParams.from_flat(torch.from_numpy(np.asarray(slots["adam_v"][slot])[None].copy()), cfg.modulus, cfg.width)
        best_val_acc, best_val_step, saturation_step = slots["memory"][slot]
        return RunState(int(step), params, m, v, float(best_val_acc), int(best_val_step), int(saturation_step))

    def update_config(self, config: RunConfig) -> None:
        """Record a changed stopping rule or step cap of a resumed run; a run that had
        stopped is open again."""
        self.config = config
        self._file.attrs.update(_config_attrs(config))
        self._file.attrs.update(dict(final_step=-1, stop_reason=""))
        self._flush()

    def append(self, snapshot: Snapshot, checkpoint: bool = True) -> None:
        """Write one snapshot (and, with `checkpoint`, its optimizer state), then commit and
        flush. Snapshots at or before the last step on file (regenerated after a resume from an
        earlier checkpoint) are already there and are skipped."""
        if snapshot.step <= self.last_step:
            if snapshot.is_final:  # a resumed run whose new stopping rule ends it at a step on file
                self._mark_final(snapshot)
                self._flush()
            return
        f, i, data = self._file, self.n_snapshots, self._along_step
        for dataset in data.values():
            dataset.resize(i + 1, axis=0)
        for name in WEIGHT_NAMES:
            data[name][i] = _to_neuron_token(name, snapshot.weights[name])
        if self.config.bias:
            data["b_in"][i] = snapshot.weights["b_in"].reshape(-1)
            data["b_out"][i] = snapshot.weights["b_out"].reshape(-1)
        for name in METRIC_NAMES:
            data[name][i] = snapshot.metrics[name]
        data["step"][i] = snapshot.step
        if checkpoint:
            self._write_checkpoint(snapshot)
        if snapshot.is_saturation:
            f.attrs["saturation_step"] = snapshot.step
        if snapshot.is_final:
            self._mark_final(snapshot)
        self.n_snapshots, self.last_step = i + 1, snapshot.step
        f.attrs["n_snapshots"] = self.n_snapshots
        self._flush()

    def _mark_final(self, snapshot: Snapshot) -> None:
        self._file.attrs["final_step"] = snapshot.step
        self._file.attrs["stop_reason"] = snapshot.stop_reason

    def _write_checkpoint(self, snapshot: Snapshot) -> None:
        """Optimizer state into the older of the two slots. The slot is marked invalid and
        flushed first, so a kill mid-write can never leave a slot whose tag names new data."""
        state, slot, resume = snapshot.state, self._checkpoints % 2, self._resume
        resume["slot_step"][slot] = -1
        self._flush()
        resume["adam_m"][slot] = state.adam_m.flat()[0].numpy()
        resume["adam_v"][slot] = state.adam_v.flat()[0].numpy()
        resume["memory"][slot] = [state.best_val_acc, state.best_val_step, state.saturation_step]
        resume["slot_step"][slot] = snapshot.step
        self._checkpoints += 1

    def _flush(self) -> None:
        # h5netcdf's flush() only writes its own attributes; h5py's writes HDF5's caches to disk
        self._file._h5file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "TrajectoryWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def attr_int(value) -> int:
    """An integer attribute, whether stored as a scalar or (netCDF style) a 1-element array."""
    return int(np.asarray(value).reshape(-1)[0])


def _describe_variables(f: h5netcdf.File) -> None:
    units = {
        "W_a": "input weight from token a, by neuron and token",
        "W_b": "input weight from token b, by neuron and token",
        "W_out": "output weight to class token, by neuron and token",
        "b_in": "first-layer bias", "b_out": "output bias",
        "train_loss": "mean cross-entropy on training labels used (nats)",
        "train_acc": "accuracy on training labels used", "train_acc_true": "accuracy on true training labels",
        "val_loss": "mean cross-entropy on validation (nats)", "val_acc": "accuracy on validation",
        "step": "optimizer updates applied before the snapshot",
    }
    for name, text in units.items():
        if name in f.variables:
            f.variables[name].attrs["long_name"] = text


def _to_neuron_token(name: str, weight: np.ndarray) -> np.ndarray:
    """Training layout -> file layout: W_a, W_b are (p, H) in training, (neuron, token) on file."""
    return weight.T if name in ("W_a", "W_b") else weight


def _params_from_snapshot(weights: dict[str, np.ndarray]) -> MLPParams:
    tensors = {
        "W_a": weights["W_a"].T, "W_b": weights["W_b"].T, "W_out": weights["W_out"],
        "b_in": weights["b_in"].reshape(1, -1), "b_out": weights["b_out"].reshape(1, -1),
    }
    return MLPParams(*(torch.from_numpy(np.ascontiguousarray(tensors[name], dtype=np.float32))[None] for name in PARAM_NAMES))


def check_trajectory_file(path: str | os.PathLike) -> None:
    """Raise FileNotFoundError/TrajectoryError with a one-line reason unless `path` is an
    HDF5 file holding a mechgrok trajectory whose variables agree in length."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise TrajectoryError(f"{path}: is a directory, not a trajectory file")
    try:
        is_hdf5 = h5py.is_hdf5(path)
    except OSError as err:
        raise TrajectoryError(f"{path}: cannot be read ({err})") from None
    if not is_hdf5:
        raise TrajectoryError(f"{path}: not an HDF5 file")
    try:
        with h5py.File(path, "r") as f:
            missing = [name for name in (*WEIGHT_NAMES, "step") if name not in f]
            if missing:
                raise TrajectoryError(f"{path}: not a mechgrok trajectory (missing {', '.join(missing)})")
            missing = [name for name in REQUIRED_ATTRS if name not in f.attrs]
            if missing:
                raise TrajectoryError(f"{path}: not a mechgrok trajectory (attribute {missing[0]!r} missing)")
            version = attr_int(f.attrs["format_version"])
            if version > FORMAT_VERSION:
                raise TrajectoryError(f"{path}: format version {version} is newer than this mechgrok reads ({FORMAT_VERSION})")
            n, p, H = (attr_int(f.attrs[name]) for name in ("n_snapshots", "modulus", "width"))
            if p < 3:
                raise TrajectoryError(f"{path}: modulus {p} < 3")
            for name in WEIGHT_NAMES:
                shape = f[name].shape
                if len(shape) != 3 or shape[1:] != (H, p) or shape[0] < n:
                    raise TrajectoryError(f"{path}: {name} has shape {shape}, expected ({n}+, {H}, {p}) (step, neuron, token)")
            if f["step"].shape[0] < n:
                raise TrajectoryError(f"{path}: step has {f['step'].shape[0]} entries, fewer than the {n} committed snapshots")
    except TrajectoryError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        raise TrajectoryError(f"{path}: unreadable or truncated HDF5 file ({str(err).splitlines()[0]})") from None


def read_config(path: str | os.PathLike) -> RunConfig:
    """The RunConfig a trajectory file was recorded with."""
    check_trajectory_file(path)
    with h5py.File(path, "r") as f:
        return config_from_attrs(f.attrs, path)


def is_complete(path: str | os.PathLike, config: RunConfig | None = None) -> bool:
    """True when the trajectory's recording has ended (it holds its final snapshot) and,
    given `config`, that config's step cap and stopping rule would have ended it too."""
    check_trajectory_file(path)
    with h5py.File(path, "r") as f:
        final = attr_int(f.attrs.get("final_step", -1))
        if final < 0 or config is None:
            return final >= 0
        n = attr_int(f.attrs["n_snapshots"])
        slot = int(np.flatnonzero(f["resume"]["slot_step"][:] == final)[0])  # the final snapshot is always checkpointed
        best_val_step = int(f["resume"]["memory"][slot][1])
        return (final >= config.steps or float(f["val_acc"][n - 1]) >= config.stop_val_acc
                or final - best_val_step >= config.patience)


def open_trajectory(path: str | os.PathLike, chunks: dict | None = None) -> xr.Dataset:
    """Open a trajectory as a lazy xarray.Dataset (nothing is read until asked; pass
    `chunks`, e.g. {"step": 64}, for dask arrays). Only committed snapshots are shown."""
    check_trajectory_file(path)
    try:
        ds = xr.open_dataset(path, engine="h5netcdf", chunks=chunks)
    except (OSError, ValueError, RuntimeError) as err:
        raise TrajectoryError(f"{path}: cannot be opened as netCDF ({str(err).splitlines()[0]})") from None
    n = attr_int(ds.attrs["n_snapshots"])
    if ds.sizes["step"] != n:
        ds = ds.isel(step=slice(0, n))
    ds.attrs["source"] = str(Path(path))
    return ds
