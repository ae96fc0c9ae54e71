"""`mechgrok report`: one self-contained HTML page from one or several trajectories
(analyzing each where no current analysis exists)."""

from __future__ import annotations

import html
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from mechgrok.analysis.accessor import (
    format_final_step,
    format_grok_step,
    format_lead,
    format_number,
    format_step,
    format_waveform,
    headline_rows,
)
from mechgrok.analysis.pipeline import analyze, default_analysis_path
from mechgrok.analysis.variables import law_sign
from mechgrok.config import SATURATION_TRAIN_ACC
from mechgrok.errors import InvalidOptionError, MechgrokWarning
from mechgrok.operations import recorded_operation
from mechgrok.paper import FIG5, paper_row
from mechgrok.reporting import figures
from mechgrok.reporting.explorer import explorer_data, explorer_section, snapshots_per_run
from mechgrok.reporting.webpage import cards_html, figure_html, figure_png, page, table_html
from mechgrok.store.outputs import (
    atomic_output,
    check_output,
    check_space,
    write_failure,
    write_text,
)
from mechgrok.store.reader import open_trajectory, run_state, trajectory_identity
from mechgrok.sweep.summary import (
    TABLE2_COLUMNS,
    group_by_options,
    run_numbers,
    summarize_seeds,
    varying_options,
)

DEFAULT_REPORT_DIR = Path("reports")

PHI_SUM = "&phi;<sub>a</sub> + &phi;<sub>b</sub>"  # the law's placeholder in DEFINITIONS


def _law(signs: set[int], html_sub: bool = False) -> tuple[str, str]:
    """(phase law, token pair) in HTML for runs whose laws have `signs`: phi_a + phi_b (add,
    mul), phi_a - phi_b (sub, div), or both spelled for a page that mixes them."""
    a, b = ("&phi;<sub>a</sub>", "&phi;<sub>b</sub>") if html_sub else ("&phi;_a", "&phi;_b")
    if signs == {-1}:
        return f"{a} - {b}", "a - b"
    if signs == {1}:
        return f"{a} + {b}", "a + b"
    return f"{a} &plusmn; {b} (each run's law)", "a &plusmn; b"


def definitions(signs: set[int]) -> str:
    """The page's definitions, in the words of its runs' phase laws."""
    law, pair = _law(signs, html_sub=True)
    return DEFINITIONS.replace(PHI_SUM, law).replace("(a+b)", f"({pair})")


DEFINITIONS = """<ul>
<li><b>DFT</b> of a row w over tokens x = 0..p-1: F[k] = &sum;<sub>x</sub> w[x] e<sup>-2&pi;ikx/p</sup>. Dominant frequency
k* = argmax |F[k]|, k = 1..(p-1)/2 (0 for dead or constant rows). Phase &phi; = -angle F[k*] in radians, wrapped to
[-&pi;, &pi;): rows are modelled as f(2&pi;k*x/p - &phi;). Phases of W_b and W_out are read at W_a's frequency.</li>
<li><b>Periodicity</b> (paper Eq. 1): max<sub>k</sub>|F[k]| / mean<sub>k=1..p-1</sub>|F[k]|: (p-1)/2 for a cosine, ~15.8 for a
square wave at p = 97, 2-3 for noise. <b>Structured</b>: W_a periodicity above the threshold and the dominant
frequencies of W_a, W_b, W_out agree; <b>unstructured</b>: below the lower threshold. Thresholds default to the
paper's 12 and 5 scaled by (p-1)/96.</li>
<li><b>Square vs cosine</b>: mean nearest-point distance of the points (x, w[x]) to the ideal square wave (levels: medians
of each half-period, vertical edges) and to the ideal cosine (same frequency, phase, amplitude, offset), w in units of
the amplitude. <b>Binarization</b> = (d<sub>cos</sub> - d<sub>sq</sub>) / (d<sub>cos</sub> + d<sub>sq</sub>): 1 square, -1 cosine, ~0 noise.</li>
<li><b>r</b>: Fisher-Lee circular correlation of &phi;<sub>out</sub> with &phi;<sub>a</sub> + &phi;<sub>b</sub> over all neuron pairs
(defined even when phases spread evenly round the circle); r' over structured neurons.</li>
<li><b>Idealized models</b> (paper 4.1): each neuron replaced by unit-amplitude waves at its W_a frequency and extracted
phases, zero biases; Sq->Cos (square inputs, cosine outputs), Sq->Sq, Cos->Cos; accuracy over all p<sup>2</sup> pairs.
<b>Controls</b>: &phi;<sub>out</sub> forced to &phi;<sub>a</sub> + &phi;<sub>b</sub> (the construction solves the task for any phases,
so this says nothing about the model), and &phi;<sub>out</sub> shuffled across neurons (breaks the learned relation), drawn
as a distribution: the mean and 95th percentile over <code>shuffle_draws</code> permutations (16 by default).
Only the gap between Sq->Cos and the shuffled control is evidence of learned structure.
<b>Own frequencies</b> (<code>ideal_acc_own</code>): Sq->Cos with W_a, W_b and W_out each built at its own dominant frequency
and its phase there, the convention of a peer codebase; it equals Sq->Cos where the three frequencies agree.</li>
<li><b>Progress measures</b> (Nanda et al. 2023, section 5, adapted to this MLP): key frequencies = the W_a frequencies
of the neurons structured at the last snapshot. <b>Restricted loss</b>: each hidden unit's activation over the p<sup>2</sup>
pairs kept only in its constant and cos/sin(2&pi;k(a+b)/p) components for the key k, read out by W_out; cross-entropy on the
validation pairs. <b>Excluded loss</b>: those key-frequency components removed; cross-entropy on the training pairs with the
labels used in training.</li>
<li><b>IPR</b> (<code>ipr_a</code>, ...): inverse participation ratio &sum;<sub>k</sub> P<sub>k</sub><sup>2</sup> of a row's
normalized power spectrum P<sub>k</sub> = |F[k]|<sup>2</sup> / &sum;|F|<sup>2</sup> over k = 1..(p-1)/2: 1 for one frequency,
about 0.67 for a square wave, about 2/K = 4/(p-1) for noise (K = (p-1)/2 frequencies).</li>
<li><b>Steps</b>: saturation = first snapshot with training accuracy &ge; {saturation:g}; structure = first with Sq->Cos &ge; the
structure threshold; grok = first with validation accuracy &ge; the grok threshold; lead = grok - structure (negative when
structure comes after generalization; undefined when either is not reached).</li>
</ul>""".replace("{saturation:g}", f"{SATURATION_TRAIN_ACC:g}")


def _fmt(value, digits: int = 3) -> str:
    return format_number(value, digits, missing="\u2013")


class _Figures:
    """Collects rendered figures for the page and, optionally, a PNG folder (each PNG under
    the output rule: an existing figure is replaced only with `force`)."""

    def __init__(self, png_dir: Path | None, inputs: list[Path], force: bool):
        self.png_dir, self.inputs, self.force = png_dir, inputs, force

    def add(self, fig, name: str, caption: str) -> str:
        png = figure_png(fig)
        if self.png_dir is not None:
            with atomic_output(
                self.png_dir / f"{name}.png", "figure", self.inputs, force=self.force
            ) as partial:
                partial.write_bytes(png)
        return figure_html(png, alt=name.replace("_", " "), caption=caption)


def _config_line(trajectory: xr.Dataset) -> str:
    a = trajectory.attrs
    keys = [
        "model",
        "d_model",
        "heads",
        "operation",
        "activation",
        "precision",
        "modulus",
        "width",
        "train_frac",
        "noise",
        "seed",
        "lr",
        "weight_decay",
        "bias",
        "stop_val_acc",
        "patience",
    ]
    if str(a.get("model", "mlp")) != "transformer":  # the transformer's sizes say nothing here
        keys = [k for k in keys if k not in ("d_model", "heads")]
    parts = [f"{k} = {a[k]}" for k in keys if k in a]
    if "stop_reason" in a:
        parts.append(f"stopped: {a['stop_reason'] or run_state(a['source'])}")
    return ", ".join(parts)


def _architecture(trajectory: xr.Dataset) -> str:
    """The model in words, for a run's heading."""
    a = trajectory.attrs
    if str(a.get("model", "mlp")) == "transformer":
        return (
            f"1-layer transformer (d_model {a.get('d_model')}, {a.get('heads')} heads, "
            f"{trajectory.sizes['neuron']} MLP neurons; curves read from activation tables)"
        )
    if "hidden_layers" in a:
        widths = ", ".join(str(int(w)) for w in np.ravel(a.get("hidden_widths", [])))
        return (
            f"two-hot MLP with {int(np.ravel(a['hidden_layers'])[0])} hidden layers ({widths} "
            "neurons), read at the last through its activation tables"
        )
    return f"two-hot MLP ({trajectory.sizes['neuron']} neurons)"


def _convention_sentence(head: dict) -> str:
    """One sentence on how much the structure step depends on the phase-reading convention."""
    paper, own = format_step(head["structure_step"]), format_step(head["structure_step_own"])
    return (
        f"Convention check: the structure step is {paper} when the phases of W_b and W_out are read at W_a's dominant "
        f"frequency (the paper's convention) and {own} when each curve is read at its own dominant frequency; the two "
        "agree only where the three frequencies do."
    )


def _headline_table(analysis: xr.Dataset) -> str:
    head = analysis.mechgrok.headline()
    rows = []
    for label, name, digits in headline_rows(law_sign(analysis.attrs)):
        rows.append(
            [
                html.escape(label).replace("phi", "&phi;"),
                _fmt(head.get(f"{name}_saturation"), digits),
                _fmt(head.get(f"{name}_final"), digits),
            ]
        )
    saturation = format_step(head["saturation_step"])
    table = table_html(
        ["", f"at saturation (step {saturation})", f"at the end ({format_final_step(head)})"],
        rows,
    )
    if head["restricted_loss_degenerate"]:
        table += (
            '<p class="note">Restricted loss is degenerate for this run: every frequency is a key '
            "frequency, so it keeps the whole hidden layer and says nothing about the algorithm.</p>"
        )
    return table


def _run_section(
    name: str,
    trajectory: xr.Dataset,
    analysis: xr.Dataset,
    figs: _Figures,
    prefix: str,
    detail: bool = True,
) -> list[str]:
    """A run's cards, headline table and timeline; with `detail` also its static neuron
    galleries, phase scatter and periodicity panels (a sweep leaves those to the explorer)."""
    head = analysis.mechgrok.headline()
    law, pair = _law({law_sign(analysis.attrs)})
    steps = analysis["step"].values
    final = int(steps[-1])
    saturated = int(head["saturation_step"]) >= 0
    # a run that never saturates is shown a quarter of the way in, and labelled so
    early = int(head["saturation_step"]) if saturated else int(steps[len(steps) // 4])
    early_label = (
        "saturation" if saturated else f"step {early:,} (never saturated: a quarter of the way in)"
    )
    middle = int(steps[np.argmin(np.abs(steps - (early + final) / 2))])
    draws = head.get("shuffle_draws") or 1
    cards = cards_html(
        [
            (
                f"saturation step (train acc >= {SATURATION_TRAIN_ACC:g})",
                format_step(head["saturation_step"]),
            ),
            (
                f"structure step (Sq->Cos >= {analysis.attrs['structure_acc']:.2g})",
                format_step(head["structure_step"]),
            ),
            (
                f"grok step (val acc >= {analysis.attrs['grok_acc']:.2g})",
                format_grok_step(head),
            ),
            ("lead: grok - structure (steps)", format_lead(head["lead_steps"])),
            (
                "structure step / lead, each curve at its own frequency",
                f"{format_step(head['structure_step_own'])} / {format_lead(head['lead_steps_own'])}",
            ),
            ("final validation accuracy", _fmt(head.get("val_acc_final"), 4)),
            (
                f"final Sq->Cos / shuffled control (mean, 95th pct of {draws})",
                f"{_fmt(head.get('ideal_acc_final'))} / {_fmt(head.get('ideal_acc_shuffled_final'))}, {_fmt(head.get('ideal_acc_shuffled_hi_final'))}",
            ),
            (
                "final r / r'",
                f"{_fmt(head.get('r_all_final'), 4)} / {_fmt(head.get('r_structured_final'), 4)}",
            ),
            (
                "structured neurons at the end",
                f"{_fmt(head.get('n_structured_final'), 0)} of {analysis.sizes['neuron']}",
            ),
            ("W_a waveform at the end (binarization: 1 square, -1 cosine)", format_waveform(head)),
        ]
    )
    out = [
        f"<h2>{html.escape(name)}: {html.escape(_architecture(trajectory))}</h2>",
        f'<p class="muted">{html.escape(_config_line(trajectory))}</p>',
        cards,
        f"<p>{html.escape(_convention_sentence(head))}</p>",
        _headline_table(analysis),
    ]
    if steps.size == 1:  # one checkpoint (a published final model): no timeline to draw
        out.append(
            f'<p class="note">This run has one snapshot ({format_final_step(head)}): what follows is '
            "its structure at that step; there is no timeline, and no saturation, structure or "
            "grok step to read.</p>"
        )
        out.append(
            figs.add(
                figures.phase_scatter([(analysis, final, format_final_step(head))]),
                f"{prefix}phase_scatter",
                f"&phi;_out against {law}; points on the dashed diagonal obey the phase law. "
                "Color: W_a periodicity; outlined: structured neurons.",
            )
        )
        return out
    out.append(
        figs.add(
            figures.timeline(analysis, trajectory),
            f"{prefix}timeline",
            "Timeline. Top: real and idealized accuracies with both controls; the gap between Sq-&gt;Cos (blue) and the "
            f"shuffled control (gray dotted: mean of {draws} permutations, band up to their 95th percentile) is learned "
            "structure, the phase-sum control (orange dashed) is what the construction gives for free, and the green "
            "dash-dotted line reads each curve at its own frequency instead of W_a's. Second: losses of the real model "
            "beside the progress measures of Nanda et al. (2023): restricted loss (hidden units kept only in their "
            f"key-frequency {pair} components, validation pairs) and excluded loss (those components removed, training "
            "pairs). Third: share of structured neurons, median binarization and periodicity. "
            f"Bottom: circular correlation of &phi;_out with {law}.",
        )
    )
    if "neurons_per_frequency" in analysis:
        out.append(
            figs.add(
                figures.activation_tables(analysis),
                f"{prefix}activation_tables",
                "Each neuron's activation table over all p&sup2; pairs. Left: neurons clustered at a "
                "frequency (Nanda et al.'s measure: the k whose {1, cos, sin}(ka) &times; {1, cos, sin}(kb) "
                "block of the 2D Fourier transform holds at least 85% of the post-activation variance), "
                "for the frequencies with most neurons at the end. Middle: additivity, the share of each "
                "pre-activation table's variance that f(a) + g(b) explains (the effective curves W_a, W_b "
                "are f and g; exactly 1 for the two-hot MLP)."
                + (
                    " Right: each head's mean attention from '=' to a and to b (dotted: uniform, 1/3)."
                    if "attention_a" in analysis
                    else ""
                ),
            )
        )
    if not detail:
        out.append(
            '<p class="muted">This run\'s neurons, phases and periodicity are in the explorer above (pick the run); '
            f"<code>mechgrok report {html.escape(name)}.h5 --html</code> draws them as static figures.</p>"
        )
        return out
    gallery_steps = sorted({early, middle, final})
    neurons = figures.gallery_neurons(analysis)
    n_structured = int(analysis["structured"].isel(step=-1).sel(neuron=neurons).sum())
    chosen = (
        "the most periodic structured neurons"
        if n_structured == len(neurons)
        else "the most periodic neurons (none structured at the end)"
        if n_structured == 0
        else f"the most periodic neurons ({n_structured} of them structured at the end)"
    )
    for which, color in (("W_a", "blue"), ("W_b", "vermillion")):
        out.append(
            figs.add(
                figures.neuron_gallery(trajectory, analysis, gallery_steps, which, neurons),
                f"{prefix}gallery_{which}",
                f"{which} rows ({color}) of {chosen} against their ideal square waves (gray) "
                f"at {'saturation' if saturated else early_label}, midway and at the end (paper Figs. 1-2), zoomed to at most 5 periods.",
            )
        )
    out.append(
        figs.add(
            figures.phase_scatter([(analysis, early, early_label), (analysis, final, "end")]),
            f"{prefix}phase_scatter",
            f"&phi;_out against {law} (paper Fig. 4); points on the dashed diagonal obey the phase "
            "law. Color: W_a periodicity; outlined: structured neurons.",
        )
    )
    out.append(
        figs.add(
            figures.periodicity_panels(analysis),
            f"{prefix}periodicity",
            "Periodicity at the end with both thresholds, the frequencies the structured neurons use, and each "
            "neuron's periodicity over training (ordered by when it becomes structured).",
        )
    )
    return out


def _paper_cells(noise: float) -> list[str] | None:
    """The paper's Table 2 and Fig. 5 values for a noise level as table cells (None if it has none)."""
    paper = paper_row(noise)
    if paper is None:
        return None

    def cell(value, digits=4):
        return f'<span class="paper">{_fmt(value, digits) if value is not None else "&lt;0.0001"}</span>'

    r = FIG5.get(round(noise, 2), (None, None))
    return [
        *(cell(paper[k]) for k in ("final_real", "final_sq_sq", "final_sq_cos", "final_cos_cos")),
        "",
        "",
        *(cell(paper[k]) for k in ("sat_real", "sat_sq_sq", "sat_sq_cos", "sat_cos_cos")),
        *(f'<span class="paper">{_fmt(v, 3)}</span>' for v in r),
    ]


def _sweep_sections(runs: list[tuple[str, xr.Dataset, xr.Dataset]], figs: _Figures) -> list[str]:
    rows = []
    for name, trajectory, analysis in runs:
        rows.append(dict(run_numbers(analysis, trajectory.attrs), name=name))
    groups = group_by_options(rows)
    varying = varying_options(groups) or ["noise"]
    columns = [label for label, _ in TABLE2_COLUMNS]
    table = []
    for options, members in groups:
        summary = summarize_seeds(members)
        label = ", ".join(f"{key} {options.get(key)}" for key in varying)
        table.append(
            [
                html.escape(label),
                str(len(members)),
                *(summary[key].text(4) for _, key in TABLE2_COLUMNS),
            ]
        )
        comparable = options.get("operation") in (None, "add") and options.get("activation") in (
            None,
            "relu",
        )
        paper = (
            _paper_cells(float(options.get("noise") or 0.0))
            if comparable and ("noise" in varying or len(groups) == 1)
            else None
        )
        if paper is not None:
            table.append(['<span class="paper">paper</span>', "", *paper])
    per_run = [
        [
            html.escape(row["name"]),
            str(row.get("seed", "")),
            *(_fmt(row[key], 4) for _, key in TABLE2_COLUMNS),
        ]
        for options, members in groups
        for row in sorted(members, key=lambda r: _seed_order(r.get("seed")))
    ]
    n_seeds = sorted({len(members) for _, members in groups})
    seeds_text = f"{n_seeds[0]}" if len(n_seeds) == 1 else f"{n_seeds[0]} to {n_seeds[-1]}"
    out = [
        "<h2>Runs compared (the paper's Table 2)</h2>",
        f"<p>{len(rows)} runs in {len(groups)} group(s) of {seeds_text} seed(s). Each number is the mean over a group's "
        "seeds with its 95% percentile-bootstrap interval in brackets (4,000 resamples of the seeds; none with one seed): "
        "validation accuracy of the real model and of the idealized models at the end and at the saturation checkpoint. "
        'Rows in <span class="paper">blue</span> are the paper\'s values for the same noise level (one run each; its '
        "idealized accuracies are on its validation split, ours on all p<sup>2</sup> pairs; see the docs, Reproducing the paper).</p>",
        table_html(["runs", "seeds", *columns], table),
        "<details><summary>Every run</summary>"
        + table_html(["run", "seed", *columns], per_run)
        + "</details>",
    ]
    if len(groups) > 1 and "noise" in varying:
        out.append(
            figs.add(
                figures.noise_curves(
                    [
                        (float(options["noise"]), summarize_seeds(members))
                        for options, members in groups
                    ]
                ),
                "sweep_noise_curves",
                "Final validation accuracy and mean W_a periodicity against label noise (paper Fig. 3): mean over "
                "seeds, band: 95% bootstrap interval of the mean (with two or more seeds).",
            )
        )
    panels, paper_values = [], []
    for _name, trajectory, analysis in runs:
        noise, seed = float(trajectory.attrs.get("noise", np.nan)), trajectory.attrs.get("seed", "")
        what = (  # enough to tell a sub run from a mul run on one page
            f"{recorded_operation(trajectory.attrs)} {trajectory.attrs.get('activation', 'relu')}, "
            f"p = {trajectory.sizes['token']}, noise {noise:g}, seed {seed}"
        )
        panels.append((analysis, int(analysis["step"].values[-1]), what))
        paper_r = FIG5.get(round(noise, 2))
        if paper_r:
            paper_values.append(f"noise {noise:g}: r = {paper_r[0]}, r' = {paper_r[1]}")
    out.append(
        figs.add(
            figures.phase_scatter(panels),
            "sweep_phase_scatter",
            f"&phi;_out against {_law({law_sign(a.attrs) for _, _, a in runs})[0]} at the end of each run "
            "(paper Fig. 5). The paper's values: "
            + (
                "; ".join(sorted(set(paper_values)))
                if paper_values
                else "none at these noise levels"
            )
            + ".",
        )
    )
    return out


def _seed_order(seed) -> int:
    try:
        return int(seed)
    except (TypeError, ValueError):
        return 0


PAGE_BYTES_AT_LEAST = 5 * 2**20  # every page inlines plotly.js (~4.8 MB)


def _analysis(path: Path, on_progress: Callable[[int, int], None] | None = None) -> xr.Dataset:
    """The run's analysis, cached beside it where its folder is writable; computed in memory
    (with a note) where it is not, e.g. a read-only archive of someone else's runs."""
    cache = default_analysis_path(path)
    writable = os.access(path.parent, os.W_OK) and (not cache.exists() or os.access(cache, os.W_OK))
    if not writable and not cache.exists():
        warnings.warn(
            f"{path.parent} is read-only: the analysis of {path.name} is computed without caching it",
            MechgrokWarning,
            stacklevel=3,
        )
    return analyze(path, save=writable, on_progress=on_progress)


def report(
    trajectories: Sequence[str | os.PathLike],
    out: str | os.PathLike | None = None,
    png_dir: str | os.PathLike | None = None,
    force: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write the HTML report for one run or several (a sweep) and return its path. Each
    trajectory is analyzed unless a current analysis sits beside it. An existing report is
    replaced only with `force`; trajectories are only read. `on_progress(done, total)`:
    snapshots analyzed so far, for each run whose analysis is computed."""
    paths = [Path(t) for t in trajectories]
    if not paths:
        raise InvalidOptionError("no trajectory given")
    name = (
        paths[0].stem if len(paths) == 1 else f"{paths[0].stem}_and_{len(paths) - 1}_more"
    ) + ".html"
    if out is None:
        out_path = DEFAULT_REPORT_DIR / name
    elif Path(out).is_dir() or str(out).endswith(os.sep):  # a folder: the page goes inside
        out_path = Path(out) / name
    else:
        out_path = Path(out)
    inputs = [*paths, *(default_analysis_path(path) for path in paths)]
    check_output(out_path, "report", inputs, force=force)
    try:  # before the analyses and figures: a full disk or a file-size limit fails at once, not after them
        check_space(out_path.parent, PAGE_BYTES_AT_LEAST)
    except OSError as err:
        raise write_failure(out_path, err) from None
    runs = []
    try:
        seen: dict[str, Path] = {}
        for path in paths:
            trajectory = open_trajectory(path)
            identity = trajectory_identity(trajectory)
            if identity in seen:  # the same recording twice (a copy, a link, a path given twice)
                warnings.warn(
                    f"{path} is the same recording as {seen[identity]} (run_id {identity}); counted once",
                    MechgrokWarning,
                    stacklevel=2,
                )
                trajectory.close()
                continue
            seen[identity] = path
            analysis = _analysis(path, on_progress)
            # a live run may commit snapshots between the two reads: show what both hold
            n = min(trajectory.sizes["step"], analysis.sizes["step"])
            trajectory, analysis = (
                trajectory.isel(step=slice(0, n)),
                analysis.isel(step=slice(0, n)),
            )
            runs.append((path.stem, trajectory, analysis))
        paths = [seen[identity] for identity in seen]
        figs = _Figures(
            Path(png_dir) if png_dir is not None else None, inputs=[*inputs, out_path], force=force
        )
        title = (
            f"mechgrok report: {paths[0].stem}"
            if len(paths) == 1
            else f"mechgrok report: {len(paths)} runs"
        )
        sections = [
            f"<h1>{html.escape(title)}</h1>",
            '<p class="muted">When does the generalizing algorithm appear? Structure read from the weights '
            "(idealized models, phase-sum relation, square-wave binarization) against the real model's accuracy.</p>",
        ]
        states = {name: run_state(trajectory.attrs["source"]) for name, trajectory, _ in runs}
        for state, words in (
            ("recording", "Still recording when this report was made"),
            (
                "interrupted",
                "Interrupted before their end (resume or close them with record --resume [--finish])",
            ),
        ):
            names = [name for name, s in states.items() if s == state]
            if names:
                sections.append(
                    f'<p class="note">{words}: {html.escape(", ".join(names))}; '
                    "their numbers cover the snapshots committed so far.</p>"
                )
        if len(runs) > 1:
            sections += _sweep_sections(runs, figs)
        limit = snapshots_per_run(
            len(runs),
            max(a.sizes["neuron"] for _, _, a in runs),
            max(t.sizes["token"] for _, t, _ in runs),
        )
        sections.append(
            explorer_section(
                [
                    explorer_data(name, trajectory, analysis, limit)
                    for name, trajectory, analysis in runs
                ]
            )
        )
        if len(runs) <= 4:  # beyond that the page gets long: the sweep sections summarise
            for name, trajectory, analysis in runs:
                sections += (
                    _run_section(name, trajectory, analysis, figs, prefix="")
                    if len(runs) == 1
                    else _run_section(
                        name, trajectory, analysis, figs, prefix=f"{name}_", detail=False
                    )
                )
        sections += ["<h2>Definitions</h2>", definitions({law_sign(a.attrs) for _, _, a in runs})]
        write_text(out_path, page(title, sections), "report", inputs, force=force)
    finally:
        for _, trajectory, analysis in runs:
            trajectory.close()
            analysis.close()
    return out_path
