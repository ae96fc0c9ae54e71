"""Report figures: one function per figure, Datasets in, matplotlib Figure out. No I/O.

`analysis` is a mechgrok.analyze result (dims step, neuron); `trajectory` the matching
mechgrok.open_trajectory Dataset. Colors are the Okabe-Ito colorblind-safe palette.
"""

from __future__ import annotations

import functools

import matplotlib
import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from mechgrok.analysis.fourier import wrap_angle
from mechgrok.analysis.variables import label as variable_label
from mechgrok.analysis.variables import law_sign

OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
    "gray": "#999999",
}
# Applied only while a report figure is drawn (matplotlib.rc_context), never globally, and
# figures are plain Figure objects (no pyplot, no backend switch): a notebook's own plots are untouched.
STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 100,
}


def _styled(figure_function):
    @functools.wraps(figure_function)
    def draw(*args, **kwargs) -> Figure:
        with matplotlib.rc_context(STYLE):  # type: ignore[arg-type]  # keys are rc names
            return figure_function(*args, **kwargs)

    return draw


def _subplots(*grid, figsize, **options):
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(*grid, **options)


def _step_axis(ax, steps: np.ndarray) -> None:
    """Steps on a symmetric-log axis: linear up to 10 (step 0 shows), logarithmic beyond."""
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlim(0, max(float(steps[-1]), 10) * 1.05)
    ax.set_xlabel("training step (optimizer updates; linear to 10, then log)")


def _mark_events(ax, analysis: xr.Dataset, label: bool = False) -> None:
    events = [
        ("saturation_step", "saturation", OKABE_ITO["gray"], ":"),
        (
            "structure_step",
            "structure (Sq->Cos >= {:.2g})".format(analysis.attrs.get("structure_acc", 0.9)),
            OKABE_ITO["green"],
            "--",
        ),
        (
            "grok_step",
            "grok (val >= {:.2g})".format(analysis.attrs.get("grok_acc", 0.9)),
            OKABE_ITO["vermillion"],
            "--",
        ),
    ]
    for key, text, color, style in events:
        step = int(analysis.attrs.get(key, -1))
        if step >= 0:
            ax.axvline(
                step, color=color, linestyle=style, linewidth=1.2, label=text if label else None
            )


@_styled
def timeline(analysis: xr.Dataset, trajectory: xr.Dataset | None = None) -> Figure:
    """Accuracies (real, idealized, controls), structure statistics and phase-sum correlation
    against training step, with the saturation, structure and grok steps marked."""
    steps = analysis["step"].values
    sign = law_sign(analysis.attrs)
    fig, axes = _subplots(4, 1, figsize=(10, 12.5), sharex=True)
    ax = axes[0]
    if "train_acc" in analysis:
        ax.plot(
            steps,
            analysis["train_acc"],
            color=OKABE_ITO["black"],
            lw=1.5,
            label=variable_label("train_acc", sign),
        )
    if "val_acc" in analysis:
        ax.plot(
            steps,
            analysis["val_acc"],
            color=OKABE_ITO["vermillion"],
            lw=2,
            label=variable_label("val_acc", sign),
        )
    ax.plot(
        steps,
        analysis["ideal_acc"],
        color=OKABE_ITO["blue"],
        lw=2,
        label=variable_label("ideal_acc", sign),
    )
    if "ideal_acc_own" in analysis:
        ax.plot(
            steps,
            analysis["ideal_acc_own"],
            color=OKABE_ITO["green"],
            lw=1.5,
            ls="-.",
            label=variable_label("ideal_acc_own", sign),
        )
    ax.plot(
        steps,
        analysis["ideal_acc_sq_sq"],
        color=OKABE_ITO["sky"],
        lw=1.2,
        label=variable_label("ideal_acc_sq_sq", sign),
    )
    ax.plot(
        steps,
        analysis["ideal_acc_cos_cos"],
        color=OKABE_ITO["purple"],
        lw=1.2,
        label=variable_label("ideal_acc_cos_cos", sign),
    )
    ax.plot(
        steps,
        analysis["ideal_acc_phase_sum"],
        color=OKABE_ITO["orange"],
        lw=1.2,
        ls="--",
        label=variable_label("ideal_acc_phase_sum", sign) + " (free)",
    )
    draws = int(analysis.attrs.get("shuffle_draws", 1))
    ax.plot(
        steps,
        analysis["ideal_acc_shuffled"],
        color=OKABE_ITO["gray"],
        lw=1.2,
        ls=":",
        label=variable_label("ideal_acc_shuffled", sign) + f" of {draws}",
    )
    if "ideal_acc_shuffled_hi" in analysis:
        ax.fill_between(
            steps,
            analysis["ideal_acc_shuffled"],
            analysis["ideal_acc_shuffled_hi"],
            color=OKABE_ITO["gray"],
            alpha=0.3,
            lw=0,
            label="shuffled: up to 95th percentile",
        )
    _mark_events(ax, analysis, label=True)
    ax.set_ylabel("accuracy (share of pairs)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Accuracy: real model against idealized models read from its weights")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)

    ax = axes[1]
    for name, color, style, label in (
        ("train_loss", OKABE_ITO["black"], "-", "train loss (labels used)"),
        ("val_loss", OKABE_ITO["vermillion"], "-", "validation loss"),
        (
            "restricted_loss",
            OKABE_ITO["blue"],
            "--",
            "restricted loss (key frequencies only, validation)",
        ),
        (
            "excluded_loss",
            OKABE_ITO["purple"],
            "--",
            "excluded loss (key frequencies removed, training)",
        ),
    ):
        if name in analysis and np.isfinite(analysis[name].values).any():
            ax.plot(steps, analysis[name], color=color, ls=style, lw=1.5, label=label)
    modulus = int(analysis.attrs.get("modulus", analysis.sizes.get("token", 2)))
    ax.axhline(
        np.log(modulus),
        color=OKABE_ITO["gray"],
        ls=":",
        lw=1,
        label=f"chance: ln p = {np.log(modulus):.2f}",
    )
    ax.set_yscale("log")
    ax.set_ylabel("cross-entropy (nats)")
    _mark_events(ax, analysis)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    key = np.atleast_1d(analysis.attrs.get("key_freqs", []))
    ax.set_title(f"Losses and Nanda et al.'s progress measures ({key.size} key frequencies)")

    ax = axes[2]
    width = analysis.sizes["neuron"]
    ax.plot(
        steps,
        analysis["n_structured"] / width,
        color=OKABE_ITO["green"],
        lw=2,
        label="share of neurons structured",
    )
    ax.plot(
        steps,
        analysis["binarization_median"],
        color=OKABE_ITO["blue"],
        lw=1.5,
        label="median binarization of W_a (1 square, -1 cosine)",
    )
    ax.set_ylabel("share / binarization")
    ax.set_ylim(-1.05, 1.05)
    twin = ax.twinx()
    twin.plot(
        steps,
        analysis["periodicity_median"],
        color=OKABE_ITO["orange"],
        lw=1.5,
        label="median periodicity of W_a",
    )
    twin.axhline(
        analysis.attrs["threshold"],
        color=OKABE_ITO["orange"],
        ls=":",
        lw=1,
        label="structured threshold",
    )
    twin.set_ylabel("periodicity (Eq. 1)")
    twin.spines["right"].set_visible(True)
    _mark_events(ax, analysis)
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(
        lines[0] + more[0],
        lines[1] + more[1],
        loc="center left",
        bbox_to_anchor=(1.08, 0.5),
        frameon=False,
    )
    ax.set_title("Structure: square-wave neurons sharpen and pass the periodicity threshold")

    ax = axes[3]
    ax.plot(
        steps,
        analysis["r_all"],
        color=OKABE_ITO["gray"],
        lw=1.5,
        label=variable_label("r_all", sign),
    )
    ax.plot(
        steps,
        analysis["r_structured"],
        color=OKABE_ITO["blue"],
        lw=2,
        label=variable_label("r_structured", sign),
    )
    ax.plot(
        steps,
        analysis["phase_sum_coherence"],
        color=OKABE_ITO["green"],
        lw=1.2,
        ls="--",
        label=variable_label("phase_sum_coherence", sign),
    )
    _mark_events(ax, analysis)
    ax.set_ylabel("circular correlation")
    ax.set_ylim(-0.3, 1.05)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title(
        f"Phase law phi_out = {'phi_a + phi_b' if sign > 0 else 'phi_a - phi_b'} (Fisher-Lee r)"
    )
    _step_axis(ax, steps)
    return fig


def gallery_neurons(analysis: xr.Dataset, count: int = 4) -> np.ndarray:
    """The most periodic structured neurons at the last snapshot (or the most periodic, if
    none is structured), at most `count`."""
    last = analysis.isel(step=-1)
    periodicity = np.nan_to_num(last["periodicity_a"].values, nan=-1.0)
    structured = last["structured"].values.astype(bool)
    order = np.argsort(-(periodicity + 1e6 * structured))
    return last["neuron"].values[order[:count]]


@_styled
def neuron_gallery(
    trajectory: xr.Dataset,
    analysis: xr.Dataset,
    steps: list[int],
    which: str = "W_a",
    neurons: np.ndarray | None = None,
) -> Figure:
    """Actual rows (W_a blue, W_b vermillion) of a few neurons against their ideal square waves
    (gray), at the given steps (columns), zoomed to at most 5 periods (paper Figs. 1-2)."""
    neurons = gallery_neurons(analysis) if neurons is None else neurons
    color = OKABE_ITO["blue"] if which == "W_a" else OKABE_ITO["vermillion"]
    fig, axes = _subplots(
        len(neurons),
        len(steps),
        figsize=(3.4 * len(steps), 1.9 * len(neurons) + 0.6),
        squeeze=False,
    )
    group = trajectory.mechgrok.group()
    p = group.n
    x_label = (
        "token x (first <= 5 periods)"
        if group.generator is None
        else f"position i: token {group.generator}^i (<= 5 periods)"
    )
    for col, step in enumerate(steps):
        for row, neuron in enumerate(neurons):
            ax = axes[row, col]
            view = trajectory.mechgrok.neuron(int(neuron), step=int(step))
            freq = int(view["freq"])
            shown = p if freq == 0 else min(p, int(np.ceil(5 * p / freq)))
            tokens = np.arange(shown)
            ax.plot(
                tokens,
                view[f"{which}_ideal"].values[:shown],
                color=OKABE_ITO["gray"],
                lw=2.2,
                drawstyle="steps-mid",
                label="ideal square wave",
            )
            ax.plot(
                tokens,
                view[which].values[:shown],
                color=color,
                lw=0,
                marker="o",
                ms=3.2,
                label=f"actual {which}",
            )
            periodicity = float(
                analysis["periodicity_a" if which == "W_a" else "periodicity_b"].sel(
                    step=step, neuron=neuron
                )
            )
            ax.set_title(
                f"neuron {neuron}, step {step:,}: k={freq}, periodicity {periodicity:.1f}",
                fontsize=8.5,
            )
            if col == 0:
                ax.set_ylabel("weight")
            if row == len(neurons) - 1:
                ax.set_xlabel(x_label)
    axes[0, -1].legend(loc="upper right", fontsize=7.5, frameon=True)
    fig.suptitle(
        f"{which} rows against their ideal square waves (intermediate values only at sign changes)"
    )
    return fig


@_styled
def phase_scatter(panels: list[tuple[xr.Dataset, int, str]], columns: int = 3) -> Figure:
    """phi_out against wrap(phi_a + phi_b) per neuron, colored by W_a periodicity, with r and r'
    (paper Figs. 4-5). One panel per (analysis, step, label), `columns` to a row."""
    columns = min(columns, len(panels))
    rows = int(np.ceil(len(panels) / columns))
    fig, axes = _subplots(rows, columns, figsize=(4.3 * columns + 1, 4.3 * rows), squeeze=False)
    vmax = max(
        max(float(np.nanmax(a["periodicity_a"].values)), a.attrs["threshold"] * 1.5)
        for a, _, _ in panels
    )
    for ax, (analysis, step, label) in zip(axes.flat, panels):
        at = analysis.sel(step=step)
        sign = law_sign(analysis.attrs)
        x = wrap_angle(at["phase_a"].values + sign * at["phase_b"].values)
        points = ax.scatter(
            x,
            at["phase_out"].values,
            c=at["periodicity_a"].values,
            cmap="viridis",
            vmin=0,
            vmax=vmax,
            s=12,
            edgecolors=np.where(at["structured"].values.astype(bool), "black", "none"),
            linewidths=0.5,
        )
        ax.plot([-np.pi, np.pi], [-np.pi, np.pi], color=OKABE_ITO["gray"], lw=1, ls="--")
        ax.set_xlim(-np.pi, np.pi)
        ax.set_ylim(-np.pi, np.pi)
        ax.set_xlabel(f"phi_a {'+' if sign > 0 else '-'} phi_b, wrapped (rad)")
        ax.set_ylabel("phi_out (rad)")
        r_structured = float(at["r_structured"])
        r_text = f"{r_structured:.4f}" if np.isfinite(r_structured) else "undefined"
        ax.set_title(
            f"{label}, step {int(step):,}\nr = {float(at['r_all']):.4f}, r' = {r_text} ({int(at['n_structured'])} structured)",
            fontsize=9,
        )
        ax.set_aspect("equal")
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    fig.colorbar(points, ax=axes, label="W_a periodicity (outlined: structured)", shrink=0.8)
    return fig


@_styled
def periodicity_panels(analysis: xr.Dataset) -> Figure:
    """Periodicity histogram at the last snapshot with both thresholds (the paper's bimodal
    split), the frequencies the structured neurons use, and a neuron x step heatmap of
    periodicity with neurons ordered by the step they first become structured."""
    fig = Figure(figsize=(11, 7.5), layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.35])
    last = analysis.isel(step=-1)
    ax = fig.add_subplot(grid[0, 0])
    values = last["periodicity_a"].values
    ax.hist(values[np.isfinite(values)], bins=40, color=OKABE_ITO["blue"])
    ax.axvline(
        analysis.attrs["threshold"],
        color=OKABE_ITO["vermillion"],
        ls="--",
        label=f"structured > {analysis.attrs['threshold']:.1f}",
    )
    ax.axvline(
        analysis.attrs["threshold_low"],
        color=OKABE_ITO["orange"],
        ls=":",
        label=f"unstructured < {analysis.attrs['threshold_low']:.1f}",
    )
    ax.set_xlabel("W_a periodicity (Eq. 1)")
    ax.set_ylabel("neurons")
    ax.set_title(f"Periodicity at step {int(last['step']):,}")
    ax.legend(frameon=False)

    ax = fig.add_subplot(grid[0, 1])
    structured = last["structured"].values.astype(bool)
    freqs = last["freq_a"].values[structured]
    p = int(analysis.attrs.get("modulus", 2 * int(np.nanmax(analysis["freq_a"].values)) + 1))
    counts = np.bincount(freqs, minlength=(p - 1) // 2 + 1)[1:]
    ax.bar(np.arange(1, counts.size + 1), counts, color=OKABE_ITO["green"])
    ax.set_xlabel("dominant frequency k of W_a")
    ax.set_ylabel("structured neurons")
    ax.set_title(
        f"Frequencies in use ({int(structured.sum())} structured neurons, {int((counts > 0).sum())} frequencies)"
    )

    ax = fig.add_subplot(grid[1, :])
    periodicity = analysis["periodicity_a"].values  # (step, neuron)
    flags = analysis["structured"].values.astype(bool)
    first = np.where(flags.any(0), flags.argmax(0), flags.shape[0])
    order = np.lexsort((-np.nan_to_num(periodicity[-1], nan=0), first))
    image = ax.imshow(
        periodicity[:, order].T,
        aspect="auto",
        interpolation="nearest",
        cmap="viridis",
        vmin=0,
        vmax=np.nanpercentile(periodicity, 99.5),
    )
    steps = analysis["step"].values
    ticks = np.unique(np.linspace(0, steps.size - 1, 8).astype(int))
    ax.set_xticks(ticks, [f"{int(steps[t]):,}" for t in ticks])
    ax.set_xlabel("snapshot (labelled by training step; spacing follows the snapshot schedule)")
    ax.set_ylabel("neuron (ordered by first structured step)")
    ax.set_title("W_a periodicity per neuron over training")
    fig.colorbar(image, ax=ax, label="periodicity")
    return fig


@_styled
def noise_curves(levels: list[tuple[float, dict]]) -> Figure:
    """Final validation accuracy and mean W_a periodicity against label noise (paper Fig. 3):
    `levels` are (noise, sweep_summary.summarize_seeds of its runs); the mean over seeds, and
    a band for the 95% bootstrap interval where two or more seeds stand behind it."""
    noise = np.array([level for level, _ in levels])
    fig, ax = _subplots(figsize=(7.5, 4.2))
    twin = ax.twinx()
    for axis, key, color, label in (
        (ax, "val_acc_final", OKABE_ITO["vermillion"], "final validation accuracy"),
        (twin, "periodicity_mean_final", OKABE_ITO["blue"], "mean W_a periodicity"),
    ):
        summaries = [summary[key] for _, summary in levels]
        axis.plot(noise, [s.mean for s in summaries], color=color, marker="o", label=label)
        axis.fill_between(
            noise,
            [s.low for s in summaries],
            [s.high for s in summaries],
            color=color,
            alpha=0.2,
            lw=0,
        )
        axis.set_ylabel(label, color=color)
    twin.spines["right"].set_visible(True)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("label noise alpha (share of training labels replaced)")
    seeds = sorted({summary["val_acc_final"].n for _, summary in levels})
    ax.set_title(
        f"Accuracy and periodicity across noise levels (mean over {'-'.join(map(str, seeds))} seed(s); band: 95% CI)"
    )
    return fig


@_styled
def activation_tables(analysis: xr.Dataset) -> Figure:
    """What each neuron's activation table over all pairs says, over training: the neurons
    clustered at each frequency (Nanda et al.'s 2D measure, share >= 0.85; the frequencies
    with most neurons at the end, the rest summed), how additive the pre-activation tables
    are (quartiles over neurons), and for a transformer each head's mean attention from '='
    to a and to b."""
    has_attention = "attention_a" in analysis
    fig, axes = _subplots(1, 3 if has_attention else 2, figsize=(13 if has_attention else 10, 3.6))
    steps = analysis["step"].values
    ax = axes[0]
    counts = analysis["neurons_per_frequency"].values  # (step, frequency)
    top = np.argsort(counts[-1])[::-1][:5]
    top = top[counts[-1, top] > 0]
    colors = list(OKABE_ITO.values())
    for i, k in enumerate(top):
        ax.plot(steps, counts[:, k], color=colors[i % len(colors)], label=f"k = {k + 1}")
    others = counts.sum(1) - counts[:, top].sum(1)
    ax.plot(steps, others, color=OKABE_ITO["gray"], ls=":", label="other frequencies")
    _step_axis(ax, steps)
    _mark_events(ax, analysis)
    ax.set_ylabel("neurons with >= 85% of variance in k")
    ax.set_title(
        f"Frequency clusters (end: {analysis['clustered_share'].values[-1]:.0%} clustered)"
    )
    ax.legend(frameon=False, fontsize=8)

    ax = axes[1]
    quartiles = np.nanpercentile(analysis["additivity"].values, [25, 50, 75], axis=1)
    ax.fill_between(
        steps,
        quartiles[0],
        quartiles[2],
        color=OKABE_ITO["blue"],
        alpha=0.25,
        label="25th-75th percentile",
    )
    ax.plot(steps, quartiles[1], color=OKABE_ITO["blue"], label="median")
    _step_axis(ax, steps)
    _mark_events(ax, analysis)
    low = float(np.nanmin(quartiles[0])) if np.isfinite(quartiles[0]).any() else 0.0
    ax.set_ylim(max(0.0, np.floor((low - 0.02) * 20) / 20), 1.005)
    ax.set_ylabel("additivity (share of variance in f(a) + g(b))")
    ax.set_title("How additive each neuron's input table is")
    ax.legend(frameon=False, fontsize=8, loc="lower left")

    if has_attention:
        ax = axes[2]
        for name, style in (("attention_a", "-"), ("attention_b", "--")):
            values = analysis[name].values  # (step, head)
            for head in range(values.shape[1]):
                ax.plot(
                    steps,
                    values[:, head],
                    ls=style,
                    color=colors[head % len(colors)],
                    label=f"head {head} to {name[-1]}",
                )
        ax.axhline(1 / 3, color=OKABE_ITO["gray"], lw=0.8, ls=":")
        _step_axis(ax, steps)
        _mark_events(ax, analysis)
        ax.set_ylim(0, 1)
        ax.set_ylabel("mean attention from '='")
        ax.set_title("Attention to a (solid) and b (dashed)")
        ax.legend(frameon=False, fontsize=7, ncol=2)
    return fig
