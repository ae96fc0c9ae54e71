"""Convention sensitivity, the shuffled control as a distribution, and the progress measures
of Nanda et al. (2023), on planted weights where the answers are known."""

import numpy as np
import pytest
from planted import as_dataset, planted_algorithm

import mechgrok
from mechgrok.analysis.fourier import wave_angle
from mechgrok.analysis.idealize import (
    cosine_readout_accuracies,
    hidden_units,
    ideal_accuracies,
    readout_accuracies,
    shuffled_phases,
    square,
    square_hidden_units,
)
from mechgrok.analysis.progress import (
    KeyProjection,
    check_key_frequencies,
    cross_entropy,
    key_directions,
    key_frequencies,
    losses_from_hidden,
)


@pytest.mark.parametrize("p, n, n_freqs", [(11, 9, 5), (23, 40, 3), (31, 64, 15)])
def test_cosine_readouts_by_frequency_equal_the_direct_matrix_product(p, n, n_freqs):
    rng = np.random.default_rng(p)
    freq = rng.integers(1, n_freqs + 1, size=n)
    freq[0] = 0  # left out
    hidden = hidden_units(
        square(wave_angle(freq, rng.uniform(-3, 3, n), p)),
        square(wave_angle(freq, rng.uniform(-3, 3, n), p)),
    )
    phases = rng.uniform(-np.pi, np.pi, (11, n))  # more variants than one batch
    direct = readout_accuracies(
        hidden, [np.where(freq[:, None] > 0, np.cos(wave_angle(freq, ph, p)), 0.0) for ph in phases]
    )
    np.testing.assert_array_equal(cosine_readout_accuracies(hidden, freq, phases, p), direct)
    np.testing.assert_array_equal(
        cosine_readout_accuracies(hidden, freq, phases, p, screen=True), direct
    )


@pytest.mark.parametrize("p", [11, 23, 31, 97])
def test_screening_the_shuffled_draws_changes_no_accuracy(p):
    truth = planted_algorithm(
        p, kind="square"
    )  # a learned phase law: near 1; its shuffles: near chance
    freq, phase_a, phase_b, phase_out = (
        truth[k] for k in ("freq", "phase_a", "phase_b", "phase_out")
    )
    theta_a, theta_b = wave_angle(freq, phase_a, p), wave_angle(freq, phase_b, p)
    hidden = hidden_units(square(theta_a), square(theta_b))
    np.testing.assert_array_equal(
        square_hidden_units(theta_a, theta_b), hidden
    )  # the one-product form
    used = np.ones(freq.size, bool)
    variants = np.concatenate(
        [
            phase_out[None],
            (phase_a + phase_b)[None],
            shuffled_phases(phase_out, used, step=7, draws=12),
        ]
    )
    plain = cosine_readout_accuracies(hidden, freq, variants, p)
    assert plain[0] > 0.7 and plain[2:].mean() < 0.3
    np.testing.assert_array_equal(
        cosine_readout_accuracies(hidden, freq, variants, p, screen=True), plain
    )


def test_which_read_outs_are_screened_changes_no_accuracy(monkeypatch):
    """ideal_accuracies screens a read-out that scored low at the previous snapshot: the same
    accuracies whether it screens every read-out or none (snapshots from a learned law to noise)."""
    import mechgrok.analysis.idealize as idealize

    p, rng = 23, np.random.default_rng(5)
    truth = planted_algorithm(p, kind="square")
    rows = []
    for noise in (0.0, 0.5, 3.0, 0.0):  # learned, blurred, random, learned again
        rows.append(
            {
                k: truth[k] + (rng.normal(0, noise, truth[k].shape) if k != "freq" else 0)
                for k in ("freq", "phase_a", "phase_b", "phase_out")
            }
        )
    stack = {k: np.stack([row[k] for row in rows]) for k in rows[0]}
    own = dict(
        freq_b=stack["freq"],
        freq_out=stack["freq"],
        phase_b_own=stack["phase_b"],
        phase_out_own=stack["phase_out"],
    )
    results = []
    for threshold in (-1.0, 2.0):  # never screen, always screen
        monkeypatch.setattr(idealize, "SCREEN_BELOW_ACCURACY", threshold)
        results.append(
            ideal_accuracies(
                stack["freq"],
                stack["phase_a"],
                stack["phase_b"],
                stack["phase_out"],
                p,
                np.arange(4),
                shuffle_draws=8,
                own=own,
            )
        )
    assert results[0]["sq_cos"][0] > 0.9 > results[0]["sq_cos"][2]
    for name in results[0]:
        np.testing.assert_array_equal(results[0][name], results[1][name], err_msg=name)


def test_shuffle_draws_are_seeded_by_step_and_draw_not_by_batching():
    phase = np.linspace(-3, 3, 12)
    used = np.ones(12, bool)
    used[3] = False
    draws = shuffled_phases(phase, used, step=500, draws=4)
    assert draws.shape == (4, 12) and (draws[:, 3] == phase[3]).all()
    assert all(
        sorted(d[used]) == sorted(phase[used]) for d in draws
    )  # permutations of the used phases
    assert len({tuple(d) for d in draws}) == 4
    np.testing.assert_array_equal(shuffled_phases(phase, used, step=500, draws=6)[:4], draws)
    assert not np.array_equal(shuffled_phases(phase, used, step=501, draws=4), draws)


def test_shuffled_control_is_a_distribution_near_chance_and_own_equals_paper_when_frequencies_agree():
    p = 23
    truth = planted_algorithm(p, kind="square")
    steps = np.array([0, 10])
    stack = {k: np.stack([truth[k]] * 2) for k in ("freq", "phase_a", "phase_b", "phase_out")}
    own = dict(
        freq_b=stack["freq"],
        freq_out=stack["freq"],
        phase_b_own=stack["phase_b"],
        phase_out_own=stack["phase_out"],
    )
    result = ideal_accuracies(
        stack["freq"],
        stack["phase_a"],
        stack["phase_b"],
        stack["phase_out"],
        p,
        steps,
        shuffle_draws=16,
        own=own,
    )
    np.testing.assert_array_equal(result["own"], result["sq_cos"])
    assert (result["sq_cos"] >= 0.99).all()
    assert (result["shuffled"] < 0.15).all() and (result["shuffled_hi"] >= result["shuffled"]).all()
    assert result["shuffled"][0] != result["shuffled"][1]  # different draws at different steps
    one = ideal_accuracies(
        stack["freq"][:1],
        stack["phase_a"][:1],
        stack["phase_b"][:1],
        stack["phase_out"][:1],
        p,
        steps[:1],
        shuffle_draws=1,
    )
    assert one["shuffled"][0] == one["shuffled_hi"][0]  # one draw: the percentile is that draw


def test_own_frequencies_differ_from_the_paper_convention_where_a_curve_has_another_frequency():
    """Plant W_b rows whose dominant frequency is not W_a's: the paper reads W_b at W_a's
    frequency (still the right phase, a weaker component), 'own' builds W_b at its own."""
    p = 23
    truth = planted_algorithm(p, kind="square")
    W_b = truth["W_b"] + 0.9 * np.cos(
        2 * np.pi * ((truth["freq"] + 2) % 11 + 1)[:, None] * np.arange(p) / p
    )
    result = mechgrok.analyze(as_dataset(dict(truth, W_b=W_b)))
    at = result.isel(step=0)
    assert (at.freq_b.values != at.freq_a.values).all()
    assert at.ideal_acc > 0.9 and at.ideal_acc_own < 0.3
    assert result.attrs["structure_step"] == 0 and result.attrs["structure_step_own"] == -1
    assert (
        "lead_steps" not in result.attrs and "lead_steps_own" not in result.attrs
    )  # no validation accuracy: undefined


def _key_frequency_model(p, k, n=24):
    """Hidden units that are pure key-frequency waves in a + b, read out at the same frequency:
    logits = sum_i cos(w(a+b) - phi_i) cos(w c - phi_i) = (n/2) cos(w (a + b - c)) for evenly spread phi."""
    a, b = np.divmod(np.arange(p * p), p)
    phases = np.linspace(-np.pi, np.pi, n, endpoint=False)
    hidden = 10 * np.cos(2 * np.pi * k * (a + b)[None, :] / p - phases[:, None])
    W_out = np.cos(2 * np.pi * k * np.arange(p)[None, :] / p - phases[:, None])
    return hidden, W_out, (a + b) % p


def test_progress_measures_on_a_model_built_only_from_key_frequencies():
    p, k = 23, 4
    hidden, W_out, labels = _key_frequency_model(p, k)
    rng = np.random.default_rng(0)
    train = np.sort(rng.choice(p * p, size=150, replace=False))
    val = np.setdiff1d(np.arange(p * p), train)
    own_loss = cross_entropy(hidden[:, val].T @ W_out, labels[val])
    restricted, excluded = losses_from_hidden(
        hidden, W_out, None, KeyProjection.of((k,), p), train, labels[train], val, labels[val]
    )
    assert restricted == pytest.approx(own_loss, rel=1e-5) and own_loss < 0.1
    assert excluded == pytest.approx(np.log(p), rel=1e-5)  # nothing left: uniform logits, chance
    # removing another frequency takes nothing away, and keeping only it leaves chance
    restricted, excluded = losses_from_hidden(
        hidden, W_out, None, KeyProjection.of((k + 1,), p), train, labels[train], val, labels[val]
    )
    assert restricted == pytest.approx(np.log(p), rel=1e-5)
    assert excluded == pytest.approx(
        cross_entropy(hidden[:, train].T @ W_out, labels[train]), rel=1e-5
    )


def test_key_directions_are_orthonormal_and_key_frequencies_come_from_structured_neurons():
    directions = key_directions((1, 5, 11), 23)
    np.testing.assert_allclose(directions.T @ directions, np.eye(6), atol=1e-12)
    values = np.random.default_rng(1).normal(size=(7, 23 * 23))
    for sign in (
        1,
        -1,
    ):  # projecting through the p class sums = projecting onto the p^2-long directions
        keys = KeyProjection.of((1, 5, 11), 23, sign)
        np.testing.assert_allclose(
            keys.coefficients(values), values @ key_directions((1, 5, 11), 23, sign), atol=1e-12
        )
    assert key_frequencies(np.array([3, 0, 5, 3, 7]), np.array([1, 0, 1, 1, 0], bool)) == (3, 5)
    assert key_frequencies(np.array([3, 5]), np.zeros(2, bool)) == ()
    assert check_key_frequencies([5, 2], 23) == (2, 5)
    for bad in ([], [0], [12], [2, 2]):
        with pytest.raises(ValueError, match="key frequencies"):
            check_key_frequencies(bad, 23)


def test_cross_entropy_matches_a_direct_log_softmax():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(40, 7)) * 30  # large logits: the shifted form must not overflow
    labels = rng.integers(0, 7, 40)
    log_probs = (
        logits
        - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True))
        - logits.max(1, keepdims=True)
    )
    assert cross_entropy(logits, labels) == pytest.approx(
        -log_probs[np.arange(40), labels].mean(), rel=1e-6
    )
