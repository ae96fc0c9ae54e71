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
import fcntl
import hashlib
import os
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import h5netcdf
import h5py
import numpy as np
import torch
import xarray as xr

from .errors import OutputWriteError, TrajectoryError
from .outputs import check_output, check_readable_input, is_write_failure, check_space, partial_path, publish, reserve_space, write_failure
from .model import PARAM_NAMES, MLPParams
from .task import TaskSplit
from .config import RunConfig
from .train import RunState, Snapshot

FORMAT_VERSION = 2
METRIC_NAMES = ("train_loss", "train_acc", "train_acc_true", "val_loss", "val_acc")
WEIGHT_NAMES = ("W_a", "W_b", "W_out")
REQUIRED_ATTRS = ("modulus", "width", "n_snapshots", "format_version")
STEP_FILL = -1  # unwritten `step` entries read as -1, unwritten floats as NaN
# (long_name, units) of every variable; "1" is CF's unit of a dimensionless number
VARIABLE_ATTRS = {
    "step": ("optimizer updates applied before the snapshot", "1"),
    "neuron": ("hidden neuron index", "1"),
    "token": ("residue mod p (input token, or output class for W_out)", "1"),
    "W_a": ("input weight of each neuron from token a", "1"),
    "W_b": ("input weight of each neuron from token b", "1"),
    "W_out": ("output weight of each neuron to class token", "1"),
    "b_in": ("first-layer bias", "1"), "b_out": ("output bias", "1"),
    "train_loss": ("mean cross-entropy on the training labels used", "nats"),
    "train_acc": ("accuracy on the training labels used", "1"),
    "train_acc_true": ("accuracy on the true training labels", "1"),
    "val_loss": ("mean cross-entropy on the validation pairs", "nats"),
    "val_acc": ("accuracy on the validation pairs", "1"),
    "train_a": ("token a of each training pair", "1"), "train_b": ("token b of each training pair", "1"),
    "train_label": ("label trained on (noised where train_noised)", "1"),
    "train_label_true": ("true label (a + b) mod p", "1"),
    "train_noised": ("whether the training label was replaced by a wrong class", "1"),
}


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
    """Rebuild the RunConfig a trajectory was recorded with from its attributes; a missing
    or malformed attribute is a TrajectoryError naming it."""
    kwargs = {}
    for field in dataclasses.fields(RunConfig):
        if field.name not in attrs:
            raise TrajectoryError(f"{path}: attribute {field.name!r} missing; not a complete mechgrok trajectory")
        value = attrs[field.name]
        try:
            if field.name == "betas":
                kwargs["betas"] = tuple(float(v) for v in np.asarray(value).ravel())
            elif field.type in ("bool", bool):
                kwargs[field.name] = bool(attr_int(value))
            elif field.type in ("int", int):
                kwargs[field.name] = attr_int(value)
            elif field.type in ("float", float):
                kwargs[field.name] = attr_float(value)
            else:
                kwargs[field.name] = value.decode() if isinstance(value, bytes) else str(value)
        except (TypeError, ValueError, IndexError):
            raise TrajectoryError(f"{path}: attribute {field.name!r} is malformed ({value!r})") from None
    try:
        return RunConfig(**kwargs)
    except ValueError as err:
        raise TrajectoryError(f"{path}: its recorded options are invalid ({err})") from None


def snapshot_bytes(config: RunConfig) -> int:
    """Bytes one snapshot adds to a trajectory (weights, biases, metrics, step)."""
    p, H = config.modulus, config.width
    return 4 * (3 * H * p + H + p) + 8 * (len(METRIC_NAMES) + 1)


class TrajectoryWriter:
    """Streams one run's snapshots into a trajectory file (see module docstring).

    A new trajectory is written aside (outputs.partial_path) and takes its name when its
    first snapshot is committed, so a run that fails before that leaves nothing behind and
    `force` never loses the old file to a run that does not start. An exclusive POSIX record
    lock (fcntl.lockf; HDF5's own flock-based locking is off so readers can watch) keeps a
    second writer out. Before each snapshot its bytes are reserved on disk (posix_fallocate),
    so a full disk or file-size limit stops the run before HDF5 writes anything, leaving
    every committed snapshot intact and the file resumable."""

    def __init__(self, file: h5netcdf.File, path: Path, config: RunConfig, lock: int,
                 publish_from: Path | None = None, replace: bool = False):
        self._file = file
        self.path = path
        self.config = config
        self._lock = lock
        self._publish_from, self._replace = publish_from, replace
        self._pending_config: RunConfig | None = None
        self.n_snapshots = attr_int(file.attrs["n_snapshots"])
        self.last_step = int(file.variables["step"][self.n_snapshots - 1]) if self.n_snapshots else -1
        self._checkpoints = 0
        # Appends go straight to the h5py datasets: h5netcdf's per-write checks cost ~1 ms each.
        h5 = file._h5file
        self._along_step = {name: h5[name] for name in file.variables if file.variables[name].dimensions[:1] == ("step",)}
        self._resume = {name: h5["resume"][name] for name in ("adam_m", "adam_v", "memory", "slot_step")}
        # two snapshots' data plus room for HDF5's metadata (chunk index nodes, attributes)
        self._reserve_bytes = 2 * snapshot_bytes(config) + (256 << 10)

    @classmethod
    def create(cls, path: str | os.PathLike, config: RunConfig, task: TaskSplit, force: bool = False,
               compression: bool = False) -> "TrajectoryWriter":
        """Start a new trajectory at `path` (published with its first snapshot). Refuses an
        existing path unless `force`, and never replaces a file that is not a trajectory.
        `compression`: deflate + shuffle on the weights (smaller files, slower snapshots)."""
        path = Path(path)
        check_output(path, "trajectory", force=force)
        path.parent.mkdir(parents=True, exist_ok=True)
        n_flat = 3 * config.modulus * config.width + config.width + config.modulus
        initial_bytes = 41 * task.train_a.size + 16 * n_flat + 2 * snapshot_bytes(config) + (128 << 10)
        try:
            check_space(path.parent, initial_bytes)
        except OSError as err:
            raise write_failure(path, err) from None
        partial = partial_path(path)
        f, lock = None, None
        try:
            f = h5netcdf.File(partial, "w", locking=False)  # readers may open it while it records
            lock = _lock_for_writing(partial, path)
            _write_schema(f, config, task, compression)
            _flush(f)
        except BaseException as err:
            _close_quietly(f)
            _unlock(lock)
            partial.unlink(missing_ok=True)
            if is_write_failure(err):
                raise write_failure(path, err) from None
            raise
        return cls(f, path, config, lock, publish_from=partial, replace=path.exists())

    @classmethod
    def reopen(cls, path: str | os.PathLike) -> tuple["TrajectoryWriter", RunState | None]:
        """Open an unfinished trajectory to continue it. Returns the writer and the state at its
        latest checkpoint (None when it has no snapshot yet); drops a half-written snapshot."""
        path = Path(path)
        check_trajectory_file(path)
        lock = _lock_for_writing(path, path)
        f = None
        try:
            f = h5netcdf.File(path, "a", locking=False)
            config = config_from_attrs(f.attrs, path)
            writer = cls(f, path, config, lock)
            n = writer.n_snapshots
            if f.dimensions["step"].size != n:
                for dataset in writer._along_step.values():
                    dataset.resize(n, axis=0)
            state = writer._read_latest_state() if n else None
        except BaseException as err:
            _close_quietly(f)
            _unlock(lock)
            if is_write_failure(err):
                raise write_failure(path, err) from None
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
        """A changed stopping rule or step cap for a resumed run: written, and a run that had
        stopped opened again, with the next write (so a resume refused later leaves the file as it was)."""
        self._pending_config = config
        self.config = config

    def _apply_pending_config(self) -> None:
        if self._pending_config is not None:
            self._file.attrs.update(_config_attrs(self._pending_config))
            self._file.attrs.update(dict(final_step=-1, stop_reason=""))
            self._pending_config = None

    def append(self, snapshot: Snapshot, checkpoint: bool = True) -> None:
        """Write one snapshot after the last on file (and, with `checkpoint`, its optimizer
        state), then commit it: the data is flushed to disk before `step` and `n_snapshots`
        name it. Raises OutputWriteError (file intact, resumable) when the disk is full."""
        if snapshot.step <= self.last_step:
            raise ValueError(f"{self.path}: snapshot at step {snapshot.step} is not after the last on file ({self.last_step})")
        try:
            self._reserve()
            f, i, data = self._file, self.n_snapshots, self._along_step
            self._apply_pending_config()
            for dataset in data.values():
                dataset.resize(i + 1, axis=0)
            for name in WEIGHT_NAMES:
                data[name][i] = _to_neuron_token(name, snapshot.weights[name])
            if self.config.bias:
                data["b_in"][i] = snapshot.weights["b_in"].reshape(-1)
                data["b_out"][i] = snapshot.weights["b_out"].reshape(-1)
            for name in METRIC_NAMES:
                data[name][i] = snapshot.metrics[name]
            if checkpoint:
                self._write_checkpoint(snapshot)
            self._flush()
            data["step"][i] = snapshot.step  # the commit: step names the snapshot, n_snapshots counts it
            if snapshot.is_saturation:
                f.attrs["saturation_step"] = snapshot.step
            if snapshot.is_final:
                self._mark_final(snapshot)
            f.attrs["n_snapshots"] = i + 1
            self._flush()
        except BaseException as err:
            if is_write_failure(err):
                raise self._write_failure(err) from None
            raise
        self.n_snapshots, self.last_step = i + 1, snapshot.step
        self._publish()

    def end_at_last_snapshot(self, snapshot: Snapshot) -> None:
        """A resumed run whose stopping rule ends it at the last step on file: mark it final."""
        if snapshot.step != self.last_step or not snapshot.is_final:
            raise ValueError(f"{self.path}: step {snapshot.step} is not the final snapshot at the last step on file")
        try:
            self._apply_pending_config()
            self._mark_final(snapshot)
            self._flush()
        except BaseException as err:
            if is_write_failure(err):
                raise self._write_failure(err) from None
            raise

    def _write_failure(self, err: BaseException) -> OutputWriteError:
        reason = write_failure(self.path, err)
        if self._publish_from is not None:
            return OutputWriteError(f"{reason}; nothing was kept")
        return OutputWriteError(f"{reason} after {self.n_snapshots} snapshots, which are intact; "
                                "free space, then `mechgrok record --resume` continues the run")

    def _reserve(self) -> None:
        """Make sure the next snapshot's bytes can be written before HDF5 writes any of them
        (HDF5 cannot undo a write that fails half-way; outputs.reserve_space)."""
        reserve_space(self._lock, self._reserve_bytes)

    def _publish(self) -> None:
        if self._publish_from is not None:
            publish(self._publish_from, self.path, replace=self._replace)
            self._publish_from = None

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
        _flush(self._file)

    def close(self) -> None:
        """Close the file; a trajectory never published (no snapshot committed) is removed."""
        if self._publish_from is not None:
            _close_quietly(self._file)
        else:
            self._close_checked()
        _unlock(self._lock)
        if self._publish_from is not None:
            self._publish_from.unlink(missing_ok=True)

    def _close_checked(self) -> None:
        try:
            self._file.close()
        except (OSError, RuntimeError) as err:
            if is_write_failure(err):
                raise self._write_failure(err) from None
            raise

    def __enter__(self) -> "TrajectoryWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _write_schema(f: h5netcdf.File, config: RunConfig, task: TaskSplit, compression: bool) -> None:
    """Dimensions, empty variables with fill values, attributes and the resume group."""
    p, H = config.modulus, config.width
    packed = dict(compression="gzip", compression_opts=4, shuffle=True) if compression else {}
    f.dimensions = {"step": None, "neuron": H, "token": p, "train_pair": task.train_a.size}
    f.create_variable("step", ("step",), np.int64, chunks=(1024,), fillvalue=STEP_FILL)
    # step is a coordinate: without _FillValue xarray keeps it int64 (unwritten entries still read -1)
    del f._h5file["step"].attrs["_FillValue"]
    f.create_variable("neuron", ("neuron",), np.int64, data=np.arange(H))
    f.create_variable("token", ("token",), np.int64, data=np.arange(p))
    for name in WEIGHT_NAMES:
        f.create_variable(name, ("step", "neuron", "token"), np.float32, chunks=(1, H, p), fillvalue=np.nan, **packed)
    if config.bias:
        f.create_variable("b_in", ("step", "neuron"), np.float32, chunks=(64, H), fillvalue=np.nan)
        f.create_variable("b_out", ("step", "token"), np.float32, chunks=(64, p), fillvalue=np.nan)
    for name in METRIC_NAMES:
        f.create_variable(name, ("step",), np.float64, chunks=(1024,), fillvalue=np.nan)
    for name in ("train_a", "train_b", "train_label", "train_label_true"):
        f.create_variable(name, ("train_pair",), np.int64, data=getattr(task, name))
    noised = f.create_variable("train_noised", ("train_pair",), np.int8, data=task.train_noised.astype(np.int8))
    noised.attrs.update(flag_values=np.array([0, 1], np.int8), flag_meanings="clean noised")
    for name, (long_name, units) in VARIABLE_ATTRS.items():
        if name in f.variables:
            f.variables[name].attrs.update(long_name=long_name, units=units)
    n_flat = 2 * p * H + H + H * p + p
    resume = f.create_group("resume")
    resume.dimensions = {"slot": 2, "flat_param": n_flat, "memory_field": 3}
    resume.create_variable("slot_step", ("slot",), np.int64, data=np.full(2, -1))
    # written now so that their space is allocated before any snapshot (see TrajectoryWriter._reserve)
    resume.create_variable("adam_m", ("slot", "flat_param"), np.float32, data=np.zeros((2, n_flat), np.float32))
    resume.create_variable("adam_v", ("slot", "flat_param"), np.float32, data=np.zeros((2, n_flat), np.float32))
    resume.create_variable("memory", ("slot", "memory_field"), np.float64, data=np.zeros((2, 3)))
    resume.attrs["memory_fields"] = "best_val_acc best_val_step saturation_step"
    f.attrs.update(_config_attrs(config))
    f.attrs.update(dict(
        saturation_step=-1, final_step=-1, stop_reason="", n_snapshots=0,
        format_version=FORMAT_VERSION, mechgrok_version=_mechgrok_version(),
        torch_version=str(torch.__version__), created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        run_id=uuid.uuid4().hex, compression="gzip" if compression else "none",
        Conventions="CF-1.8",
        title="mechgrok trajectory: weight snapshots of an MLP trained on (a + b) mod p",
        conventions="W_a[step, neuron, token]: input weight of neuron from token a; entries past n_snapshots are "
                    "not data (step -1, weights NaN)",
    ))


def _flush(f: h5netcdf.File) -> None:
    # h5netcdf's flush() only writes its own attributes; h5py's writes HDF5's caches to disk
    f.flush()
    f._h5file.flush()


def _close_quietly(f: h5netcdf.File | None) -> None:
    """Close after a failure: errors from flushing a broken file are not news."""
    if f is None:
        return
    try:
        f.close()
    except Exception:  # noqa: BLE001 - the failure that brought us here is the one reported
        pass


def _lock_for_writing(file: Path, name: Path) -> int:
    """An fd of `file` holding an exclusive POSIX record lock, or TrajectoryError when
    another process is writing `name`."""
    fd = os.open(file, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise TrajectoryError(f"{name}: another process is recording into it; wait for it to end") from None
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the descriptor releases its lock


def attr_int(value) -> int:
    """An integer attribute, whether stored as a scalar or (netCDF style) a 1-element array."""
    return int(np.asarray(value).reshape(-1)[0])


def attr_float(value) -> float:
    """A float attribute, whether stored as a scalar or (netCDF style) a 1-element array."""
    return float(np.asarray(value).reshape(-1)[0])


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
    """Raise FileNotFoundError/TrajectoryError with a one-line reason naming the file and the
    variable or attribute, unless `path` is an HDF5 file holding a readable mechgrok
    trajectory: known format version, weights as (step, neuron, token) datasets of the
    recorded shape, dimension names as written, and 0 <= n_snapshots <= entries on file."""
    path = Path(path)
    check_readable_input(path)
    try:
        is_hdf5 = h5py.is_hdf5(path)
    except OSError as err:
        raise TrajectoryError(f"{path}: cannot be read ({err})") from None
    if not is_hdf5:
        raise TrajectoryError(f"{path}: not an HDF5 file")
    try:
        with open(path, "rb") as handle, h5py.File(handle, "r") as f:
            _check_layout(f, path)
    except TrajectoryError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as err:
        raise TrajectoryError(f"{path}: unreadable or truncated HDF5 file ({str(err).splitlines()[0]})") from None


def _check_layout(f: h5py.File, path: Path) -> None:
    missing = [name for name in (*WEIGHT_NAMES, "step") if name not in f]
    if missing:
        raise TrajectoryError(f"{path}: not a mechgrok trajectory (missing {', '.join(missing)})")
    missing = [name for name in REQUIRED_ATTRS if name not in f.attrs]
    if missing:
        raise TrajectoryError(f"{path}: not a mechgrok trajectory (attribute {missing[0]!r} missing)")
    values = {}
    for name in REQUIRED_ATTRS:
        try:
            values[name] = attr_int(f.attrs[name])
        except (TypeError, ValueError, IndexError):
            raise TrajectoryError(f"{path}: attribute {name!r} is not an integer ({f.attrs[name]!r})") from None
    version, n, p, H = values["format_version"], values["n_snapshots"], values["modulus"], values["width"]
    if version > FORMAT_VERSION or version < 1:
        raise TrajectoryError(f"{path}: format version {version} is not one this mechgrok reads (1 to {FORMAT_VERSION})")
    if p < 2 or H < 1:
        raise TrajectoryError(f"{path}: attributes modulus {p} and width {H} describe no model")
    if n < 0:
        raise TrajectoryError(f"{path}: attribute 'n_snapshots' is {n}, below 0")
    expected_dims = {"step": ("step",), **{name: ("step", "neuron", "token") for name in WEIGHT_NAMES}}
    for name, dims in expected_dims.items():
        obj = f[name]
        if not isinstance(obj, h5py.Dataset):
            raise TrajectoryError(f"{path}: {name} is a {type(obj).__name__.lower()}, not a dataset")
        if name in WEIGHT_NAMES and (obj.ndim != 3 or obj.shape[1:] != (H, p) or obj.shape[0] < n):
            raise TrajectoryError(f"{path}: {name} has shape {obj.shape}, expected ({n}+, {H}, {p}) (step, neuron, token)")
        if obj.ndim != len(dims) or obj.shape[0] < n:
            raise TrajectoryError(f"{path}: {name} has shape {obj.shape}, expected at least the {n} committed snapshots")
        found = _dimension_names(f, obj)
        if found is None:
            raise TrajectoryError(f"{path}: {name} has no netCDF dimensions (not written by h5netcdf/netCDF)")
        if found != dims:
            raise TrajectoryError(f"{path}: {name} has dimensions {found}, expected {dims}")


def _dimension_names(f: h5py.File, dataset: h5py.Dataset) -> tuple[str, ...] | None:
    """The netCDF dimension names of a dataset (its attached dimension scales), or None."""
    if dataset.attrs.get("CLASS") == b"DIMENSION_SCALE":  # a coordinate is its own dimension
        return (dataset.name.lstrip("/"),) if dataset.ndim == 1 else None
    if "DIMENSION_LIST" not in dataset.attrs:
        return None
    names = []
    for axis in range(dataset.ndim):
        scales = list(dataset.dims[axis].values())
        if not scales:
            return None
        names.append(scales[0].name.lstrip("/"))
    return tuple(names)


def read_config(path: str | os.PathLike) -> RunConfig:
    """The RunConfig a trajectory file was recorded with."""
    check_trajectory_file(path)
    with open(path, "rb") as handle, h5py.File(handle, "r") as f:
        return config_from_attrs(f.attrs, path)


@dataclasses.dataclass(frozen=True)
class RecordedProgress:
    """What a trajectory holds so far: its committed steps with their validation accuracy,
    the final step (-1 while recording), and the latest optimizer checkpoint's step and
    stopping-rule memory (best_val_step; -1 without a checkpoint)."""

    steps: np.ndarray
    val_acc: np.ndarray
    final_step: int
    checkpoint_step: int
    best_val_step: int

    @property
    def last_step(self) -> int:
        return int(self.steps[-1]) if self.steps.size else -1


def recorded_progress(path: str | os.PathLike) -> RecordedProgress:
    """Read a trajectory's RecordedProgress (see check_trajectory_file for the errors)."""
    check_trajectory_file(path)
    with open(path, "rb") as handle, h5py.File(handle, "r") as f:
        n = attr_int(f.attrs["n_snapshots"])
        steps = np.asarray(f["step"][:n])
        slot_steps = np.asarray(f["resume"]["slot_step"][:]) if "resume" in f else np.full(2, -1)
        usable = [(step, slot) for slot, step in enumerate(slot_steps) if step >= 0 and step in steps]
        checkpoint_step, best_val_step = -1, -1
        if usable:
            checkpoint_step, slot = max(usable)
            best_val_step = int(f["resume"]["memory"][slot][1])
        return RecordedProgress(steps, np.asarray(f["val_acc"][:n]), attr_int(f.attrs.get("final_step", -1)),
                                int(checkpoint_step), best_val_step)


def is_complete(path: str | os.PathLike, config: RunConfig | None = None) -> bool:
    """True when the trajectory's recording has ended (it holds its final snapshot) and,
    given `config`, that config's step cap and stopping rule would have ended it too."""
    progress = recorded_progress(path)
    final = progress.final_step
    if final < 0 or config is None:
        return final >= 0
    return (final >= config.steps or float(progress.val_acc[-1]) >= config.stop_val_acc
            or final - progress.best_val_step >= config.patience)


def open_trajectory(path: str | os.PathLike, chunks: dict | None = None) -> xr.Dataset:
    """Open a trajectory as a lazy xarray.Dataset (nothing is read until asked; pass
    `chunks`, e.g. {"step": 64}, for dask arrays). Only committed snapshots are shown.

    Live reading: each call reads the file afresh, through its own file object, so HDF5
    never hands back an older view that this process still holds. A file still recording
    is read into memory at once (its index changes under a lazy reader) and the read is
    retried when it catches the recording mid-flush; the Dataset shows the snapshots
    committed when it was opened; open it again to see later ones."""
    path = Path(path)
    seen_finished = False  # a read torn by a recording's last writes is retried once after it ends
    for attempt in range(LIVE_READ_ATTEMPTS):
        try:
            return _open_committed(path, chunks, trust_nan=attempt >= LIVE_NAN_RETRIES)
        except (TrajectoryError, _TornRead) as err:
            finished = not _is_recording(path)
            if attempt == LIVE_READ_ATTEMPTS - 1 or (finished and seen_finished):
                if isinstance(err, TrajectoryError):
                    raise
                raise TrajectoryError(f"{path}: could not be read consistently while it records ({err}); try again") from None
            seen_finished = finished
            if not finished:
                time.sleep(LIVE_READ_PAUSE)
    raise AssertionError("unreachable")


LIVE_READ_ATTEMPTS = 40
LIVE_READ_PAUSE = 0.05  # seconds; a recording's flush takes milliseconds
LIVE_NAN_RETRIES = 3  # NaN weights that persist this long are the run's own (a diverged run), not a torn read


class _TornRead(Exception):
    """A read of a file that is being written saw a moment between two of its writes."""


def _open_committed(path: Path, chunks: dict | None, trust_nan: bool = False) -> xr.Dataset:
    check_trajectory_file(path)
    handle = open(path, "rb")
    try:
        ds = xr.open_dataset(handle, engine="h5netcdf", chunks=None if _is_recording(path) else chunks)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        handle.close()
        raise TrajectoryError(f"{path}: cannot be opened as netCDF ({str(err).splitlines()[0]})") from None
    n = attr_int(ds.attrs["n_snapshots"])
    if ds.sizes["step"] != n:
        ds = ds.isel(step=slice(0, n))
    if attr_int(ds.attrs.get("final_step", 0)) < 0:
        try:
            ds = ds.load()
        except (OSError, RuntimeError, ValueError, KeyError) as err:
            raise _TornRead(str(err)) from None
        finally:
            ds.close()
            handle.close()
        if not trust_nan and any(np.isnan(ds[name].values).any() for name in WEIGHT_NAMES):
            raise _TornRead("unwritten entries among committed snapshots")
        if chunks is not None:
            ds = ds.chunk(chunks)
    else:
        close_store = ds._close

        def close() -> None:
            if close_store is not None:
                close_store()
            handle.close()

        ds.set_close(close)
    if (ds["step"].values < 0).any():
        ds.close()
        raise TrajectoryError(f"{path}: a committed snapshot has no step (step -1); the file is damaged")
    ds.attrs["source"] = str(path)
    return ds


def _is_recording(path: Path) -> bool:
    """True when `path` looks like a trajectory whose recording has not ended."""
    try:
        with open(path, "rb") as handle, h5py.File(handle, "r") as f:
            return attr_int(f.attrs.get("final_step", -1)) < 0
    except Exception:  # noqa: BLE001 - caught mid-flush: assume it is still being written
        return True


def trajectory_identity(ds: xr.Dataset) -> str:
    """Which recording a trajectory Dataset is: its `run_id` (a random id written when the
    file is created), or for files without one (format 1, or a Dataset made in memory) a
    hash of its attributes, steps and last snapshot's weights. Never a time or a name alone."""
    run_id = ds.attrs.get("run_id")
    if run_id:
        return str(run_id)
    digest = hashlib.sha1()
    for key in sorted(k for k in ds.attrs if k != "source"):
        digest.update(f"{key}={ds.attrs[key]!r};".encode())
    if "step" in ds.coords and ds.sizes.get("step", 0):
        digest.update(np.ascontiguousarray(ds["step"].values).tobytes())
        for name in WEIGHT_NAMES:
            if name in ds:
                digest.update(np.ascontiguousarray(ds[name].isel(step=-1).values).tobytes())
    return "sha1:" + digest.hexdigest()
