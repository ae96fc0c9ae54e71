// The offline explorer of `mechgrok report --html`: reads the runs' JSON from #mg-data
// and draws them with Plotly (inlined in the page). Exposes window.mechgrokExplorer.
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

  // steps run on a log axis as step + 1, so that step 0 has a place; hovers show the step itself
  const logStep = (step) => step + 1;
  const CURSOR = "#CC79A7";  // a colour of its own: no accuracy line uses it
  function drawTimeline() {
    const r = run(), xs = r.steps.map(logStep);
    const traces = r.timeline.map((t) => ({ x: xs, y: t.y, name: t.label, mode: "lines", line: { color: t.color, width: 1.8 },
                                            customdata: r.steps, hovertemplate: "step %{customdata:,}: %{y:.3f}<extra>" + t.label + "</extra>" }));
    [["saturation step", r.saturation, "#999999"], ["structure step", r.structure, "#009E73"], ["grok step", r.grok, "#D55E00"]]
      .filter((m) => m[1] >= 0).forEach((m) => traces.push({ x: [logStep(m[1]), logStep(m[1])], y: [0, 1], name: m[0] + " (" + m[1].toLocaleString("en") + ")",
        mode: "lines", line: { color: m[2], dash: "dot", width: 1.2 }, hoverinfo: "skip" }));
    traces.push({ x: [logStep(stepOf(state.at)), logStep(stepOf(state.at))], y: [-0.02, 1.02], name: "step shown",
                  mode: "lines", line: { color: CURSOR, width: 2 }, hoverinfo: "skip" });
    Plotly.react("mg-timeline", traces, Object.assign({}, layoutBase, {
      title: { text: "Accuracy over training" }, xaxis: { type: "log", title: "training step + 1 (log scale, so step 0 shows)" },
      yaxis: { range: [-0.02, 1.02], title: "accuracy" } }), config);
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
      xaxis3: { title: xTitle }, yaxis: { title: "W_a: from a" }, yaxis2: { title: "W_b: from b" }, yaxis3: { title: "W_out: to class" },
      showlegend: false }), config);
    const fmt = (v, digits) => (Number.isFinite(v) ? v.toFixed(digits) : "undefined");
    document.getElementById("mg-neuron-text").textContent =
      "neuron " + i + " at step " + stepOf(at).toLocaleString("en") + ": frequency k = " + k + ", phi_a = " + fmt(cell(d.stats.phase_a, at, i), 3) +
      ", phi_b = " + fmt(cell(d.stats.phase_b, at, i), 3) + ", phi_out = " + fmt(cell(d.stats.phase_out, at, i), 3) +
      " rad, periodicity " + fmt(cell(d.stats.periodicity_a, at, i), 2) + ", binarization " + fmt(cell(d.stats.binarization_a, at, i), 2) +
      (cell(d.structured, at, i) ? " (structured)" : "");
  }
  function drawHeatmap() {
    const r = run(), d = data(), z = r.heat_order.map((i) => r.subset.map((_, at) => { const v = cell(d.stats.periodicity_a, at, i); return Number.isFinite(v) ? v : null; }));
    Plotly.react("mg-heatmap", [{ z, x: r.subset.map((s) => logStep(r.steps[s])), y: r.heat_order.map((i) => "n" + i), customdata: r.heat_order.map((i) => r.subset.map(() => i)),
      type: "heatmap", colorscale: "Viridis", colorbar: { title: "periodicity", thickness: 10 },
      hovertemplate: "neuron %{customdata}, step %{text}<br>periodicity %{z:.1f}<extra></extra>",
      text: r.heat_order.map(() => r.subset.map((s) => r.steps[s].toLocaleString("en"))) }],
      Object.assign({}, layoutBase, { title: { text: "W_a periodicity per neuron (rows ordered by first structured step; click to select)" },
        xaxis: { type: "log", title: "training step + 1 (log scale)" }, yaxis: { title: "neuron id", autorange: "reversed", type: "category" },
        shapes: [{ type: "line", x0: logStep(stepOf(state.at)), x1: logStep(stepOf(state.at)), yref: "paper", y0: 0, y1: 1, line: { color: CURSOR, width: 2 } }] }), config);
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
                       state.neuron = Math.min(state.neuron, run().neurons - 1);
                       const selector = document.getElementById("mg-run"); if (selector) selector.value = String(state.run);
                       drawAll(); return state.run; }

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
                              currentRun: () => state.run,
                              runs: () => runs.map((r) => r.name) };
})();
