import hashlib
import warnings

import numpy as np
import pytest
import xarray as xr

import mechgrok
from conftest import GROKKING, assert_one_line_error, run_cli
from mechgrok.analysis import MIN_NEURONS_FOR_STATS, analyze_arrays, AnalysisParams
from mechgrok.config import RunConfig
from mechgrok.fourier import wrap_angle
from planted import as_dataset, planted_algorithm

CONTRACT_NEURON = ["freq_a", "freq_b", "freq_out", "phase_a", "phase_b", "phase_out", "amp_a", "amp_b", "amp_out",
                   "periodicity_a", "periodicity_b", "periodicity_out", "square_dist_a", "cosine_dist_a", "square_dist_b",
                   "cosine_dist_b", "binarization_a", "binarization_b", "boundary_frac_a", "boundary_frac_b", "freq_agree",
                   "phase_sum_error", "structured", "unstructured"]
CONTRACT_STEP = ["r_all", "r_structured", "phase_sum_coherence", "n_structured", "n_unstructured", "periodicity_median",
                 "binarization_median", "square_vs_cosine_t", "ideal_acc", "ideal_acc_sq_sq", "ideal_acc_cos_cos",
                 "ideal_acc_phase_sum", "ideal_acc_shuffled"]
CONTRACT_ATTRS = ["saturation_step", "grok_step", "structure_step", "lead_steps", "threshold", "threshold_low", "source"]


def _with_extras(snapshot, p, rng):
    """Append 6 pure-noise neurons, one dead and one constant neuron to a planted snapshot."""
    extra = {name: np.concatenate([snapshot[name], 0.3 * rng.standard_normal((6, p)), np.zeros((1, p)), np.full((1, p), 0.4)])
             for name in ("W_a", "W_b", "W_out")}
    return dict(snapshot, **extra)


@pytest.fixture(scope="module")
def planted():
    p = 23
    rng = np.random.default_rng(0)
    square = _with_extras(planted_algorithm(p, kind="square"), p, rng)
    cosine = _with_extras(planted_algorithm(p, kind="cos"), p, rng)
    truth = planted_algorithm(p)
    return truth, mechgrok.analyze(as_dataset(square, cosine))


def test_planted_frequencies_phases_and_flags_are_recovered(planted):
    truth, result = planted
    n_planted = truth["freq"].size
    for step in result.step.values:
        at = result.sel(step=step)
        assert np.array_equal(at.freq_a.values[:n_planted], truth["freq"])
        assert np.array_equal(at.freq_out.values[:n_planted], truth["freq"])
        assert at.structured.values[:n_planted].all() and not at.structured.values[n_planted:].any()
        assert at.unstructured.values[-2:].all()  # dead and constant
        assert at.freq_a.values[-2] == 0 and at.freq_a.values[-1] == 0
        assert np.isnan(at.phase_a.values[-2:]).all() and np.isnan(at.periodicity_a.values[-2:]).all()
        assert at.n_structured == n_planted
    cosine = result.isel(step=1)
    for key in ("a", "b", "out"):
        error = wrap_angle(cosine[f"phase_{key}"].values[:n_planted] - truth[f"phase_{key}"])
        assert np.abs(error).max() < 1e-6
    assert np.abs(cosine.phase_sum_error.values[:n_planted]).max() < 1e-6
    np.testing.assert_allclose(cosine.amp_a.values[:n_planted], 0.5, rtol=1e-9)


def test_planted_algorithm_scores_and_controls(planted):
    _, result = planted
    square, cosine = result.isel(step=0), result.isel(step=1)
    for at in (square, cosine):
        assert at.ideal_acc >= 0.99 and at.ideal_acc_phase_sum >= 0.99 and at.ideal_acc_cos_cos >= 0.99
        assert at.ideal_acc_shuffled < 0.2  # chance is 1/23
    # sampled square waves carry their phase only to within the sampling grid; cosines exactly
    assert square.r_structured > 0.99 and square.phase_sum_coherence > 0.99
    assert cosine.r_structured > 0.999999 and cosine.phase_sum_coherence > 0.999999
    n = 100
    assert np.median(square.binarization_a.values[:n]) > 0.9
    assert np.median(cosine.binarization_a.values[:n]) < -0.9
    assert abs(np.nanmedian(square.binarization_a.values[n:n + 6])) < np.median(square.binarization_a.values[:n])
    assert square.square_vs_cosine_t < -5 and cosine.square_vs_cosine_t > 5


def test_analysis_names_follow_the_contract(planted):
    _, result = planted
    for name in CONTRACT_NEURON:
        assert result[name].dims == ("step", "neuron"), name
    for name in CONTRACT_STEP:
        assert result[name].dims == ("step",), name
    for name in CONTRACT_ATTRS:
        assert name in result.attrs, name
    assert "val_acc" not in result  # a hand-built Dataset has no metrics
    assert "all_acc" in result  # ... but the real model is scored from its weights


def test_no_structured_neurons_gives_nan_statistics_without_warnings():
    p, n = 23, 40
    rng = np.random.default_rng(5)
    noise = {name: 0.1 * rng.standard_normal((2, n, p)) for name in ("W_a", "W_b", "W_out")}
    noise["W_a"][1] = 0.0  # a snapshot of dead neurons
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = analyze_arrays(noise["W_a"], noise["W_b"], noise["W_out"], AnalysisParams().resolved(p))
    assert out["n_structured"].tolist() == [0, 0]
    for name in ("r_structured", "phase_sum_coherence", "square_vs_cosine_t"):
        assert np.isnan(out[name]).all(), name
    assert np.isnan(out["ideal_acc"][1]) and np.isnan(out["r_all"][1])
    assert MIN_NEURONS_FOR_STATS >= 3


def test_thresholds_scale_with_the_modulus_and_accept_explicit_values():
    assert AnalysisParams().resolved(97).threshold == pytest.approx(12)
    assert AnalysisParams().resolved(97).threshold_low == pytest.approx(5)
    assert AnalysisParams().resolved(23).threshold == pytest.approx(12 * 22 / 96)
    assert AnalysisParams(threshold=3.0).resolved(23).threshold == 3.0
    with pytest.raises(ValueError):
        AnalysisParams().resolved(2)


def test_chunking_does_not_change_results(planted):
    truth = planted_algorithm(23, noise=0.05)
    ds = as_dataset(truth, planted_algorithm(23, seed=1), planted_algorithm(23, seed=2, kind="cos"))
    one = mechgrok.analyze(ds, chunk_steps=1)
    all_ = mechgrok.analyze(ds, chunk_steps=8)
    xr.testing.assert_allclose(one, all_)


@pytest.fixture(scope="module")
def grokked(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grok")
    path = mechgrok.record(RunConfig(**GROKKING, steps=1500, stop_val_acc=0.99), out=folder / "grok.h5")
    return path


def test_recorded_run_agrees_in_character_with_the_paper(grokked):
    result = mechgrok.analyze(grokked)
    sat = result.attrs["saturation_step"]
    assert sat > 0 and result.attrs["grok_step"] > sat
    at_sat = result.sel(step=sat)
    assert at_sat.ideal_acc > at_sat.val_acc + 0.3  # structure readable before generalization
    assert result.attrs["structure_step"] <= result.attrs["grok_step"] and result.attrs["lead_steps"] >= 0
    final = result.isel(step=-1)
    assert final.n_structured >= MIN_NEURONS_FOR_STATS and final.r_structured > 0.95
    assert final.ideal_acc_shuffled < 0.3 < final.ideal_acc
    # all_acc combines train (true labels) and validation accuracy over the p^2 pairs
    from_weights = mechgrok.analyze(mechgrok.open_trajectory(grokked).drop_vars(["val_acc"])).isel(step=-1).all_acc
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


def test_cli_analyze_bad_inputs(tmp_path, grokked):
    text = tmp_path / "t.h5"
    text.write_text("hello")
    truncated = tmp_path / "cut.h5"
    truncated.write_bytes(grokked.read_bytes()[:4096])
    cases = [(tmp_path / "missing.h5", "no such file"), (text, "not an HDF5 file"), (truncated, "truncated")]
    for path, message in cases:
        assert_one_line_error(run_cli("analyze", str(path)), message)
    keep = tmp_path / "keep.h5"
    keep.write_bytes(grokked.read_bytes())
    assert_one_line_error(run_cli("analyze", str(grokked), "--out", str(keep)), "not a mechgrok analysis")
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
