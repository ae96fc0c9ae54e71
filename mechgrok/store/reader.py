"""The HDF5 trajectory format and its reader: schema, checks, live-safe opening (numpy,
h5py and xarray only; the writer, which needs torch, is trajectory_writer.py).

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
  `n_snapshots` (the committed count), `run_id` (the file's identity), `compression`,
  `format_version`, `mechgrok_version`, `torch_version`, `created`, `Conventions` (CF-1.8);
  `long_name` and `units` on every variable.
- group `resume`: AdamW moments and the stopping rule's memory at the latest two
  checkpointed snapshots (double-buffered, so a kill while writing one leaves the other).

Entries past `n_snapshots` are not data (step -1, NaN weights and metrics): readers here show
only committed snapshots. Format 1 (no run_id, zero fill values) is read as well.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import xarray as xr

from mechgrok.config import RunConfig
from mechgrok.errors import TrajectoryError
from mechgrok.store.netcdf_reader import dimension_names, open_netcdf
from mechgrok.store.outputs import check_readable_input, writer_pid
from mechgrok.store.slots import latest_slot, read_slot

FORMAT_VERSION = 2
METRIC_NAMES = ("train_loss", "train_acc", "train_acc_true", "val_loss", "val_acc")
WEIGHT_NAMES = ("W_a", "W_b", "W_out")
REQUIRED_ATTRS = ("modulus", "width", "n_snapshots", "format_version")
# attributes the writer owns: a run's own attributes (Recorder attrs) may not set them
RESERVED_ATTRS = (
    *REQUIRED_ATTRS,
    *("bias", "saturation_step", "final_step", "stop_reason", "run_id", "compression"),
    *("mechgrok_version", "torch_version", "created", "Conventions", "title", "conventions"),
    *("origin", "source"),
)
STEP_FILL = -1  # unwritten `step` entries read as -1, unwritten floats as NaN
# (long_name, units) of every variable; "1" is CF's unit of a dimensionless number
VARIABLE_ATTRS = {
    "step": ("optimizer updates applied before the snapshot", "1"),
    "neuron": ("hidden neuron index", "1"),
    "token": ("residue mod p (input token, or output class for W_out)", "1"),
    "W_a": ("input weight of each neuron from token a", "1"),
    "W_b": ("input weight of each neuron from token b", "1"),
    "W_out": ("output weight of each neuron to class token", "1"),
    "b_in": ("first-layer bias", "1"),
    "b_out": ("output bias", "1"),
    "train_loss": ("mean cross-entropy on the training labels used", "nats"),
    "train_acc": ("accuracy on the training labels used", "1"),
    "train_acc_true": ("accuracy on the true training labels", "1"),
    "val_loss": ("mean cross-entropy on the validation pairs", "nats"),
    "val_acc": ("accuracy on the validation pairs", "1"),
    "train_a": ("token a of each training pair", "1"),
    "train_b": ("token b of each training pair", "1"),
    "train_label": ("label trained on (noised where train_noised)", "1"),
    "train_label_true": ("true label (a + b) mod p", "1"),
    "train_noised": ("whether the training label was replaced by a wrong class", "1"),
    "additivity": (
        "share of the neuron's pre-activation variance over pairs that f(a) + g(b) explains",
        "1",
    ),
    "neuron_freq_2d": (
        "frequency whose 2D Fourier block holds most of the neuron's post-activation variance",
        "1",
    ),
    "neuron_freq_share": (
        "share of the neuron's post-activation variance in that frequency's block",
        "1",
    ),
    "attention_a": ("head's mean attention from '=' to token a", "1"),
    "attention_b": ("head's mean attention from '=' to token b", "1"),
}


def config_from_attrs(attrs, path: str | os.PathLike = "") -> RunConfig:
    """Rebuild the RunConfig a trajectory was recorded with from its attributes; a missing
    or malformed attribute is a TrajectoryError naming it."""
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(RunConfig):
        if field.name not in attrs and field.name in OPTIONS_ADDED_LATER:
            continue  # recorded before the option existed: its default (the paper's) is what ran
        if field.name not in attrs:
            raise TrajectoryError(
                f"{path}: attribute {field.name!r} missing; not a complete mechgrok trajectory"
            )
        value = attrs[field.name]
        try:
            if field.name == "betas":
                kwargs["betas"] = tuple(float(v) for v in np.asarray(value).ravel())
            elif field.type in ("bool", bool):
                kwargs[field.name] = bool(attr_int(value))
            elif field.type in ("int", int):
                kwargs[field.name] = attr_int(value)
            elif field.name == "stop_val_acc" and _text_attr(value) == "off":
                kwargs[field.name] = None
            elif field.type in ("float", float, "float | None"):
                kwargs[field.name] = attr_float(value)
            else:
                kwargs[field.name] = value.decode() if isinstance(value, bytes) else str(value)
        except (TypeError, ValueError, IndexError):
            raise TrajectoryError(
                f"{path}: attribute {field.name!r} is malformed ({value!r})"
            ) from None
    try:
        return RunConfig(**kwargs)
    except ValueError as err:
        raise TrajectoryError(f"{path}: its recorded options are invalid ({err})") from None


OPTIONS_ADDED_LATER = (
    "operation",
    "activation",
    "precision",
    "model",
    "d_model",
    "heads",
)  # files of earlier versions lack them


def _text_attr(value) -> str | None:
    """A string attribute's text (bytes decoded); None for numbers."""
    if isinstance(value, bytes):
        return value.decode()
    return value if isinstance(value, str) else None


def attr_int(value) -> int:
    """An integer attribute, whether stored as a scalar or (netCDF style) a 1-element array."""
    return int(np.asarray(value).reshape(-1)[0])


def attr_float(value) -> float:
    """A float attribute, whether stored as a scalar or (netCDF style) a 1-element array."""
    return float(np.asarray(value).reshape(-1)[0])


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
        raise TrajectoryError(
            f"{path}: unreadable or truncated HDF5 file ({str(err).splitlines()[0]})"
        ) from None


def _check_layout(f: h5py.File, path: Path) -> None:
    missing = [name for name in (*WEIGHT_NAMES, "step") if name not in f]
    if missing:
        raise TrajectoryError(f"{path}: not a mechgrok trajectory (missing {', '.join(missing)})")
    missing = [name for name in REQUIRED_ATTRS if name not in f.attrs]
    if missing:
        raise TrajectoryError(
            f"{path}: not a mechgrok trajectory (attribute {missing[0]!r} missing)"
        )
    values = {}
    for name in REQUIRED_ATTRS:
        try:
            values[name] = attr_int(f.attrs[name])
        except (TypeError, ValueError, IndexError):
            raise TrajectoryError(
                f"{path}: attribute {name!r} is not an integer ({f.attrs[name]!r})"
            ) from None
    version, n, p, H = (
        values["format_version"],
        values["n_snapshots"],
        values["modulus"],
        values["width"],
    )
    if version > FORMAT_VERSION or version < 1:
        raise TrajectoryError(
            f"{path}: format version {version} is not one this mechgrok reads (1 to {FORMAT_VERSION})"
        )
    if p < 2 or H < 1:
        raise TrajectoryError(f"{path}: attributes modulus {p} and width {H} describe no model")
    if n < 0:
        raise TrajectoryError(f"{path}: attribute 'n_snapshots' is {n}, below 0")
    expected_dims = {
        "step": ("step",),
        **{name: ("step", "neuron", "token") for name in WEIGHT_NAMES},
    }
    for name, dims in expected_dims.items():
        obj = f[name]
        if not isinstance(obj, h5py.Dataset):
            raise TrajectoryError(
                f"{path}: {name} is a {type(obj).__name__.lower()}, not a dataset"
            )
        if name in WEIGHT_NAMES and (obj.ndim != 3 or obj.shape[1:] != (H, p) or obj.shape[0] < n):
            raise TrajectoryError(
                f"{path}: {name} has shape {obj.shape}, expected ({n}+, {H}, {p}) (step, neuron, token)"
            )
        if obj.ndim != len(dims) or obj.shape[0] < n:
            raise TrajectoryError(
                f"{path}: {name} has shape {obj.shape}, expected at least the {n} committed snapshots"
            )
        found = dimension_names(f, obj)
        if found is None:
            raise TrajectoryError(
                f"{path}: {name} has no netCDF dimensions (not written by h5netcdf/netCDF)"
            )
        if found != dims:
            raise TrajectoryError(f"{path}: {name} has dimensions {found}, expected {dims}")
    steps = np.asarray(f["step"][:n])
    check_steps_increase(steps, path)
    saturation = attr_int(f.attrs.get("saturation_step", -1))
    if saturation >= 0 and saturation not in steps and n:
        raise TrajectoryError(
            f"{path}: attribute 'saturation_step' is {saturation}, not one of its recorded steps"
        )


def check_steps_increase(steps: np.ndarray, source: Path | str) -> None:
    """TrajectoryError unless the snapshots' steps strictly increase (a file or Dataset made
    by hand may repeat or reorder them; every analysis assumes step order)."""
    if steps.size > 1:
        bad = np.flatnonzero(np.diff(steps) <= 0)
        if bad.size:
            i = int(bad[0])
            raise TrajectoryError(
                f"{source}: steps do not increase (snapshot {i + 1} has step {int(steps[i + 1])} "
                f"after {int(steps[i])}); each snapshot needs a later step than the one before"
            )


def read_config(path: str | os.PathLike) -> RunConfig:
    """The RunConfig a trajectory file was recorded with."""
    check_trajectory_file(path)
    with open(path, "rb") as handle, h5py.File(handle, "r") as f:
        return config_from_attrs(f.attrs, path)


@dataclasses.dataclass(frozen=True)
class RecordedProgress:
    """What a trajectory holds so far: its committed steps with their validation accuracy,
    the final step (-1 while recording), and the latest optimizer checkpoint's step and
    stopping-rule memory (best_val_step, best_val_acc: the best validation accuracy at any
    check so far, not only at snapshots; -1 without a checkpoint)."""

    steps: np.ndarray
    val_acc: np.ndarray
    final_step: int
    checkpoint_step: int
    best_val_step: int
    best_val_acc: float = -1.0

    @property
    def last_step(self) -> int:
        return int(self.steps[-1]) if self.steps.size else -1


def recorded_progress(path: str | os.PathLike) -> RecordedProgress:
    """Read a trajectory's RecordedProgress (see check_trajectory_file for the errors)."""
    check_trajectory_file(path)
    with open(path, "rb") as handle, h5py.File(handle, "r") as f:
        n = attr_int(f.attrs["n_snapshots"])
        steps = np.asarray(f["step"][:n])
        checkpoint_step, best_val_step, best_val_acc = -1, -1, -1.0
        latest = (
            latest_slot(np.asarray(f["resume"]["slot_step"][:]), steps) if "resume" in f else None
        )
        if latest is not None:
            checkpoint_step, slot = latest
            memory = read_slot(f["resume"], slot)
            best_val_step, best_val_acc = memory.best_val_step, memory.best_val_acc
        return RecordedProgress(
            steps,
            np.asarray(f["val_acc"][:n]),
            attr_int(f.attrs.get("final_step", -1)),
            int(checkpoint_step),
            best_val_step,
            best_val_acc,
        )


def run_state(path: str | os.PathLike) -> str:
    """Where a trajectory's recording stands: "finished" (its final snapshot is written, with
    its stop reason), "recording" (a live process holds its write lock), or "interrupted"
    (neither: killed, stopped, or out of disk; `record --resume` continues it)."""
    if recorded_progress(path).final_step >= 0:
        return "finished"
    return "recording" if writer_pid(Path(path)) is not None else "interrupted"


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
                raise TrajectoryError(
                    f"{path}: could not be read consistently while it records ({err}); try again"
                ) from None
            seen_finished = finished
            if not finished:
                time.sleep(LIVE_READ_PAUSE)
    raise AssertionError("unreachable")


LIVE_READ_ATTEMPTS = 40
LIVE_READ_PAUSE = 0.05  # seconds; a recording's flush takes milliseconds
LIVE_NAN_RETRIES = (
    3  # NaN weights that persist this long are the run's own (a diverged run), not a torn read
)


class _TornRead(Exception):
    """A read of a file that is being written saw a moment between two of its writes."""


def _open_committed(path: Path, chunks: dict | None, trust_nan: bool = False) -> xr.Dataset:
    check_trajectory_file(path)
    live = _is_recording(path)
    handle = open(path, "rb")
    try:
        ds = open_netcdf(handle, chunks=None if live else chunks)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        handle.close()
        raise TrajectoryError(
            f"{path}: cannot be opened as netCDF ({str(err).splitlines()[0]})"
        ) from None
    n = attr_int(ds.attrs["n_snapshots"])
    if ds.sizes["step"] != n:
        ds = ds.isel(step=slice(0, n))
    if live:
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
        raise TrajectoryError(
            f"{path}: a committed snapshot has no step (step -1); the file is damaged"
        )
    ds.attrs["source"] = str(path)
    return ds


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _is_recording(path: Path) -> bool:
    """True when `path` looks like a trajectory whose recording has not ended. A file that
    is not HDF5, or an HDF5 file without a trajectory's final_step, is not one (no reader
    should wait on it); an HDF5 file that cannot be opened may be caught mid-flush."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # opening a FIFO would block
            return False
        with open(path, "rb") as handle:
            if handle.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
                return False
            handle.seek(0)
            with h5py.File(handle, "r") as f:
                return "final_step" in f.attrs and attr_int(f.attrs["final_step"]) < 0
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
