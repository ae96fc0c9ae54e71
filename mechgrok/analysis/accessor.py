"""`ds.mechgrok`: convenience queries on trajectory and analysis Datasets.

On a trajectory (W_a, W_b, W_out on step, neuron, token):
  ds.mechgrok.spectrum("W_a")            |F[k]| on (step, neuron, frequency)
  ds.mechgrok.neuron(i, step=...)        one neuron's rows with their ideal waves
  ds.mechgrok.idealized_weights(step)    the Sq->Cos (or other) idealized model's weights
  ds.mechgrok.analyze(**options)         mechgrok.analyze(ds, ...)
On an analysis (freq_a, ideal_acc, ... on step, neuron):
  ds.mechgrok.headline()                 the run's headline numbers as a dict
  ds.mechgrok.structured(step)           indices of the structured neurons at a step
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import xarray as xr

from mechgrok.analysis import fourier
from mechgrok.analysis.idealize import square
from mechgrok.analysis.variables import label as variable_label
from mechgrok.errors import InvalidOptionError, MechgrokWarning, SelectionError
from mechgrok.operations import GroupView, group_view, recorded_operation

# (label, variable, decimals) of the headline table that `mechgrok analyze` and reports show
# the headline's per-step numbers (name, decimals); their labels are in analysis/variables.py
HEADLINE_ROWS = (
    ("val_acc", 4),
    ("all_acc", 4),
    ("ideal_acc", 3),
    ("ideal_acc_own", 3),
    ("ideal_acc_sq_sq", 3),
    ("ideal_acc_cos_cos", 3),
    ("ideal_acc_phase_sum", 3),
    ("ideal_acc_shuffled", 3),
    ("ideal_acc_shuffled_hi", 3),
    ("r_all", 4),
    ("r_structured", 4),
    ("n_structured", 0),
    ("restricted_loss", 4),
    ("excluded_loss", 4),
)
HEADLINE_STEP_VARIABLES = tuple(name for name, _ in HEADLINE_ROWS) + ("phase_sum_coherence",)


def headline_rows(sign: int = 1) -> list[tuple[str, str, int]]:
    """(label, name, decimals) of each headline row, labelled for a law of `sign`."""
    return [(variable_label(name, sign), name, digits) for name, digits in HEADLINE_ROWS]


# what the two conventions differ in, for tables and reports
CONVENTION_NOTE = (
    "Sq->Cos reads the phases of W_b and W_out at W_a's dominant frequency (the paper's convention); "
    "'own' reads each curve at its own dominant frequency, which agrees only where the three frequencies do."
)


def format_number(value, digits: int = 3, missing: str = "-") -> str:
    """A headline number with `digits` decimals; `missing` for None and NaN."""
    if value is None or not np.isfinite(float(value)):
        return missing
    return f"{float(value):.{digits}f}"


WAVEFORM_MARGIN = 0.2  # |median binarization| below this: mixed


def waveform_family(binarization: np.ndarray, structured: np.ndarray) -> tuple[str, float, int]:
    """The input rows' waveform family at one snapshot from the binarization of W_a (1 square,
    -1 cosine) over the structured neurons: ('square-like' | 'cosine-like' | 'mixed' |
    'no structured neurons', their median binarization, how many)."""
    values = np.asarray(binarization)[np.asarray(structured, dtype=bool)]
    values = values[np.isfinite(values)]
    if values.size == 0:
        return "no structured neurons", float("nan"), 0
    median = float(np.median(values))
    family = (
        "square-like"
        if median > WAVEFORM_MARGIN
        else "cosine-like"
        if median < -WAVEFORM_MARGIN
        else "mixed"
    )
    return family, median, int(values.size)


def format_waveform(head: dict) -> str:
    """'square-like (median binarization 0.62 over 126 structured neurons)' from a headline."""
    family = head.get("waveform_family")
    if family is None or not head.get("waveform_neurons"):
        return family or "unknown"
    return f"{family} (median binarization {head['waveform_binarization']:.2f} over {head['waveform_neurons']} structured neurons)"


def format_step(value) -> str:
    """A step attribute: '12,345', or 'not reached' for None and -1."""
    return "not reached" if value is None or int(value) < 0 else f"{int(value):,}"


def format_grok_step(head: dict) -> str:
    """The grok step of a headline: 'unknown' for a run with no validation metric (an import
    of weights alone), where 'not reached' would claim the run never generalized."""
    if not head.get("has_validation", True):
        return "unknown (no validation metric)"
    return format_step(head["grok_step"])


def format_final_step(head: dict) -> str:
    """'step 6,200' for the last snapshot, or 'step unknown' for a lone imported checkpoint
    that did not say its step."""
    return f"step {head['final_step']:,}" if head.get("final_step_known", True) else "step unknown"


def format_lead(value) -> str:
    """A lead in steps (grok - structure): '+1,234', '-56', or 'undefined' when absent (None)."""
    return "undefined" if value is None else f"{int(value):+,}"


def _plain(key: str, value):
    """A headline value as plain Python (json.dumps takes it): numpy scalars unwrapped, text
    decoded, neuron counts as int, NaN as None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0].item() if value.size == 1 else value.tolist()
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if key.startswith("n_structured") and isinstance(value, float):
        return int(value)
    return value


@xr.register_dataset_accessor("mechgrok")
class MechgrokAccessor:
    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    def _rows(self, name: str, **selection) -> xr.DataArray:
        """A weight's rows over tokens in the order of the run's group (operations.group_view:
        discrete-log order g^0, g^1, ... for mul and div, whose token coordinate keeps the residues)."""
        if name not in self._ds:
            raise SelectionError(
                f"{name} is not in this Dataset (a trajectory has W_a, W_b, W_out)"
            )
        rows = self._ds[name].sel(**self._checked(selection)).transpose(..., "token")
        view = self.group()
        return rows if view.operation in ("add", "sub") else rows.isel(token=view.order)

    def _checked(self, selection: dict) -> dict:
        """`selection` with its neuron checked and its step replaced by the nearest recorded
        one (said in a MechgrokWarning when not exact); SelectionError names the valid range."""
        selection = dict(selection)
        if "neuron" in selection:
            neurons = self._ds["neuron"].values
            if selection["neuron"] not in neurons:
                raise SelectionError(
                    f"neuron {selection['neuron']} is not in this run (neurons {neurons.min()}..{neurons.max()})"
                )
        if selection.get("step") is not None:
            selection["step"] = self.nearest_step(selection["step"])
        return selection

    def nearest_step(self, step: int) -> int:
        """The recorded step nearest `step` (a MechgrokWarning says so when it is not `step`);
        SelectionError outside the recorded range."""
        steps = self._ds["step"].values
        if not steps.size or not steps[0] <= step <= steps[-1]:
            span = f"{steps[0]:,}..{steps[-1]:,}" if steps.size else "none"
            raise SelectionError(f"step {step:,} is outside the recorded steps ({span})")
        nearest = int(steps[np.argmin(np.abs(steps - step))])
        if nearest != step:
            warnings.warn(
                f"no snapshot at step {step:,}: using the nearest, step {nearest:,}",
                MechgrokWarning,
                stacklevel=4,
            )
        return nearest

    def group(self) -> GroupView:
        """How this run's tokens are read (its operation's group; add when not recorded)."""
        return group_view(recorded_operation(self._ds.attrs), self._ds.sizes["token"])

    def spectrum(self, name: str = "W_a") -> xr.DataArray:
        """|F[k]| of each row of `name`, k = 0..(p-1)//2 on a new `frequency` dimension."""
        rows = self._rows(name)
        p = rows.sizes["token"]
        magnitude = xr.apply_ufunc(
            lambda w: np.abs(fourier.spectrum(w))[..., : (p - 1) // 2 + 1],
            rows,
            input_core_dims=[["token"]],
            output_core_dims=[["frequency"]],
            dask="parallelized",
            output_dtypes=[float],
            dask_gufunc_kwargs={"output_sizes": {"frequency": (p - 1) // 2 + 1}},
        )
        return magnitude.assign_coords(frequency=np.arange((p - 1) // 2 + 1)).rename(
            f"{name}_spectrum"
        )

    def neuron(self, index: int, step=None) -> xr.Dataset:
        """Neuron `index`'s W_a, W_b, W_out rows (over token, at `step` or all steps) with their
        ideal waves: square waves for W_a, W_b (levels = medians of each half-period) and a
        cosine for W_out, at W_a's dominant frequency and each row's phase at it."""
        selection = {"neuron": index} if step is None else {"neuron": index, "step": step}
        rows = {
            name: np.asarray(self._rows(name, **selection).values, dtype=float)
            for name in ("W_a", "W_b", "W_out")
        }
        p = rows["W_a"].shape[-1]
        spectra = {name: fourier.spectrum(values) for name, values in rows.items()}
        freq = fourier.dominant_frequency(spectra["W_a"])
        dims = ("step", "token") if rows["W_a"].ndim == 2 else ("token",)
        out = xr.Dataset({name: (dims, values) for name, values in rows.items()})
        for name in ("W_a", "W_b"):
            phase = fourier.phase_at(spectra[name], freq)
            theta = fourier.wave_angle(freq, np.nan_to_num(phase), p)
            high, low = fourier.square_levels(rows[name], theta)
            out[f"{name}_ideal"] = (
                dims,
                np.where(
                    np.asarray(freq > 0)[..., None], fourier.ideal_square(theta, high, low), np.nan
                ),
            )
        phase_out = fourier.phase_at(spectra["W_out"], freq)
        theta_out = fourier.wave_angle(freq, np.nan_to_num(phase_out), p)
        amplitude = fourier.amplitude_at(spectra["W_out"], freq)
        offset = spectra["W_out"][..., 0].real / p
        out["W_out_ideal"] = (
            dims,
            np.asarray(offset)[..., None] + np.asarray(amplitude)[..., None] * np.cos(theta_out),
        )
        coords = {"token": self._rows("W_a").token.values}
        if "step" in dims:
            coords["step"] = self._ds["step"].values
        out = out.assign_coords(coords)
        out["freq"] = (dims[:-1], freq)
        out.attrs.update(neuron=int(index))
        return out

    def idealized_weights(self, step, variant: str = "sq_cos") -> xr.Dataset:
        """Weights of the idealized model at `step` (paper section 4.1): unit-amplitude
        waves at each neuron's W_a frequency and extracted phases; variant is one of sq_cos,
        sq_sq, cos_cos, phase_sum (phi_out = phi_a + phi_b). Dead neurons get zero rows."""
        rows = {
            name: np.asarray(
                self._rows(name, step=step).transpose("neuron", "token").values, dtype=float
            )
            for name in ("W_a", "W_b", "W_out")
        }
        p = rows["W_a"].shape[-1]
        spectra = {name: fourier.spectrum(values) for name, values in rows.items()}
        freq = fourier.dominant_frequency(spectra["W_a"])
        phases = {name: np.nan_to_num(fourier.phase_at(spectra[name], freq)) for name in rows}
        if variant == "phase_sum":
            phases["W_out"] = phases["W_a"] + self.group().sign * phases["W_b"]
        shapes: dict[str, tuple[Callable, Callable]] = {
            "sq_cos": (square, np.cos),
            "sq_sq": (square, square),
            "cos_cos": (np.cos, np.cos),
            "phase_sum": (square, np.cos),
        }
        if variant not in shapes:
            raise InvalidOptionError(f"variant must be one of {', '.join(shapes)}, got {variant!r}")
        f_in, f_out = shapes[variant]
        alive = (freq > 0)[:, None]
        waves = {
            name: np.where(
                alive,
                (f_out if name == "W_out" else f_in)(fourier.wave_angle(freq, phases[name], p)),
                0.0,
            )
            for name in rows
        }
        out = xr.Dataset(
            {name: (("neuron", "token"), w) for name, w in waves.items()},
            coords={"neuron": self._ds["neuron"].values, "token": self._rows("W_a").token.values},
        )
        out["freq"] = ("neuron", freq)
        out.attrs.update(variant=variant, step=int(np.asarray(step)))
        return out

    def analyze(self, **options) -> xr.Dataset:
        """mechgrok.analyze on this Dataset (see its docstring for options)."""
        from mechgrok.analysis.pipeline import analyze

        return analyze(self._ds, **options)

    def headline(self) -> dict:
        """The run's headline numbers from an analysis: the run attributes and, at the
        saturation step and at the last snapshot, the idealized accuracies and controls,
        r, r', coherence and structured-neuron counts."""
        ds = self._ds
        if "ideal_acc" not in ds:
            raise SelectionError("headline() needs an analysis Dataset (mechgrok.analyze)")
        out = {
            key: ds.attrs.get(key)
            for key in (
                "saturation_step",
                "grok_step",
                "structure_step",
                "lead_steps",
                "structure_step_own",
                "lead_steps_own",
                "shuffle_draws",
                "threshold",
                "threshold_low",
                "modulus",
                "width",
                "noise",
                "seed",
            )
        }
        points = {"final": ds["step"].values[-1]}
        if int(ds.attrs.get("saturation_step", -1)) >= 0:
            points["saturation"] = ds.attrs["saturation_step"]
        for label, step in points.items():
            at = ds.sel(step=step, method="nearest")
            for name in HEADLINE_STEP_VARIABLES:
                if name in ds:
                    out[f"{name}_{label}"] = float(at[name])
        out["final_step"] = int(ds["step"].values[-1])
        out["final_step_known"] = bool(int(ds.attrs.get("source_step_known", 1)))
        out["has_validation"] = "val_acc" in ds and bool(np.isfinite(ds["val_acc"].values).any())
        if "binarization_a" in ds:
            last = ds.isel(step=-1)
            family, median, count = waveform_family(
                last["binarization_a"].values, last["structured"].values
            )
            out.update(waveform_family=family, waveform_binarization=median, waveform_neurons=count)
        out["operation"] = recorded_operation(ds.attrs)
        out["restricted_loss_degenerate"] = bool(int(ds.attrs.get("restricted_loss_degenerate", 0)))
        return {key: _plain(key, value) for key, value in out.items()}

    def explore(self):
        """The report's offline explorer of this run, shown inline in Jupyter (one
        self-contained HTML output: no server, no network). On a trajectory Dataset it analyzes
        the run first (reusing a current analysis on file); on an analysis it reopens its
        trajectory. Its `.html` is the page on its own."""
        from mechgrok.reporting.notebook import explorer_for  # the page builder, on call

        return explorer_for(self._ds)

    def plot_timeline(self):
        """The report's timeline figure (accuracies and controls, losses, structure, phase law
        against step) of an analysis Dataset, as a matplotlib Figure."""
        from mechgrok.reporting import figures  # the figure builders, on call

        return figures.timeline(self._ds)

    def plot_phases(self, step=None):
        """phi_out against the phase law's phi_a +- phi_b at `step` (nearest recorded; the last
        when None) of an analysis Dataset, as a matplotlib Figure."""
        from mechgrok.reporting import figures

        step = int(self._ds["step"].values[-1]) if step is None else self.nearest_step(step)
        return figures.phase_scatter([(self._ds, step, f"step {step:,}")])

    def plot_neurons(self, analysis: xr.Dataset, steps=None, which: str = "W_a", neurons=None):
        """Rows of a few neurons against their ideal square waves (paper Figs. 1-2), from this
        trajectory and its `analysis`, at `steps` (nearest recorded; default first, middle,
        last), as a matplotlib Figure. `neurons` default to the report's choice."""
        from mechgrok.reporting import figures

        recorded = self._ds["step"].values
        wanted = (
            steps
            if steps is not None
            else [recorded[0], recorded[len(recorded) // 2], recorded[-1]]
        )
        return figures.neuron_gallery(
            self._ds, analysis, [self.nearest_step(int(s)) for s in wanted], which, neurons
        )

    def structured(self, step) -> np.ndarray:
        """Indices of the neurons flagged structured at `step` (analysis Datasets)."""
        flags = self._ds["structured"].sel(step=self.nearest_step(step)).values.astype(bool)
        return self._ds["neuron"].values[flags]
