"""The analysis on planted weights, where every answer is known exactly."""

import warnings

import numpy as np
import pytest
import xarray as xr
from contract import CONTRACT_ATTRS, CONTRACT_NEURON, CONTRACT_STEP
from planted import as_dataset, planted_algorithm

import mechgrok
from mechgrok.analysis.fourier import wrap_angle
from mechgrok.analysis.pipeline import MIN_NEURONS_FOR_STATS, AnalysisParams, analyze_arrays


def _with_extras(snapshot, p, rng):
    """Append 6 pure-noise neurons, one dead and one constant neuron to a planted snapshot."""
    extra = {
        name: np.concatenate(
            [
                snapshot[name],
                0.3 * rng.standard_normal((6, p)),
                np.zeros((1, p)),
                np.full((1, p), 0.4),
            ]
        )
        for name in ("W_a", "W_b", "W_out")
    }
    return dict(snapshot, **extra)


@pytest.fixture(scope="session")  # made once per worker, kept while other modules run
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
        assert (
            np.isnan(at.phase_a.values[-2:]).all() and np.isnan(at.periodicity_a.values[-2:]).all()
        )
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
        assert (
            at.ideal_acc >= 0.99 and at.ideal_acc_phase_sum >= 0.99 and at.ideal_acc_cos_cos >= 0.99
        )
        assert at.ideal_acc_shuffled < 0.2  # chance is 1/23
    # sampled square waves carry their phase only to within the sampling grid; cosines exactly
    assert square.r_structured > 0.99 and square.phase_sum_coherence > 0.99
    assert cosine.r_structured > 0.999999 and cosine.phase_sum_coherence > 0.999999
    n = 100
    assert np.median(square.binarization_a.values[:n]) > 0.9
    assert np.median(cosine.binarization_a.values[:n]) < -0.9
    assert abs(np.nanmedian(square.binarization_a.values[n : n + 6])) < np.median(
        square.binarization_a.values[:n]
    )
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
        out = analyze_arrays(
            noise["W_a"], noise["W_b"], noise["W_out"], AnalysisParams().resolved(p)
        )
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
