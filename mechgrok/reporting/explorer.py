"""The report's interactive explorer: a step slider that moves a cursor on the timeline, the
phase-law scatter, one neuron's rows with their ideal waves, and the neuron x step
periodicity heatmap together, inside the self-contained page (no server, no network).

Plotting is Plotly (plotly.js inlined once from the Python package, ~4.8 MB): a well-kept
library with hover, click events and incremental updates (Plotly.react), which hand-written
SVG would have to re-implement. The data is embedded compactly: per-neuron statistics as
float32, weight rows as int8 with one float32 scale per row, on at most MAX_SNAPSHOTS
snapshots spread over the run (the timeline keeps every snapshot), so the default run's page
stays well under 25 MB. JS hook for automation and tests: window.mechgrokExplorer with
setStep(step), currentStep(), setNeuron(i), currentNeuron(), setRun(i), runs().
"""

from __future__ import annotations

import base64
import html
import json

import numpy as np
import xarray as xr

from mechgrok.analysis.pipeline import trajectory_group, weights_in_group_order
from mechgrok.analysis.variables import label as variable_label
from mechgrok.analysis.variables import law_sign
from mechgrok.reporting.static import static_text

MAX_SNAPSHOTS = 80  # snapshots carried per run for the scatter, neuron panel and heatmap
WEIGHT_BUDGET_BYTES = 12_000_000  # int8 weight rows of all runs together (base64 adds a third)
TIMELINE = (  # (variable, colour); labels from analysis/variables.py
    ("val_acc", "#D55E00"),
    ("ideal_acc", "#0072B2"),
    ("ideal_acc_own", "#009E73"),
    ("ideal_acc_phase_sum", "#E69F00"),
    ("ideal_acc_shuffled", "#999999"),
    ("train_acc", "#000000"),
)


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def snapshot_subset(n_steps: int, keep: list[int], limit: int = MAX_SNAPSHOTS) -> np.ndarray:
    """Indices of at most `limit` snapshots spread evenly over 0..n_steps-1, always with `keep`."""
    chosen = set(
        np.unique(np.linspace(0, n_steps - 1, min(limit, n_steps)).round().astype(int)).tolist()
    )
    chosen.update(k for k in keep if 0 <= k < n_steps)
    return np.array(sorted(chosen))


def snapshots_per_run(n_runs: int, neurons: int, tokens: int) -> int:
    """How many snapshots each of `n_runs` runs carries so that their weight rows fit
    WEIGHT_BUDGET_BYTES: at most MAX_SNAPSHOTS, at least 8."""
    return int(np.clip(WEIGHT_BUDGET_BYTES // (n_runs * neurons * tokens * 3), 8, MAX_SNAPSHOTS))


def explorer_data(
    name: str, trajectory: xr.Dataset, analysis: xr.Dataset, limit: int = MAX_SNAPSHOTS
) -> dict:
    """Everything the explorer draws for one run, JSON-ready (arrays base64-encoded), on at
    most `limit` snapshots (plus saturation and the last)."""
    steps = analysis["step"].values
    saturation = int(analysis.attrs.get("saturation_step", -1))
    keep = [int(np.searchsorted(steps, saturation))] if saturation >= 0 else []
    index = snapshot_subset(steps.size, keep + [steps.size - 1], limit)
    view = trajectory_group(trajectory)
    weights = weights_in_group_order(trajectory.isel(step=index), view)
    rows = np.stack([weights[name] for name in ("W_a", "W_b", "W_out")], axis=2).astype(
        np.float32
    )  # (step, neuron, 3, n)
    scale = np.abs(rows).max(-1, keepdims=True) / 127
    scale[scale == 0] = 1
    quantized = np.round(rows / scale).astype(np.int8)
    chosen = analysis.isel(step=index)

    def per_neuron(variable: str) -> str:
        return _b64(chosen[variable].values.astype(np.float32))

    periodicity = analysis["periodicity_a"].values
    flags = analysis["structured"].values.astype(bool)
    first = np.where(flags.any(0), flags.argmax(0), flags.shape[0])
    order = np.lexsort(
        (-np.nan_to_num(periodicity[-1], nan=0), first)
    )  # heatmap rows: by first structured step
    return {
        "name": name,
        "steps": steps.tolist(),
        "subset": index.tolist(),
        "neurons": int(analysis.sizes["neuron"]),
        "tokens": view.order.tolist(),
        "n": view.n,
        "sign": view.sign,
        "generator": view.generator,
        "saturation": saturation,
        "grok": int(analysis.attrs.get("grok_step", -1)),
        "structure": int(analysis.attrs.get("structure_step", -1)),
        "threshold": float(analysis.attrs["threshold"]),
        "timeline": [
            {
                "label": variable_label(var, law_sign(analysis.attrs)),
                "color": color,
                "y": np.round(analysis[var].values.astype(float), 4).tolist(),
            }
            for var, color in TIMELINE
            if var in analysis
        ],
        "stats": {
            var: per_neuron(var)
            for var in ("phase_a", "phase_b", "phase_out", "periodicity_a", "binarization_a")
        },
        "freq": _b64(chosen["freq_a"].values.astype(np.int16)),
        "structured": _b64(chosen["structured"].values.astype(np.uint8)),
        "weights": _b64(quantized),
        "scales": _b64(scale[..., 0].astype(np.float32)),
        "heat_order": order.tolist(),
    }


def explorer_section(runs: list[dict], static_below: bool = True) -> str:
    """The explorer's HTML: controls, four plot areas, plotly.js (inlined), the data and the
    app. `static_below`: the page goes on with static figures (a report; not a notebook)."""
    from plotly.offline import get_plotlyjs

    selector = ""
    if len(runs) > 1:
        options = "".join(
            f'<option value="{i}">{html.escape(r["name"])}</option>' for i, r in enumerate(runs)
        )
        selector = f'<label>run <select id="mg-run">{options}</select></label>'
    data = json.dumps(runs, separators=(",", ":")).replace("</", "<\\/")
    return (
        '<h2 id="explorer">Explorer: scrub through training</h2>'
        '<p class="muted">Move the slider (or press play) to see the algorithm form: the cursor on the timeline, the phase-law '
        "scatter, the selected neuron's rows with their ideal waves, and the periodicity heatmap move together. Click a point "
        "of the scatter or a row of the heatmap to select a neuron. Needs JavaScript"
        + (
            "."
            if not static_below
            else "; the static figures below show the same run without it."
            if len(runs) == 1
            else "; below, each run's timeline is also a static figure, and <code>mechgrok report RUN.h5 --html</code> draws one run's "
            "neurons, phases and periodicity statically."
        )
        + "</p>"
        f'<div class="mg-controls">{selector}<button id="mg-play" type="button">play</button>'
        '<input id="mg-slider" type="range" min="0" max="0" value="0" step="1" aria-label="training step">'
        '<span id="mg-step"></span></div>'
        '<div class="mg-grid"><div id="mg-timeline" class="mg-plot mg-wide"></div><div id="mg-scatter" class="mg-plot"></div>'
        '<div id="mg-neuron" class="mg-plot"></div><div id="mg-heatmap" class="mg-plot mg-wide"></div></div>'
        f'<p id="mg-neuron-text" class="muted"></p>'
        f"<script>{get_plotlyjs()}</script>"
        f'<script type="application/json" id="mg-data">{data}</script>'
        f"<script>{static_text('explorer.js')}</script>"
    )
