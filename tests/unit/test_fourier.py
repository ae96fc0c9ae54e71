import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from planted import planted_rows

from mechgrok.analysis import fourier

primes = st.sampled_from([3, 5, 7, 11, 13, 17, 23, 29, 31, 97])


@settings(max_examples=200, deadline=None)
@given(
    p=primes,
    data=st.data(),
    phi=st.floats(-np.pi, np.pi - 1e-9),
    amp=st.floats(0.1, 10),
    offset=st.floats(-3, 3),
)
def test_cosine_rows_give_their_frequency_phase_and_amplitude(p, data, phi, amp, offset):
    k = data.draw(st.integers(1, (p - 1) // 2))
    F = fourier.spectrum(planted_rows([k], [phi], p, amplitude=amp, offset=offset))
    freq = fourier.dominant_frequency(F)
    assert freq[0] == k
    assert abs(fourier.wrap_angle(fourier.phase_at(F, freq)[0] - phi)) < 1e-6
    assert fourier.amplitude_at(F, freq)[0] == pytest.approx(amp, rel=1e-9)
    assert fourier.periodicity(F)[0] == pytest.approx((p - 1) / 2, rel=1e-9)


@pytest.mark.parametrize("p", [3, 11, 12, 97, fourier.DFT_BY_MATRIX_MAX_P + 1])
def test_spectrum_is_numpys_fft(p):
    rows = np.random.default_rng(p).normal(size=(3, 4, p))
    rows[0, 0] = np.nan  # a diverged row stays NaN, as in the FFT
    rows[0, 1] = 2.5  # a constant row
    expected = np.fft.fft(rows, axis=-1)
    F = fourier.spectrum(rows.astype(np.float32) if p == 11 else rows)
    if p == 11:
        expected = np.fft.fft(rows.astype(np.float32).astype(np.float64), axis=-1)
    assert F.dtype == np.complex128 and F.shape == rows.shape
    assert np.isnan(F[0, 0]).all()
    np.testing.assert_allclose(
        F[~np.isnan(rows[..., 0])], expected[~np.isnan(rows[..., 0])], rtol=0, atol=1e-12 * p
    )
    assert fourier.dominant_frequency(F)[0, 1] == 0


@settings(max_examples=100, deadline=None)
@given(p=st.integers(1, 40), rows=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_square_levels_are_nanmedians_of_each_half(p, rows, seed):
    import warnings

    rng = np.random.default_rng(seed)
    values = rng.normal(size=(rows, p)).round(1)  # rounded: ties, as in trained rows
    values[rng.random((rows, p)) < 0.1] = np.nan
    theta = rng.uniform(-np.pi, np.pi, size=(rows, p))
    high, low = fourier.square_levels(values, theta)
    positive = np.cos(theta) >= 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an empty half
        np.testing.assert_array_equal(
            high, np.nanmedian(np.where(positive, values, np.nan), axis=-1)
        )
        np.testing.assert_array_equal(
            low, np.nanmedian(np.where(positive, np.nan, values), axis=-1)
        )


@given(angle=st.floats(-1e6, 1e6))
def test_wrap_angle_lands_in_range_and_keeps_the_direction(angle):
    wrapped = fourier.wrap_angle(angle)
    assert -np.pi <= wrapped < np.pi
    assert np.isclose(np.exp(1j * wrapped), np.exp(1j * angle), atol=1e-6)


def test_square_wave_periodicity_matches_paper():
    for p, expected in ((97, 15.8), (59, 10.4)):
        F = fourier.spectrum(planted_rows([5], [0.3], p, kind="square"))
        assert fourier.periodicity(F)[0] == pytest.approx(expected, abs=0.1)


def test_dead_and_constant_rows_get_frequency_zero_and_nan_phase():
    rows = np.stack([np.zeros(13), np.full(13, 0.7), planted_rows([2], [1.0], 13)[0]])
    F = fourier.spectrum(rows)
    freq = fourier.dominant_frequency(F)
    assert freq.tolist() == [0, 0, 2]
    phase = fourier.phase_at(F, freq)
    assert np.isnan(phase[:2]).all() and np.isfinite(phase[2])
    assert np.isnan(fourier.periodicity(F)[:2]).all()


def _dense_distance(rows, theta_fn, curve_fn, p, scale):
    """Reference nearest-point distance to a curve sampled on a fine grid (slow)."""
    x = np.arange(p)
    grid = np.linspace(-2, p + 2, (p + 4) * 2000)
    cy = curve_fn(grid) / scale
    d = np.hypot(x[:, None] - grid[None, :], rows[:, None] / scale - cy[None, :]).min(1)
    return d.mean()


@pytest.mark.parametrize("seed", range(4))
def test_cosine_distance_matches_dense_search(seed):
    rng = np.random.default_rng(seed)
    p, k, phi, amp, offset = 23, int(rng.integers(1, 12)), rng.uniform(-np.pi, np.pi), 0.8, 0.1
    row = planted_rows([k], [phi], p, kind="square", amplitude=0.6, offset=0.1)[
        0
    ] + 0.2 * rng.standard_normal(p)
    theta = fourier.wave_angle(np.array([k]), np.array([phi]), p)
    fast = fourier.cosine_distance(
        row[None], theta, np.array([k]), np.array([amp]), np.array([offset]), np.array([amp])
    )[0]
    slow = _dense_distance(
        row, None, lambda g: offset + amp * np.cos(2 * np.pi * k * g / p - phi), p, amp
    )
    assert fast == pytest.approx(slow, abs=2e-3)


@pytest.mark.parametrize("seed", range(4))
def test_square_distance_matches_dense_search(seed):
    rng = np.random.default_rng(seed)
    p, k, phi = 23, int(rng.integers(1, 12)), rng.uniform(-np.pi, np.pi)
    high, low, scale = 0.5, -0.4, 0.6
    row = planted_rows([k], [phi], p, kind="cos", amplitude=0.5)[0] + 0.2 * rng.standard_normal(p)
    theta = fourier.wave_angle(np.array([k]), np.array([phi]), p)
    fast = fourier.square_distance(
        row[None], theta, np.array([k]), np.array([high]), np.array([low]), np.array([scale])
    )[0]
    # reference: the square wave as a polyline with vertical edges, densely sampled (edges included)
    grid = np.linspace(-2, p + 2, (p + 4) * 2000)
    levels = np.where(np.cos(2 * np.pi * k * grid / p - phi) >= 0, high, low)
    edges = np.flatnonzero(np.diff(levels) != 0)
    ex = np.repeat(grid[edges], 200)
    ey = np.tile(np.linspace(low, high, 200), edges.size)
    cx, cy = np.concatenate([grid, ex]), np.concatenate([levels, ey])
    d = np.hypot(np.arange(p)[:, None] - cx[None], (row[:, None] - cy[None]) / scale).min(1).mean()
    assert fast == pytest.approx(d, abs=2e-3)


def test_binarization_orders_square_above_cosine_above_noise():
    p, n = 31, 40
    rng = np.random.default_rng(1)
    freq, phase = rng.integers(1, 15, n), rng.uniform(-np.pi, np.pi, n)
    scores = {}
    for kind in ("square", "cos", "noise"):
        rows = (
            rng.standard_normal((n, p))
            if kind == "noise"
            else planted_rows(freq, phase, p, kind=kind, amplitude=0.5)
        )
        F = fourier.spectrum(rows)
        k = fourier.dominant_frequency(F)
        ph = fourier.phase_at(F, k)
        theta = fourier.wave_angle(k, ph, p)
        high, low = fourier.square_levels(rows, theta)
        amp = fourier.amplitude_at(F, k)
        sq = fourier.square_distance(rows, theta, k, high, low, amp)
        co = fourier.cosine_distance(rows, theta, k, amp, F[:, 0].real / p, amp)
        scores[kind] = np.median(fourier.binarization(sq, co))
    assert scores["square"] > 0.9
    assert scores["cos"] < -0.9
    assert abs(scores["noise"]) < 0.3
    assert scores["square"] > scores["noise"] > scores["cos"]


def test_boundary_fraction_sees_intermediate_values_only_at_edges():
    p, k, phi = 31, 3, 0.4
    theta = fourier.wave_angle(np.array([k]), np.array([phi]), p)
    square = planted_rows([k], [phi], p, kind="square", amplitude=0.5)[0]
    soft = np.where(
        np.abs(np.cos(theta[0])) < 0.3, 0.0, square
    )  # intermediate values at the edges only
    assert fourier.boundary_fraction(soft[None], theta, np.array([0.5]), np.array([-0.5]))[0] == 1.0
    middle = square.copy()
    middle[np.argmax(np.cos(theta[0]))] = 0.0  # an intermediate value at a crest, far from an edge
    assert (
        fourier.boundary_fraction(middle[None], theta, np.array([0.5]), np.array([-0.5]))[0] == 0.0
    )
    assert np.isnan(
        fourier.boundary_fraction(square[None], theta, np.array([0.5]), np.array([-0.5]))[0]
    )


angles = st.lists(st.floats(-np.pi, np.pi), min_size=5, max_size=40)


@settings(max_examples=100, deadline=None)
@given(x=angles, shift=st.floats(-np.pi, np.pi))
def test_circular_correlation_identity_negation_and_rotation(x, shift):
    x = np.array(x)
    if np.ptp(np.sin(x[:, None] - x[None, :]) ** 2) < 1e-6:
        return  # all pairs collinear: undefined
    assert fourier.circular_correlation(x, x) == pytest.approx(1.0, abs=1e-9)
    assert fourier.circular_correlation(x, -x) == pytest.approx(-1.0, abs=1e-9)
    assert fourier.circular_correlation(x, x + shift) == pytest.approx(1.0, abs=1e-9)
    y = np.random.default_rng(0).uniform(-np.pi, np.pi, x.size)
    assert fourier.circular_correlation(x + shift, y + 0.3) == pytest.approx(
        fourier.circular_correlation(x, y), abs=1e-9
    )


def test_circular_correlation_matches_pairwise_definition_on_evenly_spread_phases():
    n = 24
    x = np.linspace(-np.pi, np.pi, n, endpoint=False)  # mean direction undefined
    y = fourier.wrap_angle(x + 0.5 + 0.03 * np.random.default_rng(2).standard_normal(n))
    i, j = np.triu_indices(n, 1)
    sx, sy = np.sin(x[i] - x[j]), np.sin(y[i] - y[j])
    brute = (sx * sy).sum() / np.sqrt((sx**2).sum() * (sy**2).sum())
    assert fourier.circular_correlation(x, y) == pytest.approx(brute, abs=1e-9)
    assert fourier.circular_correlation(x, y) > 0.99
    assert fourier.mean_resultant_length(y - x) > 0.99
    unrelated = np.random.default_rng(3).uniform(-np.pi, np.pi, 400)
    assert fourier.mean_resultant_length(unrelated) < 0.15


def test_inverse_participation_ratio_on_known_spectra():
    p = 97
    x = np.arange(p)
    rows = np.stack(
        [
            np.cos(2 * np.pi * 5 * x / p + 0.3),
            np.sign(np.cos(2 * np.pi * 5 * x / p + 0.3)),
            np.random.default_rng(0).normal(size=p),
            np.ones(p),
            np.zeros(p),
        ]
    )
    ipr = fourier.inverse_participation_ratio(fourier.spectrum(rows))
    assert ipr[0] == pytest.approx(1.0, abs=1e-12)  # one frequency
    assert ipr[1] == pytest.approx(
        64 / 96, abs=0.01
    )  # square wave: sum 1/n^4 / (sum 1/n^2)^2 over odd n
    assert ipr[2] < 0.1  # noise spreads over the 48 frequencies (2/48 expected)
    assert np.isnan(ipr[3]) and np.isnan(ipr[4])  # constant and dead rows
