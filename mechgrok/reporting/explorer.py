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

MAX_SNAPSHOTS = 80  # snapshots carried per run for the scatter, neuron panel and heatmap
WEIGHT_BUDGET_BYTES = 12_000_000  # int8 weight rows of all runs together (base64 adds a third)
TIMELINE = (
    ("val_acc", "validation (real model)", "#D55E00"),
    ("ideal_acc", "Sq->Cos idealized", "#0072B2"),
    ("ideal_acc_own", "Sq->Cos, own frequencies", "#009E73"),
    ("ideal_acc_phase_sum", "control: phase sum (free)", "#E69F00"),
    ("ideal_acc_shuffled", "control: shuffled (mean)", "#999999"),
    ("train_acc", "train (labels used)", "#000000"),
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
                "label": label,
                "color": color,
                "y": np.round(analysis[var].values.astype(float), 4).tolist(),
            }
            for var, label, color in TIMELINE
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


def explorer_section(runs: list[dict]) -> str:
    """The explorer's HTML: controls, four plot areas, plotly.js (inlined), the data and the app."""
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
        "of the scatter or a row of the heatmap to select a neuron. Needs JavaScript; "
        + (
            "the static figures below show the same run without it."
            if len(runs) == 1
            else "below, each run's timeline is also a static figure, and <code>mechgrok report RUN.h5 --html</code> draws one run's "
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
        f"<script>{APP_JS}</script>"
    )


EXPLORER_CSS = """
.mg-controls { display: flex; gap: .8rem; align-items: center; flex-wrap: wrap; margin: .5rem 0; }
.mg-controls input[type=range] { flex: 1 1 240px; } #mg-step { font-variant-numeric: tabular-nums; min-width: 9rem; }
.mg-grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 460px), 1fr)); gap: .6rem; }
.mg-plot { background: white; border: 1px solid #e2e2e2; border-radius: 6px; min-height: 460px; }
.mg-wide { grid-column: 1 / -1; }
"""

APP_JS = r"""
(function () {
  const runs = JSON.parse(document.getElementById("mg-data").textContent);
  function decode(text, Type) {
    const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
    return new Type(bytes.buffer);
  }
  const decoded = runs.map((r) => ({
    stats: Object.fromEntries(Object.entries(r.stats).map(([k, v]) => [k, decode(v, Float32Array)])),
    freq: decode(r.freq, Int16Array), structured: decode(r.structured, Uint8Array),
    weights: decode(r.weights, Int8Array), scales: decode(r.scales, Float32Array),
  }));
  const state = { run: 0, at: 0, neuron: 0, timer: null };
  const slider = document.getElementById("mg-slider"), label = document.getElementById("mg-step");
  const wrap = (x) => x - 2 * Math.PI * Math.floor((x + Math.PI) / (2 * Math.PI));
  const layoutBase = { margin: { l: 55, r: 15, t: 35, b: 45 }, font: { size: 11 }, showlegend: true,
                       legend: { orientation: "h", y: -0.25 } };
  // three tools (save as PNG, zoom, reset; a double click resets too) leave the panels' titles clear
  const config = { displaylogo: false, responsive: true,
                   modeBarButtonsToRemove: ["zoomIn2d", "zoomOut2d", "autoScale2d", "pan2d", "select2d", "lasso2d",
                                            "toggleSpikelines", "hoverClosestCartesian", "hoverCompareCartesian", "sendDataToCloud"] };
  const run = () => runs[state.run], data = () => decoded[state.run];
  const stepOf = (at) => run().steps[run().subset[at]];
  const cell = (values, at, i) => values[at * run().neurons + i];

  function row(at, i, which) {
    const r = run(), n = r.n, base = ((at * r.neurons + i) * 3 + which) * n;
    const scale = data().scales[(at * r.neurons + i) * 3 + which];
    return Array.from(data().weights.subarray(base, base + n), (q) => q * scale);
  }
  function ideal(values, k, square) {  // the row's ideal wave at frequency k (paper's definitions)
    const n = values.length;
    if (k <= 0) return values.map(() => null);
    let re = 0, im = 0, mean = 0;
    values.forEach((w, x) => { re += w * Math.cos(2 * Math.PI * k * x / n); im -= w * Math.sin(2 * Math.PI * k * x / n); mean += w / n; });
    const phase = -Math.atan2(im, re), amp = 2 * Math.hypot(re, im) / n;
    const theta = values.map((_, x) => 2 * Math.PI * k * x / n - phase);
    if (!square) return theta.map((t) => mean + amp * Math.cos(t));
    const median = (a) => { const s = a.slice().sort((p, q) => p - q); return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : 0; };
    const high = median(values.filter((_, x) => Math.cos(theta[x]) >= 0)), low = median(values.filter((_, x) => Math.cos(theta[x]) < 0));
    return theta.map((t) => (Math.cos(t) >= 0 ? high : low));
  }

  function drawTimeline() {
    const r = run();
    const traces = r.timeline.map((t) => ({ x: r.steps, y: t.y, name: t.label, mode: "lines", line: { color: t.color, width: 1.8 } }));
    const marks = [["saturation", r.saturation, "#999999"], ["structure", r.structure, "#009E73"], ["grok", r.grok, "#D55E00"]]
      .filter((m) => m[1] >= 0).map((m) => ({ type: "line", x0: m[1], x1: m[1], yref: "paper", y0: 0, y1: 1, line: { color: m[2], dash: "dot", width: 1 } }));
    Plotly.react("mg-timeline", traces, Object.assign({}, layoutBase, {
      title: { text: "Accuracy over training (cursor: the step shown)" }, xaxis: { type: "log", title: "training step (log; step 0 at 1)" },
      yaxis: { range: [-0.02, 1.02], title: "accuracy" }, shapes: marks.concat([cursorShape()]) }), config);
  }
  function cursorShape() {
    return { type: "line", x0: Math.max(stepOf(state.at), 1), x1: Math.max(stepOf(state.at), 1), yref: "paper", y0: 0, y1: 1,
             line: { color: "#0072B2", width: 2 } };
  }
  function drawScatter() {
    const r = run(), d = data(), at = state.at, x = [], y = [], c = [], ids = [], outline = [];
    for (let i = 0; i < r.neurons; i++) {
      const a = cell(d.stats.phase_a, at, i), b = cell(d.stats.phase_b, at, i), o = cell(d.stats.phase_out, at, i);
      if (!Number.isFinite(a) || !Number.isFinite(b) || !Number.isFinite(o)) continue;
      x.push(wrap(a + r.sign * b)); y.push(o); c.push(cell(d.stats.periodicity_a, at, i)); ids.push(i);
      outline.push(cell(d.structured, at, i) ? "#000000" : "rgba(0,0,0,0)");
    }
    const law = r.sign > 0 ? "phi_a + phi_b" : "phi_a - phi_b";
    Plotly.react("mg-scatter", [
      { x: [-Math.PI, Math.PI], y: [-Math.PI, Math.PI], mode: "lines", line: { color: "#999", dash: "dash" }, hoverinfo: "skip", showlegend: false },
      { x, y, customdata: ids, mode: "markers", name: "neurons", showlegend: false,
        marker: { color: c, colorscale: "Viridis", cmin: 0, size: 8, line: { color: outline, width: 1 }, colorbar: { title: "periodicity", thickness: 10 } },
        hovertemplate: "neuron %{customdata}<br>periodicity %{marker.color:.1f}<extra></extra>" },
      { x: ids.indexOf(state.neuron) >= 0 ? [x[ids.indexOf(state.neuron)]] : [], y: ids.indexOf(state.neuron) >= 0 ? [y[ids.indexOf(state.neuron)]] : [],
        mode: "markers", marker: { size: 16, color: "rgba(0,0,0,0)", line: { color: "#D55E00", width: 2.5 } }, hoverinfo: "skip", showlegend: false },
    ], Object.assign({}, layoutBase, { title: { text: "phi_out against " + law + " at step " + stepOf(at).toLocaleString("en") },
      xaxis: { range: [-Math.PI, Math.PI], title: law + ", wrapped (rad)" }, yaxis: { range: [-Math.PI, Math.PI], title: "phi_out (rad)", scaleanchor: "x" } }), config);
  }
  function drawNeuron() {
    const r = run(), d = data(), at = state.at, i = state.neuron, k = cell(d.freq, at, i);
    const xs = r.tokens.map((_, x) => x), names = ["W_a", "W_b", "W_out"], colors = ["#0072B2", "#D55E00", "#009E73"];
    const traces = [];
    names.forEach((name, w) => {
      const values = row(at, i, w);
      const axes = { xaxis: "x" + (w ? w + 1 : ""), yaxis: "y" + (w ? w + 1 : "") };
      traces.push(Object.assign({ x: xs, y: values, name: name, mode: "markers", marker: { color: colors[w], size: 5 } }, axes));
      traces.push(Object.assign({ x: xs, y: ideal(values, k, w < 2), name: name + (w < 2 ? " ideal square" : " ideal cosine"), mode: "lines",
                                  line: { color: "#999", shape: w < 2 ? "hvh" : "linear" } }, axes));
    });
    const xTitle = r.generator ? "position i: token " + r.generator + "^i" : "token x";
    Plotly.react("mg-neuron", traces, Object.assign({}, layoutBase, {
      title: { text: "neuron " + i + ", step " + stepOf(at).toLocaleString("en") + ": k = " + k + " (gray: ideal)" },
      grid: { rows: 3, columns: 1, pattern: "independent", roworder: "top to bottom" }, height: 460,
      xaxis3: { title: xTitle }, yaxis: { title: "W_a" }, yaxis2: { title: "W_b" }, yaxis3: { title: "W_out" }, showlegend: false }), config);
    const fmt = (v, digits) => (Number.isFinite(v) ? v.toFixed(digits) : "undefined");
    document.getElementById("mg-neuron-text").textContent =
      "neuron " + i + " at step " + stepOf(at).toLocaleString("en") + ": frequency k = " + k + ", phi_a = " + fmt(cell(d.stats.phase_a, at, i), 3) +
      ", phi_b = " + fmt(cell(d.stats.phase_b, at, i), 3) + ", phi_out = " + fmt(cell(d.stats.phase_out, at, i), 3) +
      " rad, periodicity " + fmt(cell(d.stats.periodicity_a, at, i), 2) + ", binarization " + fmt(cell(d.stats.binarization_a, at, i), 2) +
      (cell(d.structured, at, i) ? " (structured)" : "");
  }
  function drawHeatmap() {
    const r = run(), d = data(), z = r.heat_order.map((i) => r.subset.map((_, at) => { const v = cell(d.stats.periodicity_a, at, i); return Number.isFinite(v) ? v : null; }));
    Plotly.react("mg-heatmap", [{ z, x: r.subset.map((_, at) => at), y: r.heat_order.map((_, row) => row), customdata: r.heat_order.map((i) => r.subset.map(() => i)),
      type: "heatmap", colorscale: "Viridis", colorbar: { title: "periodicity", thickness: 10 },
      hovertemplate: "neuron %{customdata}, step %{text}<br>periodicity %{z:.1f}<extra></extra>",
      text: r.heat_order.map(() => r.subset.map((s) => r.steps[s].toLocaleString("en"))) }],
      Object.assign({}, layoutBase, { title: { text: "W_a periodicity per neuron (rows ordered by first structured step; click to select)" },
        xaxis: { title: "snapshot (of " + r.subset.length + " carried)" }, yaxis: { title: "neuron (ordered)", autorange: "reversed" },
        shapes: [{ type: "line", x0: state.at, x1: state.at, yref: "paper", y0: 0, y1: 1, line: { color: "#D55E00", width: 2 } }] }), config);
  }
  function drawAll() {
    slider.max = String(run().subset.length - 1);
    slider.value = String(state.at);
    label.textContent = "step " + stepOf(state.at).toLocaleString("en");
    drawTimeline(); drawScatter(); drawNeuron(); drawHeatmap();
  }
  function nearest(step) {
    const r = run();
    let best = 0;
    r.subset.forEach((s, at) => { if (Math.abs(r.steps[s] - step) < Math.abs(r.steps[r.subset[best]] - step)) best = at; });
    return best;
  }
  function setStep(step) { state.at = nearest(Number(step)); drawAll(); return stepOf(state.at); }
  function setNeuron(i) { state.neuron = Math.max(0, Math.min(run().neurons - 1, Math.round(Number(i)))); drawScatter(); drawNeuron(); return state.neuron; }
  function setRun(i) { state.run = Math.max(0, Math.min(runs.length - 1, Number(i))); state.at = Math.min(state.at, run().subset.length - 1);
                       state.neuron = Math.min(state.neuron, run().neurons - 1); drawAll(); }

  slider.addEventListener("input", () => { state.at = Number(slider.value); drawAll(); });
  document.getElementById("mg-play").addEventListener("click", (event) => {
    if (state.timer) { clearInterval(state.timer); state.timer = null; event.target.textContent = "play"; return; }
    event.target.textContent = "pause";
    state.timer = setInterval(() => { state.at = (state.at + 1) % run().subset.length; drawAll(); }, 350);
  });
  const selector = document.getElementById("mg-run");
  if (selector) selector.addEventListener("change", () => setRun(selector.value));
  const first = decoded[0], structuredAtEnd = [];
  for (let i = 0; i < runs[0].neurons; i++) if (cell(first.structured, runs[0].subset.length - 1, i)) structuredAtEnd.push(i);
  state.neuron = structuredAtEnd.length ? structuredAtEnd[0] : 0;
  state.at = runs[0].subset.length - 1;
  drawAll();
  document.getElementById("mg-scatter").on("plotly_click", (event) => {
    const point = event.points.find((p) => p.customdata !== undefined);
    if (point) setNeuron(point.customdata);
  });
  document.getElementById("mg-heatmap").on("plotly_click", (event) => { if (event.points.length) setNeuron(event.points[0].customdata); });
  window.mechgrokExplorer = { setStep, currentStep: () => stepOf(state.at), setNeuron, currentNeuron: () => state.neuron, setRun,
                              runs: () => runs.map((r) => r.name) };
})();
"""
