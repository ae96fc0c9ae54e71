"""The analysis of real recorded runs, through the API and the CLI."""

import hashlib

import numpy as np
import pytest
import xarray as xr
from conftest import GROKKING, assert_one_line_error, run_cli
from contract import CONTRACT_STEP

import mechgrok
from mechgrok.analysis.pipeline import MIN_NEURONS_FOR_STATS
from mechgrok.config import RunConfig

pytestmark = pytest.mark.xdist_group(
    "grokked"
)  # its tests share expensive fixtures: one worker makes them


@pytest.fixture(scope="session")  # made once per worker, kept while other modules run
def grokked(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grok")
    path = mechgrok.record(
        RunConfig(**GROKKING, steps=1500, stop_val_acc=0.99), out=folder / "grok.h5"
    )
    return path


def test_recorded_run_agrees_in_character_with_the_paper(grokked):
    result = mechgrok.analyze(grokked)
    sat = result.attrs["saturation_step"]
    assert sat > 0 and result.attrs["grok_step"] > sat
    at_sat = result.sel(step=sat)
    assert at_sat.ideal_acc > at_sat.val_acc + 0.3  # structure readable before generalization
    assert (
        result.attrs["structure_step"] <= result.attrs["grok_step"]
        and result.attrs["lead_steps"] >= 0
    )
    final = result.isel(step=-1)
    assert final.n_structured >= MIN_NEURONS_FOR_STATS and final.r_structured > 0.95
    assert final.ideal_acc_shuffled < 0.3 < final.ideal_acc
    # all_acc combines train (true labels) and validation accuracy over the p^2 pairs
    from_weights = (
        mechgrok.analyze(mechgrok.open_trajectory(grokked).drop_vars(["val_acc"]))
        .isel(step=-1)
        .all_acc
    )
    assert float(final.all_acc) == pytest.approx(float(from_weights), abs=1e-6)


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cli_analyze_writes_reuses_and_forces(grokked, tmp_path):
    before = _digest(grokked)
    out = tmp_path / "a.h5"
    first = run_cli("analyze", str(grokked), "--out", str(out), check=True)
    assert "Sq->Cos" in first.stdout + first.stderr and out.exists()
    mtime = out.stat().st_mtime_ns
    run_cli("analyze", str(grokked), "--out", str(out), "--quiet", check=True)
    assert out.stat().st_mtime_ns == mtime  # reused
    run_cli("analyze", str(grokked), "--out", str(out), "--quiet", "--force", check=True)
    assert out.stat().st_mtime_ns != mtime
    assert _digest(grokked) == before  # the trajectory is never modified
    ds = xr.open_dataset(out, engine="h5netcdf")
    assert set(CONTRACT_STEP) <= set(ds.data_vars) and ds.attrs["source"] == str(grokked)
    assert ds.attrs["shuffle_draws"] == 16
    ds.close()
    run_cli(
        "analyze", str(grokked), "--out", str(out), "--quiet", "--shuffle-draws", "3", check=True
    )  # another analysis: redone
    with xr.open_dataset(out, engine="h5netcdf") as fewer:
        assert (
            fewer.attrs["shuffle_draws"] == 3
            and (fewer.ideal_acc_shuffled_hi >= fewer.ideal_acc_shuffled - 1e-12).all()
        )


def test_cli_analyze_bad_inputs(tmp_path, grokked):
    text = tmp_path / "t.h5"
    text.write_text("hello")
    truncated = tmp_path / "cut.h5"
    truncated.write_bytes(grokked.read_bytes()[:4096])
    cases = [
        (tmp_path / "missing.h5", "no such file"),
        (text, "not an HDF5 file"),
        (truncated, "truncated"),
    ]
    for path, message in cases:
        assert_one_line_error(run_cli("analyze", str(path)), message)
    keep = tmp_path / "keep.h5"
    keep.write_bytes(grokked.read_bytes())
    assert_one_line_error(
        run_cli("analyze", str(grokked), "--out", str(keep)), "not a mechgrok analysis"
    )
    assert keep.read_bytes() == grokked.read_bytes()


def test_accessor_queries(grokked):
    ds = mechgrok.open_trajectory(grokked)
    spectrum = ds.mechgrok.spectrum("W_a")
    assert spectrum.dims == ("step", "neuron", "frequency") and spectrum.sizes["frequency"] == 12
    result = mechgrok.analyze(grokked)
    neuron = int(result.mechgrok.structured(result.step.values[-1])[0])
    rows = ds.mechgrok.neuron(neuron, step=int(ds.step[-1]))
    assert rows.freq == result.freq_a.isel(step=-1).sel(neuron=neuron)
    assert set(np.unique(rows.W_a_ideal.values)).__len__() == 2  # two levels
    ideal = ds.mechgrok.idealized_weights(int(ds.step[-1]))
    assert set(np.unique(ideal.W_a.values)) <= {-1.0, 0.0, 1.0}
    headline = result.mechgrok.headline()
    assert headline["ideal_acc_final"] == pytest.approx(float(result.ideal_acc[-1]))


def test_idealized_weights_of_the_accessor_score_the_stored_ideal_accuracy(grokked):
    """The accessor's idealized model and the analysis's ideal_acc are one construction: run
    forward on all p^2 pairs, its accuracy (exact ties credited 1/t) equals the stored number
    exactly, at every variant the analysis scores and at early and late snapshots."""
    trajectory, result = mechgrok.open_trajectory(grokked), mechgrok.analyze(grokked)
    p = trajectory.sizes["token"]
    a, b = np.divmod(np.arange(p * p), p)
    labels = (a + b) % p
    steps = result["step"].values
    for step in (int(steps[len(steps) // 4]), int(result.attrs["saturation_step"]), int(steps[-1])):
        for variant, stored in (
            ("sq_cos", "ideal_acc"),
            ("sq_sq", "ideal_acc_sq_sq"),
            ("cos_cos", "ideal_acc_cos_cos"),
            ("phase_sum", "ideal_acc_phase_sum"),
        ):
            ideal = trajectory.mechgrok.idealized_weights(step, variant)
            hidden = np.maximum(ideal.W_a.values[:, a] + ideal.W_b.values[:, b], 0.0)  # (H, pairs)
            logits = hidden.T @ ideal.W_out.values  # (pairs, p)
            best = logits.max(axis=1, keepdims=True)
            ties = (logits == best).sum(axis=1)
            correct = logits[np.arange(p * p), labels] == best[:, 0]
            accuracy = float(np.sum(correct / ties) / (p * p))
            assert accuracy == float(result[stored].sel(step=step)), (
                step,
                variant,
            )


def test_an_analysis_that_cannot_fit_in_memory_is_refused_in_one_line(tmp_path, monkeypatch):
    # p = 2003 once tried to allocate 29.9 GiB for its read-out logits and died in numpy
    monkeypatch.setattr("mechgrok.analysis.pipeline.physical_memory_bytes", lambda: 24 << 30)
    rng = np.random.default_rng(0)
    path = tmp_path / "t.h5"
    with mechgrok.Recorder(path, modulus=2003) as rec:
        rec.snapshot(0, {n: rng.normal(size=(4, 2003)) for n in ("W_a", "W_b", "W_out")})
    proc = run_cli("analyze", str(path))
    assert_one_line_error(proc, "p = 2003", "GiB of memory", "more than this machine's 24 GiB")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.h5"]


def test_accessor_lookups_take_the_nearest_step_and_name_the_valid_range(grokked):
    import json

    from mechgrok.errors import MechgrokWarning, SelectionError

    trajectory, result = mechgrok.open_trajectory(grokked), mechgrok.analyze(grokked)
    steps = trajectory["step"].values
    between = int(steps[-2] + 1) if steps[-1] - steps[-2] > 2 else int(steps[-1])
    with pytest.warns(MechgrokWarning, match="using the nearest"):
        row = trajectory.mechgrok.neuron(6, step=between)
    assert row.attrs["neuron"] == 6
    with pytest.raises(SelectionError, match=r"neuron 999 is not in this run \(neurons 0\.\.127\)"):
        trajectory.mechgrok.neuron(999)
    with pytest.raises(SelectionError, match="outside the recorded steps"):
        trajectory.mechgrok.idealized_weights(int(steps[-1]) + 10**6)
    head = result.mechgrok.headline()
    assert json.loads(json.dumps(head))["final_step"] == int(steps[-1])
    assert isinstance(head["n_structured_final"], int)


def _drawn_outside(fig) -> list[float]:
    """How far (inches) what `fig` draws (text, legends, colorbars: its tight bounding box)
    reaches past each edge of the figure (left, bottom, right, top); 0 where inside."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # as the report renders them
    canvas.draw()
    drawn, page = fig.get_tightbbox(canvas.get_renderer()), fig.bbox_inches
    return [
        round(max(0.0, page.x0 - drawn.x0), 2),
        round(max(0.0, page.y0 - drawn.y0), 2),
        round(max(0.0, drawn.x1 - page.x1), 2),
        round(max(0.0, drawn.y1 - page.y1), 2),
    ]


def test_plot_helpers_draw_the_report_figures_with_no_label_cut_off(grokked):
    trajectory, result = mechgrok.open_trajectory(grokked), mechgrok.analyze(grokked)
    figures = {
        "timeline": result.mechgrok.plot_timeline(),
        "phases": result.mechgrok.plot_phases(),
        "neurons": trajectory.mechgrok.plot_neurons(result),
    }
    assert len(figures["timeline"].axes) >= 4 and figures["phases"].axes
    for name, fig in figures.items():
        assert _drawn_outside(fig) == [0, 0, 0, 0], name


def test_the_docs_export_example_runs_as_written(grokked, tmp_path, monkeypatch):
    import re
    from pathlib import Path

    guide = (Path(__file__).parents[2] / "docs" / "guide" / "python.md").read_text()
    section = guide[guide.index("### Export to pandas and CSV") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    demo = "trajectories/p97_w256_tf0.5_noise0_seed0.h5"
    assert demo in code
    monkeypatch.chdir(tmp_path)
    exec(code.replace(demo, str(grokked)), {})
    import pandas as pd

    per_step = pd.read_csv(tmp_path / "per_step.csv")
    assert len(per_step) == mechgrok.open_trajectory(grokked).sizes["step"]
    assert len(pd.read_csv(tmp_path / "neurons_at_the_end.csv")) == 128
