"""Assemble fourier + idealize over a trajectory into an xarray.Dataset, chunk by chunk.

Input: a trajectory path, or any Dataset with W_a, W_b, W_out on dims (step, neuron, token)
(biases and metrics optional). Output: per (step, neuron) Fourier structure and per step
summary statistics and idealized-model accuracies (names in ANALYSIS_VARIABLES below; the
definitions are in fourier.py and idealize.py and in README.md). Memory is bounded by one
chunk of snapshots; chunks can be spread over a dask.distributed cluster.
"""
from __future__ import annotations

import os
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h5netcdf
import numpy as np
import xarray as xr

from . import fourier
from .errors import TrajectoryError
from .idealize import IDEAL_VARIANTS, accuracy_all_pairs, ideal_accuracies
from .trajectory import open_trajectory

ANALYSIS_FORMAT_VERSION = 1
MIN_NEURONS_FOR_STATS = 5  # circular correlation, coherence and t statistics need this many neurons, else NaN
SATURATION_TRAIN_ACC = 0.99
WEIGHTS = ("W_a", "W_b", "W_out")
IDEAL_NAMES = {"sq_cos": "ideal_acc", "sq_sq": "ideal_acc_sq_sq", "cos_cos": "ideal_acc_cos_cos",
               "phase_sum": "ideal_acc_phase_sum", "shuffled": "ideal_acc_shuffled"}


@dataclass(frozen=True)
class AnalysisParams:
    """Thresholds of one analysis. None thresholds scale the paper's p = 97 values with the
    cosine's periodicity (p-1)/2: structured above 12 (p-1)/96, unstructured below 5 (p-1)/96."""

    threshold: float | None = None
    threshold_low: float | None = None
    grok_acc: float = 0.9
    structure_acc: float = 0.9
    chunk_steps: int = 8

    def resolved(self, p: int) -> "AnalysisParams":
        if p < 3:
            raise ValueError(f"modulus must be >= 3, got {p}")
        threshold = 12 * (p - 1) / 96 if self.threshold is None else float(self.threshold)
        threshold_low = 5 * (p - 1) / 96 if self.threshold_low is None else float(self.threshold_low)
        if threshold_low > threshold:
            raise ValueError(f"threshold_low {threshold_low} is above threshold {threshold}")
        if self.chunk_steps < 1:
            raise ValueError(f"chunk_steps must be >= 1, got {self.chunk_steps}")
        return AnalysisParams(threshold, threshold_low, self.grok_acc, self.structure_acc, self.chunk_steps)


def neuron_structure(W_a: np.ndarray, W_b: np.ndarray, W_out: np.ndarray, threshold: float,
                     threshold_low: float) -> dict[str, np.ndarray]:
    """Per-neuron Fourier structure of rows shaped (..., neuron, token); see fourier.py.
    Phases of W_b and W_out are read at W_a's dominant frequency (the paper's extraction;
    `phase_b_own`/`phase_out_own` are at their own). Square/cosine distances use W_a's
    frequency, the row's phase at it, and are measured with w in units of that amplitude."""
    p = W_a.shape[-1]
    F = {name: fourier.spectrum(rows) for name, rows in zip("a b out".split(), (W_a, W_b, W_out))}
    out: dict[str, np.ndarray] = {}
    for key, spec in F.items():
        out[f"freq_{key}"] = fourier.dominant_frequency(spec)
    freq = out["freq_a"]
    for key, spec in F.items():
        out[f"amp_{key}"] = fourier.amplitude_at(spec, out[f"freq_{key}"])
        out[f"periodicity_{key}"] = fourier.periodicity(spec)
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
        out[f"boundary_frac_{key}"] = np.where(freq > 0, fourier.boundary_fraction(rows, theta, high, low), np.nan)
    out["freq_agree"] = (freq > 0) & (out["freq_b"] == freq) & (out["freq_out"] == freq)
    out["phase_sum_error"] = fourier.wrap_angle(out["phase_out"] - out["phase_a"] - out["phase_b"])
    out["structured"] = (out["periodicity_a"] > threshold) & out["freq_agree"]
    out["unstructured"] = ~(out["periodicity_a"] >= threshold_low)  # dead and constant rows included
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


def step_summary(neurons: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-step statistics over the neuron axis (last) of `neuron_structure`'s output."""
    structured = neurons["structured"]
    has_phase = np.isfinite(neurons["phase_a"])
    phase_sum = fourier.wrap_angle(neurons["phase_a"] + neurons["phase_b"])

    def correlation(mask):
        r = fourier.circular_correlation(np.where(mask, phase_sum, np.nan), np.where(mask, neurons["phase_out"], np.nan))
        return np.where(mask.sum(-1) >= MIN_NEURONS_FOR_STATS, r, np.nan)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN medians early in training are NaN by design
        periodicity_median = np.nanmedian(neurons["periodicity_a"], -1)
        binarization_median = np.nanmedian(neurons["binarization_a"], -1)
    return dict(
        r_all=correlation(has_phase),
        r_structured=correlation(structured),
        phase_sum_coherence=_masked_stat(neurons["phase_sum_error"], structured, lambda v: fourier.mean_resultant_length(v)),
        n_structured=structured.sum(-1),
        n_unstructured=neurons["unstructured"].sum(-1),
        periodicity_median=periodicity_median,
        binarization_median=binarization_median,
        square_vs_cosine_t=paired_t(np.where(structured, neurons["square_dist_a"] - neurons["cosine_dist_a"], np.nan)),
    )


def analyze_arrays(W_a: np.ndarray, W_b: np.ndarray, W_out: np.ndarray, params: AnalysisParams,
                   b_in: np.ndarray | None = None, b_out: np.ndarray | None = None,
                   real_accuracy: bool = True, steps: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Everything per (step, neuron) and per step for a chunk of snapshots (step, neuron,
    token). `real_accuracy` also scores the real model on all pairs (skipped when the
    trajectory's metrics already give it); `steps` seed the shuffled control."""
    W_a, W_b, W_out = (np.asarray(w, dtype=np.float64) for w in (W_a, W_b, W_out))
    neurons = neuron_structure(W_a, W_b, W_out, params.threshold, params.threshold_low)
    result = dict(neurons)
    result.update(step_summary(neurons))
    ideal = ideal_accuracies(neurons["freq_a"], neurons["phase_a"], neurons["phase_b"], neurons["phase_out"], W_a.shape[-1], steps)
    for variant in IDEAL_VARIANTS:
        result[IDEAL_NAMES[variant]] = ideal[variant]
    if real_accuracy:
        # the real model's logits are real-valued but can tie exactly when it is collapsed
        (result["all_acc"],) = accuracy_all_pairs(W_a, W_b, [W_out], b_in, b_out, integer_logits=[True])
    return result


def _chunk_from_file(path: str, start: int, stop: int, params: AnalysisParams, real_accuracy: bool) -> dict[str, np.ndarray]:
    """Analyze snapshots [start, stop) of a trajectory file (runs on dask workers too)."""
    with open_trajectory(path) as ds:
        return _chunk_from_dataset(ds, start, stop, params, real_accuracy)


def _chunk_from_dataset(ds: xr.Dataset, start: int, stop: int, params: AnalysisParams, real_accuracy: bool) -> dict[str, np.ndarray]:
    part = ds.isel(step=slice(start, stop))
    dims = {"W_a": ("step", "neuron", "token"), "W_b": ("step", "neuron", "token"), "W_out": ("step", "neuron", "token"),
            "b_in": ("step", "neuron"), "b_out": ("step", "token")}
    arrays = {name: part[name].transpose(*order).values if name in part else None for name, order in dims.items()}
    steps = part["step"].values if "step" in part.coords else np.arange(start, stop)
    return analyze_arrays(params=params, real_accuracy=real_accuracy, steps=steps, **arrays)


def _ordered_map(function, items: list, workers: int | None = None):
    """function(item) for each item, in order, computed by a few threads with at most
    2 x workers results in flight (memory stays bounded). numpy releases the GIL in its
    array loops, so on 2 cores two chunks at a time run ~1.4x faster than one."""
    workers = workers or min(2, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        pending = deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _validated(ds: xr.Dataset, source: str) -> int:
    missing = [name for name in WEIGHTS if name not in ds]
    if missing:
        raise TrajectoryError(f"{source}: missing {', '.join(missing)}; need W_a, W_b, W_out on dims (step, neuron, token)")
    for name in WEIGHTS:
        if set(ds[name].dims) != {"step", "neuron", "token"}:
            raise TrajectoryError(f"{source}: {name} has dims {ds[name].dims}, expected (step, neuron, token)")
    p = ds.sizes["token"]
    if p < 3:
        raise TrajectoryError(f"{source}: modulus (token size) {p} < 3")
    return p


def _first_step(steps: np.ndarray, reached: np.ndarray) -> int:
    """First step where `reached` holds, -1 if never."""
    hits = np.flatnonzero(np.asarray(reached, dtype=bool))
    return int(steps[hits[0]]) if hits.size else -1


class _StreamedNeuronVariables:
    """Writes the (step, neuron) variables of an analysis into a netCDF file chunk by chunk,
    so memory holds one chunk, not the whole analysis. Floats are stored as float32 (the
    statistics carry no more precision than that), booleans as int8 that xarray decodes."""

    def __init__(self, path: Path, steps: np.ndarray, neurons: np.ndarray):
        self.path = path
        self.file = h5netcdf.File(path, "w")
        self.file.dimensions = {"step": steps.size, "neuron": neurons.size}
        self.file.create_variable("step", ("step",), steps.dtype, data=steps)
        self.file.create_variable("neuron", ("neuron",), neurons.dtype, data=neurons)

    def write(self, start: int, values: dict[str, np.ndarray]) -> None:
        for name, array in values.items():
            stored = array.astype(np.int8) if array.dtype == bool else (
                array.astype(np.float32) if array.dtype.kind == "f" else array)
            if name not in self.file.variables:
                variable = self.file.create_variable(name, ("step", "neuron"), stored.dtype,
                                                     chunks=(min(64, self.file.dimensions["step"].size), stored.shape[1]))
                if array.dtype == bool:
                    variable.attrs["dtype"] = "bool"
                if name in DESCRIPTIONS:
                    variable.attrs["long_name"] = DESCRIPTIONS[name]
            self.file.variables[name][start:start + stored.shape[0]] = stored

    def finish(self, per_step: xr.Dataset) -> None:
        """Add the per-step variables and the attributes, then close."""
        for name, variable in per_step.data_vars.items():
            created = self.file.create_variable(name, ("step",), variable.dtype, data=variable.values)
            created.attrs.update(variable.attrs)
        self.file.attrs.update(per_step.attrs)
        self.file.close()


def analyze_dataset(ds: xr.Dataset, params: AnalysisParams = AnalysisParams(), source: str = "dataset",
                    path: str | None = None, scheduler: str | None = None, stream_to: Path | None = None) -> xr.Dataset:
    """Analyze an open trajectory Dataset chunk by chunk (see module docstring). With `path`
    and `scheduler` (a dask.distributed address, or "local"), chunks are analyzed by workers
    that open the file themselves. With `stream_to`, the (step, neuron) variables go to that
    netCDF file as they are computed and the result is that file, opened lazily."""
    p = _validated(ds, source)
    params = params.resolved(p)
    n_steps = ds.sizes["step"]
    if n_steps == 0:
        raise TrajectoryError(f"{source}: no snapshots to analyze")
    has_metrics = all(name in ds for name in ("val_acc", "train_acc_true", "train_a"))
    bounds = [(start, min(start + params.chunk_steps, n_steps)) for start in range(0, n_steps, params.chunk_steps)]
    if scheduler is not None and path is not None:
        from .distributed import map_on_cluster

        chunks = map_on_cluster(scheduler, _chunk_from_file, [(path, a, b, params, not has_metrics) for a, b in bounds])
    else:
        chunks = _ordered_map(lambda bound: _chunk_from_dataset(ds, *bound, params, not has_metrics), bounds)
    steps = ds["step"].values if "step" in ds.coords or "step" in ds else np.arange(n_steps)
    neurons = ds["neuron"].values if "neuron" in ds.coords else np.arange(ds.sizes["neuron"])
    stream = _StreamedNeuronVariables(stream_to, steps, neurons) if stream_to is not None else None
    per_step: dict[str, list] = {}
    per_neuron: dict[str, list] = {}
    try:
        for (start, _), chunk in zip(bounds, chunks):
            two_d = {name: values for name, values in chunk.items() if values.ndim == 2}
            if stream is not None:
                stream.write(start, two_d)
            else:
                for name, values in two_d.items():
                    per_neuron.setdefault(name, []).append(values)
            for name, values in chunk.items():
                if values.ndim == 1:
                    per_step.setdefault(name, []).append(values)
        out = xr.Dataset({name: ("step", np.concatenate(parts)) for name, parts in per_step.items()},
                         coords={"step": steps, "neuron": neurons})
        for name, parts in per_neuron.items():
            out[name] = (("step", "neuron"), np.concatenate(parts))
        if has_metrics:
            n_train = ds.sizes["train_pair"]
            out["val_acc"] = ("step", ds["val_acc"].values)
            out["train_acc"] = ("step", ds["train_acc"].values)
            out["all_acc"] = ("step", (ds["train_acc_true"].values * n_train + ds["val_acc"].values * (p * p - n_train)) / (p * p))
        for name in out.data_vars:
            if name in DESCRIPTIONS:
                out[name].attrs["long_name"] = DESCRIPTIONS[name]
        _add_run_attrs(out, ds, params)
        out.attrs["source"] = source
        if stream is None:
            return out
        stream.finish(out.drop_dims("neuron", errors="ignore").drop_vars("neuron", errors="ignore"))
        stream = None
        return xr.open_dataset(stream_to, engine="h5netcdf")
    finally:
        if stream is not None:
            stream.file.close()


def _add_run_attrs(out: xr.Dataset, ds: xr.Dataset, params: AnalysisParams) -> None:
    steps = out["step"].values
    saturation = int(ds.attrs.get("saturation_step", -1))
    if saturation < 0 and "train_acc" in ds:
        saturation = _first_step(steps, ds["train_acc"].values >= SATURATION_TRAIN_ACC)
    grok = _first_step(steps, out["val_acc"].values >= params.grok_acc) if "val_acc" in out else -1
    structure = _first_step(steps, out["ideal_acc"].values >= params.structure_acc)
    out.attrs.update(
        modulus=int(ds.sizes["token"]), width=int(ds.sizes["neuron"]),
        saturation_step=saturation, grok_step=grok, structure_step=structure,
        lead_steps=grok - structure if grok >= 0 and structure >= 0 else -1,
        threshold=params.threshold, threshold_low=params.threshold_low,
        grok_acc=params.grok_acc, structure_acc=params.structure_acc,
        min_neurons_for_stats=MIN_NEURONS_FOR_STATS,
        analysis_format_version=ANALYSIS_FORMAT_VERSION,
        source_n_snapshots=int(ds.sizes["step"]),
        source_created=str(ds.attrs.get("created", "")),
        source_final_step=int(ds.attrs.get("final_step", -1)),
        conventions=("phase in radians, wrapped to [-pi, pi); F[k] = sum_x w[x] exp(-2 pi i k x / p); "
                     "rows modelled as f(2 pi k x / p - phase); phases of W_b, W_out read at W_a's frequency; "
                     "step attributes are -1 when not reached"),
    )
    for key in ("noise", "seed", "train_frac", "lr", "weight_decay"):
        if key in ds.attrs:
            out.attrs[key] = ds.attrs[key]


DESCRIPTIONS = {
    "freq_a": "dominant frequency k* of W_a (0: dead or constant row)",
    "phase_a": "phase of W_a at k* (rad)", "phase_b": "phase of W_b at W_a's k* (rad)",
    "phase_out": "phase of W_out at W_a's k* (rad)",
    "periodicity_a": "max|F| / mean|F| over k = 1..p-1 (paper Eq. 1)",
    "binarization_a": "(cosine_dist - square_dist) / (cosine_dist + square_dist): 1 square, -1 cosine, ~0 noise",
    "boundary_frac_a": "share of intermediate entries next to a sign change of the ideal square wave",
    "phase_sum_error": "wrap(phase_out - phase_a - phase_b) (rad)",
    "structured": "periodicity_a > threshold and W_a, W_b, W_out frequencies agree",
    "unstructured": "periodicity_a < threshold_low (or undefined)",
    "r_all": "Fisher-Lee circular correlation of phase_out with phase_a + phase_b, all neurons",
    "r_structured": "the same over structured neurons",
    "phase_sum_coherence": "|mean exp(i phase_sum_error)| over structured neurons",
    "ideal_acc": "Sq->Cos idealized model accuracy on all p^2 pairs",
    "ideal_acc_sq_sq": "Sq->Sq idealized model accuracy", "ideal_acc_cos_cos": "Cos->Cos idealized model accuracy",
    "ideal_acc_phase_sum": "control: Sq->Cos with phase_out forced to phase_a + phase_b",
    "ideal_acc_shuffled": "control: Sq->Cos with phase_out shuffled across neurons",
    "all_acc": "real model accuracy on all p^2 pairs", "val_acc": "real model accuracy on validation",
    "square_vs_cosine_t": "paired t of square_dist_a - cosine_dist_a over structured neurons",
}




def default_analysis_path(trajectory: str | os.PathLike) -> Path:
    trajectory = Path(trajectory)
    return trajectory.with_name(trajectory.stem + ".analysis.h5")


def _is_current(analysis_path: Path, trajectory: xr.Dataset, params: AnalysisParams) -> bool:
    try:
        with xr.open_dataset(analysis_path, engine="h5netcdf") as old:
            attrs = old.attrs
            return (int(attrs.get("analysis_format_version", -1)) == ANALYSIS_FORMAT_VERSION
                    and int(attrs.get("source_n_snapshots", -1)) == trajectory.sizes["step"]
                    and str(attrs.get("source_created", "")) == str(trajectory.attrs.get("created", ""))
                    and all(np.isclose(float(attrs.get(k, np.nan)), float(getattr(params, k))) for k in ("threshold", "threshold_low", "grok_acc", "structure_acc")))
    except (OSError, ValueError, KeyError, RuntimeError):
        return False


def _check_replaceable(path: Path) -> None:
    """An existing output may be replaced only if it is an earlier mechgrok analysis."""
    if not path.exists():
        return
    try:
        with xr.open_dataset(path, engine="h5netcdf") as old:
            if "analysis_format_version" in old.attrs:
                return
    except (OSError, ValueError, RuntimeError):
        pass
    raise TrajectoryError(f"{path} exists and is not a mechgrok analysis; refusing to overwrite it")


def analyze(source: str | os.PathLike | xr.Dataset, threshold: float | None = None, threshold_low: float | None = None,
            out: str | os.PathLike | None = None, force: bool = False, save: bool = True,
            grok_acc: float = 0.9, structure_acc: float = 0.9, chunk_steps: int = 8,
            scheduler: str | None = None) -> xr.Dataset:
    """Analyze a trajectory (path or Dataset with W_a, W_b, W_out on (step, neuron, token)).

    For a path the analysis is saved next to it (<name>.analysis.h5, or `out`) and reused on
    later calls while the trajectory and thresholds are unchanged (`force` recomputes). An
    analysis file is a cache: a stale one is replaced; any other existing file is refused.
    `save=False` computes without writing (a current analysis on file is still reused).
    Returns the analysis as an xarray.Dataset (dims step, neuron)."""
    params = AnalysisParams(threshold, threshold_low, grok_acc, structure_acc, chunk_steps)
    if isinstance(source, xr.Dataset):
        result = analyze_dataset(source, params, source=str(source.attrs.get("source", "dataset")), scheduler=None)
        if out is not None:
            save_analysis(result, Path(out))
        return result
    path = Path(source)
    out_path = Path(out) if out is not None else default_analysis_path(path)
    if out_path.resolve() == path.resolve():
        raise TrajectoryError(f"{out_path}: the analysis would overwrite its own trajectory")
    with open_trajectory(path) as trajectory:
        resolved = params.resolved(trajectory.sizes["token"])
        if not force and out_path.exists() and _is_current(out_path, trajectory, resolved):
            return xr.open_dataset(out_path, engine="h5netcdf")
        if not save:
            return analyze_dataset(trajectory, params, source=str(path), path=str(path), scheduler=scheduler)
        _check_replaceable(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = out_path.with_name(out_path.name + ".partial")
        try:
            result = analyze_dataset(trajectory, params, source=str(path), path=str(path), scheduler=scheduler,
                                     stream_to=temporary)
            result.close()
            os.replace(temporary, out_path)  # atomic: a crash never leaves half an analysis
        finally:
            temporary.unlink(missing_ok=True)
    return xr.open_dataset(out_path, engine="h5netcdf")


def save_analysis(result: xr.Dataset, path: Path) -> None:
    """Write atomically (temporary file, then rename), so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    result.to_netcdf(temporary, engine="h5netcdf")
    os.replace(temporary, path)
