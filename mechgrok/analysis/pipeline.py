"""Assemble fourier + idealize over a trajectory into an xarray.Dataset, chunk by chunk.

Input: a trajectory path, or any Dataset with W_a, W_b, W_out on dims (step, neuron, token)
(biases and metrics optional). Output: per (step, neuron) Fourier structure and per step
summary statistics and idealized-model accuracies (names in ANALYSIS_VARIABLES below; the
definitions are in fourier.py and idealize.py and in README.md). Memory is bounded by one
chunk of snapshots; chunks can be spread over a dask.distributed cluster.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5netcdf
import h5py
import numpy as np
import xarray as xr
from threadpoolctl import threadpool_limits

from mechgrok.analysis import fourier
from mechgrok.analysis.idealize import IDEAL_VARIANTS, ideal_accuracies
from mechgrok.analysis.progress import (
    KEY_FREQS_RULE,
    check_key_frequencies,
    key_frequencies,
    real_model_measures,
)
from mechgrok.analysis.tables import PER_FREQUENCY, table_measures
from mechgrok.analysis.variables import variable_attrs
from mechgrok.config import (
    ANALYSIS_DEFAULTS,
    ANALYSIS_LIMITS,
    MIN_MODULUS,
    SATURATION_TRAIN_ACC,
    check_option,
    format_bytes,
    physical_memory_bytes,
)
from mechgrok.errors import InvalidOptionError, OutputExistsError, ResourceError, TrajectoryError
from mechgrok.operations import GroupView, group_view, operate, recorded_operation
from mechgrok.store.netcdf_reader import open_netcdf
from mechgrok.store.outputs import atomic_output, check_space, same_file
from mechgrok.store.reader import (
    attr_float,
    attr_int,
    check_steps_increase,
    open_trajectory,
    trajectory_identity,
)

ANALYSIS_FORMAT_VERSION = (
    4  # 2: keyed on the trajectory's run_id, CF attributes, compressed; 3: ipr_*;
)
# 4: ideal_acc_own, shuffled control over draws (+ _hi), progress measures, lead_steps absent when undefined
MIN_NEURONS_FOR_STATS = (
    5  # circular correlation, coherence and t statistics need this many neurons, else NaN
)
WEIGHTS = ("W_a", "W_b", "W_out")
IDEAL_NAMES = {
    "sq_cos": "ideal_acc",
    "sq_sq": "ideal_acc_sq_sq",
    "cos_cos": "ideal_acc_cos_cos",
    "phase_sum": "ideal_acc_phase_sum",
    "shuffled": "ideal_acc_shuffled",
    "shuffled_hi": "ideal_acc_shuffled_hi",
    "own": "ideal_acc_own",
}


@dataclass(frozen=True)
class AnalysisParams:
    """Thresholds of one analysis. None thresholds scale the paper's p = 97 values with the
    cosine's periodicity (p-1)/2: structured above 12 (p-1)/96, unstructured below 5 (p-1)/96."""

    threshold: float | None = None
    threshold_low: float | None = None
    grok_acc: float = ANALYSIS_DEFAULTS["grok_acc"]
    structure_acc: float = ANALYSIS_DEFAULTS["structure_acc"]
    chunk_steps: int = int(ANALYSIS_DEFAULTS["chunk_steps"])
    shuffle_draws: int = int(ANALYSIS_DEFAULTS["shuffle_draws"])
    key_freqs: tuple[int, ...] | None = (
        None  # None: chosen from the last snapshot (progress.key_frequencies)
    )

    def resolved(self, p: int) -> AnalysisParams:
        """Thresholds filled in for modulus p; raises ValueError on values outside
        config.ANALYSIS_LIMITS (NaN and infinities included), key frequencies outside
        1..(p-1)//2, or p < MIN_MODULUS."""
        if p < MIN_MODULUS:
            raise InvalidOptionError(
                f"modulus must be >= {MIN_MODULUS} for a Fourier analysis (p = {p} has fewer than two frequencies)"
            )
        for name in ANALYSIS_LIMITS:
            if getattr(self, name) is not None:
                check_option(name, getattr(self, name))
        threshold = 12 * (p - 1) / 96 if self.threshold is None else float(self.threshold)
        threshold_low = (
            5 * (p - 1) / 96 if self.threshold_low is None else float(self.threshold_low)
        )
        if threshold_low > threshold:
            raise InvalidOptionError(
                f"threshold_low {threshold_low} is above threshold {threshold}"
            )
        key_freqs = None if self.key_freqs is None else check_key_frequencies(self.key_freqs, p)
        return dataclasses.replace(
            self, threshold=threshold, threshold_low=threshold_low, key_freqs=key_freqs
        )


def neuron_structure(
    W_a: np.ndarray,
    W_b: np.ndarray,
    W_out: np.ndarray,
    threshold: float,
    threshold_low: float,
    sign: int = 1,
) -> dict[str, np.ndarray]:
    """Per-neuron Fourier structure of rows shaped (..., neuron, token); see fourier.py.
    Phases of W_b and W_out are read at W_a's dominant frequency (the paper's extraction;
    `phase_b_own`/`phase_out_own` are at their own). Square/cosine distances use W_a's
    frequency, the row's phase at it, and are measured with w in units of that amplitude.
    Frequencies `freq_*`, amplitudes `amp_*` and periodicities are each row's own; where the
    three frequencies disagree, `amp_b` is at W_b's frequency while `phase_b` is at W_a's.
    `sign` is the operation's phase law phi_out = phi_a + sign phi_b (-1: subtraction)."""
    p = W_a.shape[-1]
    F = {name: fourier.spectrum(rows) for name, rows in zip("a b out".split(), (W_a, W_b, W_out))}
    out: dict[str, np.ndarray] = {}
    for key, spec in F.items():
        out[f"freq_{key}"] = fourier.dominant_frequency(spec)
    freq = out["freq_a"]
    for key, spec in F.items():
        out[f"amp_{key}"] = fourier.amplitude_at(spec, out[f"freq_{key}"])
        out[f"periodicity_{key}"] = fourier.periodicity(spec)
        out[f"ipr_{key}"] = fourier.inverse_participation_ratio(spec)
        out[f"phase_{key}"] = fourier.phase_at(spec, freq)
    out["phase_b_own"] = fourier.phase_at(F["b"], out["freq_b"])
    out["phase_out_own"] = fourier.phase_at(F["out"], out["freq_out"])
    for key, rows in (("a", W_a), ("b", W_b)):
        phase = np.where(freq > 0, out[f"phase_{key}"], 0.0)
        theta = fourier.wave_angle(freq, phase, p)
        high, low = fourier.square_levels(rows, theta)
        scale = fourier.amplitude_at(F[key], freq)
        scale = np.where((freq > 0) & (scale > 0), scale, np.nan)
        offset = F[key][..., 0].real / p
        square = fourier.square_distance(rows, theta, freq, high, low, scale)
        cosine = fourier.cosine_distance(rows, theta, freq, scale, offset, scale)
        out[f"square_dist_{key}"] = square
        out[f"cosine_dist_{key}"] = cosine
        out[f"binarization_{key}"] = fourier.binarization(square, cosine)
        out[f"boundary_frac_{key}"] = np.where(
            freq > 0, fourier.boundary_fraction(rows, theta, high, low), np.nan
        )
    out["freq_agree"] = (freq > 0) & (out["freq_b"] == freq) & (out["freq_out"] == freq)
    out["phase_sum_error"] = fourier.wrap_angle(
        out["phase_out"] - out["phase_a"] - sign * out["phase_b"]
    )
    out["structured"] = (out["periodicity_a"] > threshold) & out["freq_agree"]
    out["unstructured"] = ~(
        out["periodicity_a"] >= threshold_low
    )  # dead and constant rows included
    return out


def _masked_stat(values: np.ndarray, mask: np.ndarray, reduce) -> np.ndarray:
    """reduce() over the neurons in `mask` (last axis); NaN with fewer than MIN_NEURONS_FOR_STATS."""
    enough = mask.sum(-1) >= MIN_NEURONS_FOR_STATS
    return np.where(enough, reduce(np.where(mask, values, np.nan)), np.nan)


def paired_t(differences: np.ndarray) -> np.ndarray:
    """Paired t statistic mean(d) / (sd(d) / sqrt(n)) over the last axis, NaNs ignored;
    NaN with fewer than MIN_NEURONS_FOR_STATS values or zero spread."""
    n = np.isfinite(differences).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(differences, -1) / n
        var = np.nansum((differences - mean[..., None]) ** 2, -1) / (n - 1)
        t = mean / np.sqrt(var / n)
    return np.where((n >= MIN_NEURONS_FOR_STATS) & (var > 0), t, np.nan)


def step_summary(neurons: dict[str, np.ndarray], sign: int = 1) -> dict[str, np.ndarray]:
    """Per-step statistics over the neuron axis (last) of `neuron_structure`'s output; r and
    r' correlate phi_out with phi_a + sign phi_b (the operation's law)."""
    structured = neurons["structured"]
    has_phase = np.isfinite(neurons["phase_a"])
    phase_sum = fourier.wrap_angle(neurons["phase_a"] + sign * neurons["phase_b"])

    def correlation(mask):
        r = fourier.circular_correlation(
            np.where(mask, phase_sum, np.nan), np.where(mask, neurons["phase_out"], np.nan)
        )
        return np.where(mask.sum(-1) >= MIN_NEURONS_FOR_STATS, r, np.nan)

    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", RuntimeWarning
        )  # all-NaN medians early in training are NaN by design
        periodicity_median = np.nanmedian(neurons["periodicity_a"], -1)
        binarization_median = np.nanmedian(neurons["binarization_a"], -1)
    return dict(
        r_all=correlation(has_phase),
        r_structured=correlation(structured),
        phase_sum_coherence=_masked_stat(
            neurons["phase_sum_error"], structured, lambda v: fourier.mean_resultant_length(v)
        ),
        n_structured=structured.sum(-1),
        n_unstructured=neurons["unstructured"].sum(-1),
        periodicity_median=periodicity_median,
        binarization_median=binarization_median,
        square_vs_cosine_t=paired_t(
            np.where(structured, neurons["square_dist_a"] - neurons["cosine_dist_a"], np.nan)
        ),
    )


def analyze_arrays(
    W_a: np.ndarray,
    W_b: np.ndarray,
    W_out: np.ndarray,
    params: AnalysisParams,
    b_in: np.ndarray | None = None,
    b_out: np.ndarray | None = None,
    real_accuracy: bool = True,
    steps: np.ndarray | None = None,
    activation: str = "relu",
    split: tuple[np.ndarray, np.ndarray] | None = None,
    sign: int = 1,
) -> dict[str, np.ndarray]:
    """Everything per (step, neuron) and per step for a chunk of snapshots (step, neuron,
    token), with `params` resolved. `real_accuracy` also scores the real model on all pairs
    (skipped when the trajectory's metrics already give it); `steps` seed the shuffled
    control; `split` (flat training pair indices a * p + b, labels used) is where the
    progress measures are evaluated (progress.py; None: all pairs). Tokens are in the order of
    the operation's group (operations.group_view) and `sign` is its law."""
    W_a, W_b, W_out = (np.asarray(w, dtype=np.float64) for w in (W_a, W_b, W_out))
    assert params.threshold is not None and params.threshold_low is not None  # resolved by analyze
    neurons = neuron_structure(W_a, W_b, W_out, params.threshold, params.threshold_low, sign)
    result = dict(neurons)
    result.update(step_summary(neurons, sign))
    own = {key: neurons[key] for key in ("freq_b", "freq_out", "phase_b_own", "phase_out_own")}
    ideal = ideal_accuracies(
        neurons["freq_a"],
        neurons["phase_a"],
        neurons["phase_b"],
        neurons["phase_out"],
        W_a.shape[-1],
        steps,
        shuffle_draws=params.shuffle_draws,
        own=own,
        sign=sign,
    )
    for variant in IDEAL_VARIANTS:
        result[IDEAL_NAMES[variant]] = ideal[variant]
    train_index, train_label = split if split is not None else (None, None)
    result.update(
        real_model_measures(
            W_a,
            W_b,
            W_out,
            b_in,
            b_out,
            activation,
            params.key_freqs,
            train_index,
            train_label,
            accuracy=real_accuracy,
            sign=sign,
        )
    )
    return result


def _chunk_from_file(
    path: str, start: int, stop: int, params: AnalysisParams, real_accuracy: bool
) -> dict[str, np.ndarray]:
    """Analyze snapshots [start, stop) of a trajectory file (runs on dask workers: one BLAS
    thread each, since the workers already share the node's cores)."""
    with open_trajectory(path) as ds, threadpool_limits(1, user_api="blas"):
        return _chunk_from_dataset(ds, start, stop, params, real_accuracy)


def _chunk_from_dataset(
    ds: xr.Dataset, start: int, stop: int, params: AnalysisParams, real_accuracy: bool
) -> dict[str, np.ndarray]:
    view = trajectory_group(ds)
    part = ds.isel(step=slice(start, stop))
    steps = part["step"].values if "step" in part.coords else np.arange(start, stop)
    activation = str(
        ds.attrs.get("activation", "relu")
    )  # of the real model; runs mechgrok trains are ReLU
    weights = weights_in_group_order(part, view)
    # a transformer's trajectory stores the whole model's accuracy on all pairs: the effective
    # curves' MLP is not the model
    stored_accuracy = "all_acc" in part
    result = analyze_arrays(
        params=params,
        real_accuracy=real_accuracy and not stored_accuracy,
        steps=steps,
        activation=activation,
        split=recorded_split(ds, view),
        sign=view.sign,
        **weights,
    )
    result.update(table_measures(part, weights, activation))
    if stored_accuracy and real_accuracy:
        result["all_acc"] = part["all_acc"].values
    return result


def trajectory_group(ds: xr.Dataset) -> GroupView:
    """How to read a trajectory's tokens: its operation's group (attribute `operation`; add
    for runs that do not say)."""
    try:
        return group_view(recorded_operation(ds.attrs), ds.sizes["token"])
    except ValueError as err:
        raise TrajectoryError(f"{ds.attrs.get('source', 'dataset')}: {err}") from None


def weights_in_group_order(part: xr.Dataset, view: GroupView) -> dict[str, Any]:
    """W_a, W_b, W_out (step, neuron, position) and b_in, b_out of a trajectory slice with their
    token axis in the group's order (mul, div: discrete-log order, token 0 left out)."""
    dims = {
        "W_a": ("step", "neuron", "token"),
        "W_b": ("step", "neuron", "token"),
        "W_out": ("step", "neuron", "token"),
        "b_in": ("step", "neuron"),
        "b_out": ("step", "token"),
    }
    arrays: dict[str, Any] = {
        name: part[name].transpose(*order).values if name in part else None
        for name, order in dims.items()
    }
    if view.n != part.sizes["token"] or not np.array_equal(view.order, np.arange(view.n)):
        for name in ("W_a", "W_b", "W_out", "b_out"):
            if arrays[name] is not None:
                arrays[name] = arrays[name][..., view.order]
    return arrays


def recorded_split(ds: xr.Dataset, view: GroupView) -> tuple[np.ndarray, np.ndarray] | None:
    """(flat training pair indices i * n + j over the group's positions, training labels used
    as positions) of a trajectory, or None when it records no split. Imported splits without
    labels were trained on the true answers."""
    if "train_a" not in ds or "train_b" not in ds:
        return None
    p = ds.sizes["token"]
    a, b = ds["train_a"].values.astype(np.int64), ds["train_b"].values.astype(np.int64)
    labels = (
        ds["train_label"].values.astype(np.int64)
        if "train_label" in ds
        else operate(view.operation, a, b, p)
    )
    position = np.full(p, -1)
    position[view.order] = np.arange(view.n)
    if (position[a] < 0).any() or (position[b] < 0).any() or (position[labels] < 0).any():
        raise TrajectoryError(
            f"{ds.attrs.get('source', 'dataset')}: its training pairs use residue 0, "
            f"which operation {view.operation} leaves out"
        )
    return position[a] * view.n + position[b], position[labels]


def _ordered_map(function, items: list, workers: int | None = None):
    """function(item) for each item, in order, computed by a few threads with at most
    2 x workers results in flight (memory stays bounded). numpy releases the GIL in its
    array loops, so on 2 cores two chunks at a time run ~1.4x faster than one."""
    workers = workers or min(2, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _validated(ds: xr.Dataset, source: str) -> int:
    missing = [name for name in WEIGHTS if name not in ds]
    if missing:
        raise TrajectoryError(
            f"{source}: missing {', '.join(missing)}; need W_a, W_b, W_out on dims (step, neuron, token)"
        )
    for name in WEIGHTS:
        if set(ds[name].dims) != {"step", "neuron", "token"}:
            raise TrajectoryError(
                f"{source}: {name} has dims {ds[name].dims}, expected (step, neuron, token)"
            )
    if "step" in ds.coords or "step" in ds:
        check_steps_increase(np.asarray(ds["step"].values), source)
    p = ds.sizes["token"]
    if p < MIN_MODULUS:
        raise TrajectoryError(
            f"{source}: modulus (token size) {p} < {MIN_MODULUS}; a Fourier analysis needs at least two frequencies"
        )
    return p


def _first_step(steps: np.ndarray, reached: np.ndarray) -> int:
    """First step where `reached` holds, -1 if never."""
    hits = np.flatnonzero(np.asarray(reached, dtype=bool))
    return int(steps[hits[0]]) if hits.size else -1


class _StreamedNeuronVariables:
    """Writes the (step, neuron) variables of an analysis into a netCDF file as they are
    computed, so memory holds at most one HDF5 chunk of steps (STREAM_CHUNK_STEPS), not the
    whole analysis. Analysis chunks are gathered until a storage chunk is full and each storage
    chunk is written once (rewriting a compressed chunk, and h5netcdf's per-write bookkeeping,
    made small writes cost ~6 ms each). Floats are stored as float32 (the statistics carry no
    more precision than that), booleans as CF flag variables (int8 with flag_values/
    flag_meanings) that xarray decodes back to bool; deflate + shuffle."""

    def __init__(self, path: Path, steps: np.ndarray, neurons: np.ndarray, sign: int = 1):
        self.path = path
        self.sign = sign
        self.file = h5netcdf.File(path, "w")
        self.file.dimensions = {"step": steps.size, "neuron": neurons.size}
        for name, values in (("step", steps), ("neuron", neurons)):
            variable = self.file.create_variable(name, (name,), values.dtype, data=values)
            variable.attrs.update(variable_attrs(name))
        self.rows = min(STREAM_CHUNK_STEPS, steps.size)
        self.pending: dict[str, list[np.ndarray]] = {}
        self.pending_start = 0
        self.pending_rows = 0

    def write(self, values: dict[str, np.ndarray]) -> None:
        """Add the rows of the next snapshots (chunks arrive in step order)."""
        for name, array in values.items():
            self.pending.setdefault(name, []).append(array)
        self.pending_rows += next(iter(values.values())).shape[0]
        if self.pending_rows >= self.rows:
            self._flush()

    def _flush(self) -> None:
        for name, parts in self.pending.items():
            array = np.concatenate(parts)
            stored = (
                array.astype(np.int8)
                if array.dtype == bool
                else (array.astype(np.float32) if array.dtype.kind == "f" else array)
            )
            if name not in self.file.variables:
                variable = self.file.create_variable(
                    name,
                    ("step", "neuron"),
                    stored.dtype,
                    chunks=(self.rows, stored.shape[1]),
                    **COMPRESSION,
                )
                variable.attrs.update(variable_attrs(name, self.sign, boolean=array.dtype == bool))
            self.file.variables[name][self.pending_start : self.pending_start + stored.shape[0]] = (
                stored
            )
        self.pending_start += self.pending_rows
        self.pending, self.pending_rows = {}, 0

    def finish(self, per_step: xr.Dataset) -> None:
        """Write what is pending, add the per-step variables and the attributes, then close."""
        self._flush()
        for dim, size in per_step.sizes.items():
            if dim not in self.file.dimensions:
                self.file.dimensions[dim] = size
        for coord_name, coord in per_step.coords.items():
            if coord_name not in self.file.variables:
                self.file.create_variable(
                    str(coord_name), coord.dims, coord.dtype, data=coord.values
                )
            self.file.variables[str(coord_name)].attrs.update(variable_attrs(str(coord_name)))
        for name, variable in per_step.data_vars.items():
            created = self.file.create_variable(
                name, variable.dims, variable.dtype, data=variable.values, **COMPRESSION
            )
            created.attrs.update(variable.attrs)
        self.file.attrs.update(per_step.attrs)
        self.file.close()

    def abandon(self) -> None:
        """Close after a failure (errors flushing a file that could not be written are not news)."""
        try:
            self.file.close()
        except Exception:  # noqa: BLE001 - the failure that brought us here is the one reported
            pass


COMPRESSION = dict(compression="gzip", compression_opts=4, shuffle=True)
READ_AT_ONCE_BYTES = 256 * 2**20  # trajectories up to this size are read into memory in one go
STREAM_CHUNK_STEPS = 64  # snapshots per HDF5 chunk of the streamed (step, neuron) variables


def analyze_dataset(
    ds: xr.Dataset,
    params: AnalysisParams = AnalysisParams(),
    source: str = "dataset",
    path: str | None = None,
    scheduler: str | None = None,
    stream_to: Path | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> xr.Dataset:
    """Analyze an open trajectory Dataset chunk by chunk (see module docstring). With `path`
    and `scheduler` (a dask.distributed address, or "local"), chunks are analyzed by workers
    that open the file themselves. With `stream_to`, the (step, neuron) variables go to that
    netCDF file as they are computed and the result is that file, opened lazily.
    `on_progress(done, total)` is called with the snapshots analyzed so far after each chunk."""
    _validated(ds, source)
    check_analysis_fits_in_memory(ds.sizes["token"], ds.sizes["neuron"], source)
    view = trajectory_group(ds)
    p = view.n  # the analysis's modulus: the size of the operation's group
    params = params.resolved(p)
    n_steps = ds.sizes["step"]
    if n_steps == 0:
        raise TrajectoryError(f"{source}: no snapshots to analyze")
    key_freqs_rule = KEY_FREQS_RULE if params.key_freqs is None else "given"
    if (
        params.key_freqs is None
    ):  # the paper reads them from the trained model: here the last snapshot
        last_weights = weights_in_group_order(ds.isel(step=[-1]), view)
        last = neuron_structure(  # type: ignore[call-arg]  # three weights unpacked
            *(last_weights[name][0] for name in WEIGHTS),
            params.threshold,
            params.threshold_low,
            view.sign,
        )
        params = dataclasses.replace(
            params, key_freqs=key_frequencies(last["freq_a"], last["structured"])
        )
    # the real model's accuracy on all pairs comes from the recorded metrics when they are
    # complete (mechgrok runs); otherwise (other loops, imports) it is scored from the weights
    has_metrics = all(name in ds for name in ("val_acc", "train_acc_true", "train_a")) and all(
        np.isfinite(ds[name].values).all() for name in ("val_acc", "train_acc_true")
    )
    bounds = [
        (start, min(start + params.chunk_steps, n_steps))
        for start in range(0, n_steps, params.chunk_steps)
    ]
    if scheduler is not None and path is not None:
        from mechgrok.distributed import map_on_cluster

        chunks = map_on_cluster(
            scheduler, _chunk_from_file, [(path, a, b, params, not has_metrics) for a, b in bounds]
        )
    else:
        # a trajectory that fits comfortably is read in one go (one HDF5 read per variable, not
        # one per chunk), a larger one chunk by chunk
        source_ds = ds.compute() if ds.nbytes <= READ_AT_ONCE_BYTES else ds
        chunks = _ordered_map(
            lambda bound: _chunk_from_dataset(source_ds, *bound, params, not has_metrics),  # type: ignore[call-arg]
            bounds,
        )
    steps = ds["step"].values if "step" in ds.coords or "step" in ds else np.arange(n_steps)
    neurons = ds["neuron"].values if "neuron" in ds.coords else np.arange(ds.sizes["neuron"])
    stream = (
        _StreamedNeuronVariables(stream_to, steps, neurons, view.sign)
        if stream_to is not None
        else None
    )
    per_step: dict[str, list] = {}
    per_neuron: dict[str, list] = {}
    per_frequency: dict[str, list] = {}
    # chunks run two at a time on threads: BLAS threads on top of them would oversubscribe the cores (1.6x slower here)
    blas_limit = threadpool_limits(1, user_api="blas")
    try:
        for (_, stop), chunk in zip(bounds, chunks):
            if on_progress is not None:
                on_progress(stop, n_steps)
            for frequency_name in PER_FREQUENCY:
                per_frequency.setdefault(frequency_name, []).append(chunk.pop(frequency_name))
            two_d = {name: values for name, values in chunk.items() if values.ndim == 2}
            if stream is not None:
                stream.write(two_d)
            else:
                for name, values in two_d.items():
                    per_neuron.setdefault(name, []).append(values)
            for name, values in chunk.items():
                if values.ndim == 1:
                    per_step.setdefault(name, []).append(values)
        out = xr.Dataset(
            {name: ("step", np.concatenate(parts)) for name, parts in per_step.items()},
            coords={"step": steps, "neuron": neurons},
        )
        for name, parts in per_neuron.items():
            out[name] = (("step", "neuron"), np.concatenate(parts))
        for frequency_name, parts in per_frequency.items():
            out[frequency_name] = (("step", "frequency"), np.concatenate(parts))
            frequencies = np.arange(1, parts[0].shape[1] + 1)
            out = out.assign_coords(
                frequency=("frequency", frequencies, variable_attrs("frequency"))
            )
        for head_name in ("attention_a", "attention_b"):  # a transformer's, as recorded
            if head_name in ds:
                out[head_name] = (("step", "head"), ds[head_name].values)
        for name in (
            "val_acc",
            "train_acc",
            "val_loss",
            "train_loss",
        ):  # as recorded (runs from other loops may store only some)
            if name in ds and np.isfinite(ds[name].values).any():
                out[name] = ("step", ds[name].values)
        if has_metrics:
            n_train = ds.sizes["train_pair"]
            out["all_acc"] = (
                "step",
                (ds["train_acc_true"].values * n_train + ds["val_acc"].values * (p * p - n_train))
                / (p * p),
            )
        for variable_name in out.variables:
            out[variable_name].attrs.update(
                variable_attrs(
                    str(variable_name), view.sign, boolean=out[variable_name].dtype == bool
                )
            )
        _add_run_attrs(out, ds, params)
        out.attrs.update(
            operation=view.operation,
            group_size=view.n,
            token_order=view.order,
            phase_law="phi_out = phi_a + phi_b" if view.sign > 0 else "phi_out = phi_a - phi_b",
            **({"generator": view.generator} if view.generator is not None else {}),
        )
        out.attrs.update(
            key_freqs=np.asarray(params.key_freqs, dtype=np.int64),
            key_freqs_rule=key_freqs_rule,
            # every frequency key: the restricted loss keeps all of the hidden units and says nothing
            restricted_loss_degenerate=int(len(params.key_freqs or ()) >= (view.n - 1) // 2),
            progress_pairs=(
                "restricted_loss on the validation pairs (true labels), excluded_loss on the "
                "training pairs (labels used)"
                if "train_a" in ds
                else "all pairs with true labels (the trajectory records no split)"
            ),
        )
        out.attrs["source"] = source
        if stream is None:
            return out
        stream.finish(out.drop_dims("neuron", errors="ignore").drop_vars("neuron", errors="ignore"))
        stream = None
        assert stream_to is not None  # a stream is made only with a path to stream to
        return open_netcdf(stream_to)
    finally:
        blas_limit.restore_original_limits()
        if stream is not None:
            stream.abandon()


def _add_run_attrs(out: xr.Dataset, ds: xr.Dataset, params: AnalysisParams) -> None:
    steps = out["step"].values
    saturation = int(ds.attrs.get("saturation_step", -1))
    if saturation < 0 and "train_acc" in ds:
        saturation = _first_step(steps, ds["train_acc"].values >= SATURATION_TRAIN_ACC)
    grok = _first_step(steps, out["val_acc"].values >= params.grok_acc) if "val_acc" in out else -1
    structure = _first_step(steps, out["ideal_acc"].values >= params.structure_acc)
    structure_own = _first_step(steps, out["ideal_acc_own"].values >= params.structure_acc)
    for name, step in (("lead_steps", structure), ("lead_steps_own", structure_own)):
        if (
            grok >= 0 and step >= 0
        ):  # negative when structure comes after generalization; absent when undefined
            out.attrs[name] = grok - step
    out.attrs.update(
        modulus=int(ds.sizes["token"]),
        width=int(ds.sizes["neuron"]),
        saturation_step=saturation,
        grok_step=grok,
        structure_step=structure,
        structure_step_own=structure_own,
        threshold=params.threshold,
        threshold_low=params.threshold_low,
        grok_acc=params.grok_acc,
        structure_acc=params.structure_acc,
        shuffle_draws=params.shuffle_draws,
        min_neurons_for_stats=MIN_NEURONS_FOR_STATS,
        analysis_format_version=ANALYSIS_FORMAT_VERSION,
        source_n_snapshots=int(ds.sizes["step"]),
        source_run_id=trajectory_identity(ds),
        source_final_step=int(ds.attrs.get("final_step", -1)),
        source_step_known=int(ds.attrs.get("step_known", 1)),
        Conventions="CF-1.8",
        title="mechgrok analysis: per-neuron Fourier structure and idealized models over training",
        conventions=(
            "phase in radians, wrapped to [-pi, pi); F[k] = sum_x w[x] exp(-2 pi i k x / p); "
            "rows modelled as f(2 pi k x / p - phase); phases of W_b, W_out read at W_a's frequency; "
            "step attributes are -1 when not reached; lead_steps (grok - structure, may be negative) "
            "is absent when either is not reached; *_own: each curve at its own dominant frequency"
        ),
    )
    for key in ("noise", "seed", "train_frac", "lr", "weight_decay", "activation", "precision"):
        if key in ds.attrs:
            out.attrs[key] = ds.attrs[key]


def default_analysis_path(trajectory: str | os.PathLike) -> Path:
    trajectory = Path(trajectory)
    return trajectory.with_name(trajectory.stem + ".analysis.h5")


def analysis_size_bound(n_steps: int, n_neurons: int) -> int:
    """Bytes an analysis file takes at most (uncompressed): the float32 (step, neuron)
    variables, the float64 per-step ones, and HDF5's metadata."""
    return n_steps * (4 * n_neurons * MAX_VARIABLES + 8 * MAX_VARIABLES) + (256 << 10)


def analysis_memory_bytes(p: int, n_neurons: int) -> int:
    """Peak memory an analysis takes, conservatively: the logits of the idealized and real
    read-outs over all p^2 pairs (p^3 floats, two chunks at a time), the hidden units
    (neuron x p^2, several copies) and ~128 MiB of the rest. Measured here (1 snapshot of 64
    neurons): 343 MB at p = 211, 852 MB at p = 401; this gives 371 MB and 1.5 GB."""
    return (128 << 20) + 4 * (2 * p**3 + 6 * p * p * n_neurons)


def check_analysis_fits_in_memory(p: int, n_neurons: int, source: str) -> None:
    """ResourceError, with both figures, for an analysis this machine's memory cannot hold
    (before it allocates: numpy would fail deep inside with a traceback)."""
    total = physical_memory_bytes()
    need = analysis_memory_bytes(p, n_neurons)
    if total is not None and need > 0.9 * total:
        raise ResourceError(
            f"{source}: analyzing p = {p} with {n_neurons} neurons needs ~{format_bytes(need)} of "
            f"memory (its p^2 x p read-out logits), more than this machine's {format_bytes(total)}",
            remedy="analyze it on a machine with more memory",
        )


MAX_VARIABLES = 40  # an analysis has 36 (step, neuron) and fewer than 25 per-step variables


def _is_current(
    analysis_path: Path, identity: str, n_snapshots: int, params: AnalysisParams
) -> bool:
    """An analysis file is current when it was made, in this format, from the same trajectory
    (its run_id) with the same committed snapshots and the same parameters."""
    try:
        with open(analysis_path, "rb") as handle, h5py.File(handle, "r") as old:
            attrs = old.attrs
            return (
                attr_int(attrs.get("analysis_format_version", -1)) == ANALYSIS_FORMAT_VERSION
                and attr_int(attrs.get("source_n_snapshots", -1)) == n_snapshots
                and _text(attrs.get("source_run_id", "")) == identity
                and all(
                    np.isclose(attr_float(attrs.get(k, np.nan)), float(getattr(params, k)))
                    for k in (
                        "threshold",
                        "threshold_low",
                        "grok_acc",
                        "structure_acc",
                        "shuffle_draws",
                    )
                )
                and _same_key_frequencies(attrs, params.key_freqs)
            )
    except (OSError, ValueError, KeyError, RuntimeError, TypeError):
        return False


def _same_key_frequencies(attrs, wanted: tuple[int, ...] | None) -> bool:
    """Whether a stored analysis chose its key frequencies as asked: by the rule (None) or as given."""
    rule = _text(attrs.get("key_freqs_rule", ""))
    if wanted is None:
        return rule == KEY_FREQS_RULE
    return (
        rule == "given"
        and tuple(int(k) for k in np.atleast_1d(attrs.get("key_freqs", []))) == wanted
    )


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def analyze(
    source: str | os.PathLike | xr.Dataset,
    params: AnalysisParams | None = None,
    *,
    out: str | os.PathLike | None = None,
    force: bool = False,
    save: bool = True,
    scheduler: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    **options,
) -> xr.Dataset:
    """Analyze a trajectory (path or Dataset with W_a, W_b, W_out on (step, neuron, token)).

    Parameters come as `params` (an AnalysisParams) or as its fields by keyword
    (threshold=..., threshold_low=..., grok_acc=..., structure_acc=..., chunk_steps=...,
    shuffle_draws=..., key_freqs=(...) for the progress measures instead of the rule).
    For a path the analysis is saved next to it (<name>.analysis.h5, or `out`) and reused on
    later calls while it is current: same trajectory (its run_id), same committed snapshots,
    same parameters (`force` recomputes). An analysis file is a cache: an earlier analysis
    is replaced, any other existing file is refused, and the new file appears only when
    complete (outputs.atomic_output), so concurrent calls both succeed. `save=False`
    computes without writing (a current analysis on file is still reused). A Dataset is
    analyzed in memory and written to `out` only when given; `force`, `save=False` and
    `scheduler` do not apply to it and raise. `on_progress(done, total)`: snapshots analyzed
    so far, after each chunk (not called when a current analysis is reused). Returns the
    analysis (dims step, neuron)."""
    if params is not None and options:
        raise InvalidOptionError(f"give params or its fields ({', '.join(options)}), not both")
    params = params if params is not None else AnalysisParams(**options)
    if isinstance(source, xr.Dataset):
        if force or not save or scheduler is not None:
            raise InvalidOptionError(
                "force, save=False and scheduler apply to a trajectory file, not to a Dataset"
            )
        origin = source.attrs.get("source")
        result = analyze_dataset(
            source, params, source=str(origin or "dataset"), scheduler=None, on_progress=on_progress
        )
        if out is not None:
            with atomic_output(
                out, "analysis", inputs=[Path(origin)] if origin else [], replace_role=True
            ) as partial:
                result.to_netcdf(
                    partial,
                    engine="h5netcdf",
                    encoding={name: COMPRESSION for name in result.data_vars},
                )
        return result
    path = Path(source)
    out_path = Path(out) if out is not None else default_analysis_path(path)
    with open_trajectory(path) as trajectory:
        if same_file(out_path, path):
            raise OutputExistsError(
                f"{out_path} is the trajectory being analyzed; refusing to write over it"
            )
        resolved = params.resolved(trajectory_group(trajectory).n)  # as analyze_dataset does
        identity, n_snapshots = trajectory_identity(trajectory), trajectory.sizes["step"]
        if (
            not force
            and out_path.exists()
            and _is_current(out_path, identity, n_snapshots, resolved)
        ):
            return open_netcdf(out_path)
        if not save:
            return analyze_dataset(
                trajectory,
                params,
                source=str(path),
                path=str(path),
                scheduler=scheduler,
                on_progress=on_progress,
            )
        with atomic_output(out_path, "analysis", inputs=[path], replace_role=True) as partial:
            check_space(
                out_path.parent, analysis_size_bound(n_snapshots, trajectory.sizes["neuron"])
            )
            analyze_dataset(
                trajectory,
                params,
                source=str(path),
                path=str(path),
                scheduler=scheduler,
                stream_to=partial,
                on_progress=on_progress,
            ).close()
    return open_netcdf(out_path)
