"""Writing trajectories: create, append, commit, resume (the format is reader.py's; no torch).

Each snapshot's bytes are reserved, its data written and flushed, and only then is it
committed (`step` written, `n_snapshots` raised, flushed again): a reader, or a recording
killed or starved of disk at any moment, sees every committed snapshot intact; a snapshot
half-written when the process died is beyond `n_snapshots` and is dropped on resume.
Optimizer state is checkpointed at some snapshots only (the recorder's policy); a resume
restarts from the latest checkpoint and, training being deterministic, regenerates the
snapshots after it that are already on file without writing them again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path

import h5netcdf
import numpy as np

from mechgrok.config import RunConfig, installed_version
from mechgrok.errors import InvalidOptionError, OutputWriteError, TrajectoryError
from mechgrok.models.layout import (
    DIMENSION_NAMES,
    PARAM_SHAPES,
    TABLE_VARIABLES,
    model_shapes,
    n_params,
)
from mechgrok.store.outputs import (
    check_output,
    check_space,
    lock_for_writing,
    partial_path,
    publish,
    remove_stale_partials,
    reserve_space,
    unlock,
    write_failure,
    write_failures_reported,
)
from mechgrok.store.reader import (
    FORMAT_VERSION,
    METRIC_NAMES,
    STEP_FILL,
    VARIABLE_ATTRS,
    WEIGHT_NAMES,
    attr_int,
    check_trajectory_file,
    config_from_attrs,
)
from mechgrok.store.slots import (
    Checkpoint,
    SavedState,
    create_slots,
    latest_slot,
    read_slot,
    write_slot,
)
from mechgrok.task import TaskSplit


def _config_attrs(config: RunConfig) -> dict:
    attrs = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        attrs[field.name] = (
            np.asarray(value, dtype=np.float64)
            if field.name == "betas"
            else (int(value) if isinstance(value, bool) else "off" if value is None else value)
        )
    return attrs


ACCURACY_NAMES = ("train_acc", "train_acc_true", "val_acc")
MAX_STEP = 2**63 - 1  # steps are stored as int64


def check_step(step: int, where: Path | str) -> None:
    """A step the file can hold: a whole number in 0..2^63 - 1 (InvalidOptionError)."""
    if not 0 <= step <= MAX_STEP:
        raise InvalidOptionError(
            f"{where}: step {step} is outside 0..2^63-1, which a trajectory stores"
        )


def snapshot_bytes(p: int, H: int, model_floats: int = 0) -> int:
    """Bytes one snapshot of modulus p and width H adds to a trajectory (weights, biases,
    metrics, step; `model_floats`: a transformer's parameters and table variables)."""
    return 4 * (3 * H * p + H + p + model_floats) + 8 * (len(METRIC_NAMES) + 1)


BIAS_CHUNK_STEPS = 64  # b_in, b_out: HDF5 chunks of this many snapshots
METRIC_CHUNK_STEPS = 1024  # step and the metrics
METADATA_BYTES = 256 << 10  # HDF5's own: superblock, headers, attributes, chunk index nodes


def chunk_bytes(p: int, H: int, model_floats: int = 0) -> int:
    """What a new chunk of every per-step variable allocates at once (the first snapshot's
    weights, and the bias and metric chunks that it opens)."""
    return (
        4 * (3 * H * p + model_floats)
        + 4 * BIAS_CHUNK_STEPS * (H + p)
        + 8 * METRIC_CHUNK_STEPS * (len(METRIC_NAMES) + 1)
    )


def trajectory_bytes(
    p: int,
    H: int,
    n_snapshots: int,
    n_train: int = 0,
    resumable: bool = False,
    model_floats: int = 0,
) -> int:
    """The most a trajectory of `n_snapshots` takes on disk (uncompressed, biases on): the
    weights, the bias and metric chunks rounded up to whole chunks, the split (`n_train`
    pairs), the resume slots, and HDF5's metadata."""

    def whole(rows: int) -> int:
        return -(-n_snapshots // rows) * rows

    n_flat = 3 * p * H + H + p + model_floats
    return (
        n_snapshots * 4 * (3 * H * p + model_floats)
        + whole(BIAS_CHUNK_STEPS) * 4 * (H + p)
        + whole(METRIC_CHUNK_STEPS) * 8 * (len(METRIC_NAMES) + 1)
        + 41 * n_train
        + (16 * n_flat if resumable else 0)
        + METADATA_BYTES
    )


class TrajectoryWriter:
    """Streams one run's snapshots into a trajectory file (see module docstring).

    A new trajectory is written aside (outputs.partial_path) and takes its name when its
    first snapshot is committed, so a run that fails before that leaves nothing behind and
    `force` never loses the old file to a run that does not start. An exclusive POSIX record
    lock (fcntl.lockf; HDF5's own flock-based locking is off so readers can watch) keeps a
    second writer out. Before each snapshot its bytes are reserved on disk (posix_fallocate),
    so a full disk or file-size limit stops the run before HDF5 writes anything, leaving
    every committed snapshot intact and the file resumable."""

    def __init__(
        self,
        file: h5netcdf.File,
        path: Path,
        config: RunConfig | None,
        lock: int,
        publish_from: Path | None = None,
        replace: bool = False,
        publish_at_finish: bool = False,
    ):
        self._file = file
        self.path = path
        self.config = config  # None for a trajectory of an outside run (see create_external)
        self._lock = lock
        self._publish_from, self._replace = publish_from, replace
        self._publish_at_finish = publish_at_finish
        self._pending_config: RunConfig | None = None
        self.n_snapshots = attr_int(file.attrs["n_snapshots"])
        self.last_step = (
            int(file.variables["step"][self.n_snapshots - 1]) if self.n_snapshots else -1
        )
        self._checkpoints = 0
        # Appends go straight to the h5py datasets: h5netcdf's per-write checks cost ~1 ms each.
        h5 = file._h5file
        self._along_step = {
            name: h5[name]
            for name in file.variables
            if file.variables[name].dimensions[:1] == ("step",)
        }
        if "model" in file.groups:  # a transformer's parameters, keyed "model/<name>"
            self._along_step.update(
                {f"model/{name}": h5["model"][name] for name in file.groups["model"].variables}
            )
        self._resume = (
            {name: h5["resume"][name] for name in ("adam_m", "adam_v", "memory", "slot_step")}
            if "resume" in h5
            else None
        )
        self.bias = "b_in" in self._along_step
        self._curve_names = [
            name for name in self._along_step if name not in (*METRIC_NAMES, "step")
        ]
        p, H = file.dimensions["token"].size, file.dimensions["neuron"].size
        model_floats = _model_floats(self._along_step)
        # the chunks a snapshot may open, another snapshot, and room for HDF5's metadata
        self._reserve_bytes = (
            chunk_bytes(p, H, model_floats) + snapshot_bytes(p, H, model_floats) + METADATA_BYTES
        )

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        config: RunConfig,
        task: TaskSplit,
        force: bool = False,
        compression: bool = False,
    ) -> TrajectoryWriter:
        """Start a new trajectory of a mechgrok run at `path` (published with its first
        snapshot). Refuses an existing path unless `force`, and never replaces a file that is
        not a trajectory. `compression`: deflate + shuffle on the weights."""
        shapes = model_shapes(config)
        n_flat = (
            3 * config.modulus * config.width + config.width + config.modulus
            if shapes is None
            else n_params(shapes)
        )
        extra_bytes = 41 * task.train_a.size + 16 * n_flat

        def schema(f: h5netcdf.File) -> None:
            _write_common_schema(f, config.modulus, config.width, config.bias, compression, shapes)
            _write_run_schema(f, config, task, n_flat)

        return cls._create(
            Path(path),
            config,
            config.modulus,
            config.width,
            schema,
            extra_bytes,
            force,
            model_floats=config_model_floats(config),
        )

    @classmethod
    def create_external(
        cls,
        path: str | os.PathLike,
        modulus: int,
        width: int,
        bias: bool,
        attrs: dict,
        force: bool = False,
        compression: bool = False,
        publish_at_finish: bool = False,
        shapes: dict[str, tuple[int, ...]] | None = None,
    ) -> TrajectoryWriter:
        """Start a trajectory of a run trained outside mechgrok (your own loop, an import):
        the same schema without the split and the resume group; `attrs` (strings, numbers,
        numeric arrays) are stored as attributes, next to `origin`. `publish_at_finish`: the
        file takes its name only when `finish` marks it complete (an import: one that is
        interrupted leaves nothing), not with its first snapshot (a live loop). `shapes`: a
        transformer's parameter shapes (models.layout), stored with each snapshot."""

        def schema(f: h5netcdf.File) -> None:
            _write_common_schema(f, modulus, width, bias, compression, shapes)
            f.attrs.update(modulus=int(modulus), width=int(width), bias=int(bias))
            f.attrs.update({str(key): value for key, value in attrs.items()})

        model_floats = 0 if shapes is None else n_params(shapes) + _table_floats(shapes, width)
        return cls._create(
            Path(path),
            None,
            modulus,
            width,
            schema,
            0,
            force,
            publish_at_finish,
            model_floats=model_floats,
        )

    @classmethod
    def _create(
        cls,
        path: Path,
        config: RunConfig | None,
        p: int,
        H: int,
        schema,
        extra_bytes: int,
        force: bool,
        publish_at_finish: bool = False,
        model_floats: int = 0,
    ) -> TrajectoryWriter:
        check_output(path, "trajectory", force=force)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            check_space(
                path.parent,
                extra_bytes
                + chunk_bytes(p, H, model_floats)
                + snapshot_bytes(p, H, model_floats)
                + METADATA_BYTES,
            )
        except OSError as err:
            raise write_failure(path, err) from None
        remove_stale_partials(path)
        partial = partial_path(path)
        f, lock = None, None

        def clean_up() -> None:
            _close_quietly(f)
            unlock(lock)
            partial.unlink(missing_ok=True)

        with write_failures_reported(path, cleanup=clean_up):
            f = h5netcdf.File(partial, "w", locking=False)  # readers may open it while it records
            lock = lock_for_writing(partial, path)
            schema(f)
            _flush(f)
        return cls(
            f,
            path,
            config,
            lock,
            publish_from=partial,
            replace=path.exists(),
            publish_at_finish=publish_at_finish,
        )

    @classmethod
    def reopen(cls, path: str | os.PathLike) -> tuple[TrajectoryWriter, SavedState | None]:
        """Open an unfinished trajectory to continue it. Returns the writer and the state at its
        latest checkpoint (None when it has no snapshot yet); drops a half-written snapshot."""
        path = Path(path)
        check_trajectory_file(path)
        lock = lock_for_writing(path, path)
        f = None

        def clean_up() -> None:
            _close_quietly(f)
            unlock(lock)

        with write_failures_reported(path, cleanup=clean_up):
            f = h5netcdf.File(path, "a", locking=False)
            config = config_from_attrs(f.attrs, path)
            writer = cls(f, path, config, lock)
            n = writer.n_snapshots
            state = writer._read_latest_state() if n else None  # refusals come before any change
            if f.dimensions["step"].size != n:
                for dataset in writer._along_step.values():
                    dataset.resize(n, axis=0)
        return writer, state

    def _read_latest_state(self) -> SavedState:
        f, cfg = self._file, self.config
        assert cfg is not None  # only mechgrok's own runs are resumed
        committed = np.asarray(f.variables["step"][: self.n_snapshots])
        latest = latest_slot(np.asarray(f["resume"].variables["slot_step"][:]), committed)
        if latest is None:
            raise TrajectoryError(
                f"{self.path}: no optimizer checkpoint among its snapshots; cannot resume"
            )
        step, slot = latest
        index = int(np.flatnonzero(committed == step)[0])
        self._checkpoints = slot + 1
        if "model" in f.groups:  # a transformer continues from its parameters
            model = f.groups["model"].variables
            weights = {name: np.asarray(model[name][index]) for name in model}
            return SavedState(step, index, weights, read_slot(f["resume"].variables, slot))
        weights = {name: np.asarray(f.variables[name][index]) for name in WEIGHT_NAMES}
        for name, size in (("b_in", cfg.width), ("b_out", cfg.modulus)):
            weights[name] = (
                np.asarray(f.variables[name][index]) if cfg.bias else np.zeros(size, np.float32)
            )
        return SavedState(step, index, weights, read_slot(f["resume"].variables, slot))

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

    def write_snapshot(
        self,
        step: int,
        curves: dict[str, np.ndarray],
        metrics: dict[str, float] | None = None,
        checkpoint: Checkpoint | None = None,
        saturation: bool = False,
        final_reason: str | None = None,
    ) -> None:
        """Write one snapshot after the last on file, then commit it: the data is flushed to
        disk before `step` and `n_snapshots` name it. `curves`: W_a, W_b, W_out (neuron,
        token), and b_in, b_out where the file has biases; for a transformer also its
        parameters as "model/<name>" and its table variables (models.layout); `metrics`
        missing from the dict are stored as NaN. Raises OutputWriteError (file intact, resumable) when the disk is full."""
        check_step(step, self.path)
        if step <= self.last_step:
            raise InvalidOptionError(
                f"{self.path}: snapshot at step {step} is not after the last on file ({self.last_step})"
            )
        metrics = metrics or {}
        for name, value in metrics.items():
            if name in ACCURACY_NAMES and not (0 <= value <= 1 or np.isnan(value)):
                raise InvalidOptionError(
                    f"{self.path}: {name} {value} at step {step} is not in 0..1"
                )
        self._check_file_is_ours()
        with self._write_failures_reported():
            self._reserve()
            f, i, data = self._file, self.n_snapshots, self._along_step
            self._apply_pending_config()
            for dataset in data.values():
                dataset.resize(i + 1, axis=0)
            for name in self._curve_names:
                data[name][i] = curves[name]
            for name in METRIC_NAMES:
                data[name][i] = metrics.get(name, np.nan)
            if checkpoint is not None:
                self._write_checkpoint(step, checkpoint)
            self._flush()
            data["step"][i] = step  # the commit: step names the snapshot, n_snapshots counts it
            if saturation:
                f.attrs["saturation_step"] = step
            if final_reason is not None:
                self._mark_final(step, final_reason)
            f.attrs["n_snapshots"] = i + 1
            self._flush()
        self.n_snapshots, self.last_step = i + 1, step
        if not self._publish_at_finish:
            self._publish()

    def write_split(self, train_a: np.ndarray, train_b: np.ndarray) -> None:
        """Record an outside run's training pairs (train_a, train_b on dim train_pair) as its
        source stored them; validation is every other pair. Before the first snapshot."""
        with self._write_failures_reported():
            self._file.dimensions["train_pair"] = len(train_a)
            for name, values in (("train_a", train_a), ("train_b", train_b)):
                variable = self._file.create_variable(
                    name, ("train_pair",), np.int64, data=np.asarray(values, np.int64)
                )
                variable.attrs.update(
                    long_name=VARIABLE_ATTRS[name][0], units=VARIABLE_ATTRS[name][1]
                )
            self._flush()

    def finish(self, reason: str) -> None:
        """Mark the last snapshot on file as the final one, with `reason` (outside runs)."""
        if self.n_snapshots == 0:
            return
        self._check_file_is_ours()
        with self._write_failures_reported():
            self._mark_final(self.last_step, reason)
            self._flush()
        self._publish()

    def end_at_last_snapshot(self, step: int, reason: str) -> None:
        """A resumed run whose stopping rule ends it at the last step on file: mark it final."""
        if step != self.last_step:
            raise ValueError(
                f"{self.path}: step {step} is not the last step on file ({self.last_step})"
            )
        with self._write_failures_reported():
            self._apply_pending_config()
        self.finish(reason)

    def _write_failures_reported(self) -> contextlib.AbstractContextManager[None]:
        """A failed write inside becomes this writer's one-line OutputWriteError."""
        return write_failures_reported(self.path, failure=self._write_failure)

    def _write_failure(self, err: BaseException) -> OutputWriteError:
        reason = write_failure(self.path, err)
        if self._publish_from is not None:
            return OutputWriteError(f"{reason}; nothing was kept")
        advice = (
            "free space, then resume the run ({resume})"
            if self.config is not None
            else "free space and record the rest into a new file"
        )
        return OutputWriteError(
            f"{reason} after {self.n_snapshots} snapshots, which are intact", remedy=advice
        )

    def _check_file_is_ours(self) -> None:
        """Raise OutputWriteError when the published file at `path` is no longer the one this
        writer holds (removed, or replaced by another process): writing on would report
        snapshots that no file keeps. One stat per snapshot."""
        if self._publish_from is not None:
            return
        own = os.fstat(self._lock)
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            named = None
        if named is None or (named.st_ino, named.st_dev) != (own.st_ino, own.st_dev):
            what = "removed" if named is None else "replaced by another file"
            raise OutputWriteError(
                f"{self.path} was {what} while this process recorded into it; its "
                f"{self.n_snapshots} snapshots went with the old file and this run stops",
                remedy="record it again into a path no other process writes",
            )

    def _reserve(self) -> None:
        """Make sure the next snapshot's bytes can be written before HDF5 writes any of them
        (HDF5 cannot undo a write that fails half-way; outputs.reserve_space)."""
        reserve_space(self._lock, self._reserve_bytes)

    def _publish(self) -> None:
        if self._publish_from is not None:
            publish(self._publish_from, self.path, replace=self._replace)
            self._publish_from = None

    def _mark_final(self, step: int, reason: str) -> None:
        self._file.attrs["final_step"] = step
        self._file.attrs["stop_reason"] = reason

    def _write_checkpoint(self, step: int, checkpoint: Checkpoint) -> None:
        """Optimizer state into the older of the two slots (slots.write_slot)."""
        assert self._resume is not None  # only mechgrok's own runs have checkpoints
        write_slot(self._resume, self._checkpoints % 2, step, checkpoint, self._flush)
        self._checkpoints += 1

    def _flush(self) -> None:
        _flush(self._file)

    def close(self) -> None:
        """Close the file; a trajectory never published (no snapshot committed) is removed."""
        if self._publish_from is not None:
            _close_quietly(self._file)
        else:
            self._close_checked()
        unlock(self._lock)
        if self._publish_from is not None:
            self._publish_from.unlink(missing_ok=True)

    def _close_checked(self) -> None:
        with self._write_failures_reported():
            self._file.close()

    def __enter__(self) -> TrajectoryWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _model_floats(along_step: dict) -> int:
    """Numbers per snapshot in a trajectory's variables beyond the MLP's curves and metrics."""
    core = {*WEIGHT_NAMES, "b_in", "b_out", *METRIC_NAMES, "step"}
    return sum(
        int(np.prod(dataset.shape[1:])) * dataset.dtype.itemsize // 4
        for name, dataset in along_step.items()
        if name not in core
    )


def _table_variables(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[str | None, str]]:
    """The table variables a model's snapshots carry: per-head ones only for a transformer."""
    heads = "blocks.0.attn.W_Q" in shapes
    return {name: spec for name, spec in TABLE_VARIABLES.items() if heads or spec[0] != "head"}


def _table_floats(shapes: dict[str, tuple[int, ...]], width: int) -> int:
    sizes = {"neuron": width, "head": shapes.get("blocks.0.attn.W_Q", (0,))[0]}
    return sum(
        (sizes[dim] if dim else 1) * (2 if dtype in ("int64", "float64") else 1)
        for dim, dtype in _table_variables(shapes).values()
    )


def config_model_floats(config: RunConfig) -> int:
    """model_floats (snapshot_bytes) of a run of `config`: 0 for the MLP."""
    shapes = model_shapes(config)
    return 0 if shapes is None else n_params(shapes) + _table_floats(shapes, config.width)


def _write_model_schema(f: h5netcdf.File, shapes: dict[str, tuple[int, ...]], packed: dict) -> None:
    """A model's parameters (group `model`, one variable per tensor with a leading step
    dimension: a transformer's named and laid out as models.layout says, other models' under
    their own names with dimensions <name>_<axis>) and its table variables (root)."""
    if "blocks.0.attn.W_Q" in shapes:
        f.dimensions["head"] = shapes["blocks.0.attn.W_Q"][0]
    for name, (dim, dtype) in _table_variables(shapes).items():
        fill = -1 if dtype == "int64" else np.nan
        if dim is None:  # per snapshot
            f.create_variable(name, ("step",), np.dtype(dtype), chunks=(1024,), fillvalue=fill)
            continue
        f.create_variable(
            name,
            ("step", dim),
            np.dtype(dtype),
            chunks=(64, f.dimensions[dim].size),
            fillvalue=fill,
        )
    group = f.create_group("model")
    variable_dims = {
        name: (
            [DIMENSION_NAMES[symbol] for symbol in PARAM_SHAPES[name]]
            if name in PARAM_SHAPES
            else [f"{name.replace('.', '_')}_{axis}" for axis in range(len(shape))]
        )
        for name, shape in shapes.items()
    }
    group.dimensions = {
        dim: size
        for name, shape in shapes.items()
        for dim, size in zip(variable_dims[name], shape)
        if dim not in ("neuron", "token", "head")
    }
    for name, shape in shapes.items():
        variable = group.create_variable(
            name,
            ("step", *variable_dims[name]),
            np.float32,
            chunks=(1, *shape),
            fillvalue=np.nan,
            **packed,
        )
        variable.attrs.update(long_name=f"parameter {name}", units="1")
    f.attrs.update(
        model_layout="W_a, W_b, b_in, W_out, b_out are effective curves read from the activation "
        "table; group model holds the parameters"
        + (" in TransformerLens's layout" if "blocks.0.attn.W_Q" in shapes else "")
    )


def _write_common_schema(
    f: h5netcdf.File,
    p: int,
    H: int,
    bias: bool,
    compression: bool,
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> None:
    """What every trajectory has: dimensions, the snapshot variables (empty, with fill values)
    and their CF attributes, and the bookkeeping attributes; a transformer's parameters
    when `shapes` gives them."""
    packed = dict(compression="gzip", compression_opts=4, shuffle=True) if compression else {}
    f.dimensions = {"step": None, "neuron": H, "token": p}
    f.create_variable("step", ("step",), np.int64, chunks=(1024,), fillvalue=STEP_FILL)
    # step is a coordinate: without _FillValue xarray keeps it int64 (unwritten entries still read -1)
    del f._h5file["step"].attrs["_FillValue"]
    f.create_variable("neuron", ("neuron",), np.int64, data=np.arange(H))
    f.create_variable("token", ("token",), np.int64, data=np.arange(p))
    for name in WEIGHT_NAMES:
        f.create_variable(
            name,
            ("step", "neuron", "token"),
            np.float32,
            chunks=(1, H, p),
            fillvalue=np.nan,
            **packed,
        )
    if bias:
        f.create_variable("b_in", ("step", "neuron"), np.float32, chunks=(64, H), fillvalue=np.nan)
        f.create_variable("b_out", ("step", "token"), np.float32, chunks=(64, p), fillvalue=np.nan)
    for name in METRIC_NAMES:
        f.create_variable(name, ("step",), np.float64, chunks=(1024,), fillvalue=np.nan)
    if shapes is not None:
        _write_model_schema(f, shapes, packed)
    _describe(f)
    f.attrs.update(
        dict(
            saturation_step=-1,
            final_step=-1,
            stop_reason="",
            n_snapshots=0,
            format_version=FORMAT_VERSION,
            mechgrok_version=installed_version("mechgrok"),
            torch_version=installed_version("torch"),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            run_id=uuid.uuid4().hex,
            compression="gzip" if compression else "none",
            Conventions="CF-1.8",
            title="mechgrok trajectory: weight snapshots of an MLP trained on (a + b) mod p",
            conventions="W_a[step, neuron, token]: input weight of neuron from token a; entries past n_snapshots are "
            "not data (step -1, weights NaN)",
        )
    )


def _write_run_schema(f: h5netcdf.File, config: RunConfig, task: TaskSplit, n_flat: int) -> None:
    """What a mechgrok run adds: its split and labels, the resume group (`n_flat` moments
    of each kind), its options."""
    f.dimensions["train_pair"] = task.train_a.size
    for name in ("train_a", "train_b", "train_label", "train_label_true"):
        f.create_variable(name, ("train_pair",), np.int64, data=getattr(task, name))
    noised = f.create_variable(
        "train_noised", ("train_pair",), np.int8, data=task.train_noised.astype(np.int8)
    )
    noised.attrs.update(flag_values=np.array([0, 1], np.int8), flag_meanings="clean noised")
    _describe(f)
    create_slots(f.create_group("resume"), n_flat)
    f.attrs.update(_config_attrs(config))


def _describe(f: h5netcdf.File) -> None:
    for name, (long_name, units) in VARIABLE_ATTRS.items():
        if name in f.variables:
            f.variables[name].attrs.update(long_name=long_name, units=units)


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
