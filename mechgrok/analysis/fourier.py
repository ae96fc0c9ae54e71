"""Pure functions on weight rows: DFT, dominant frequency/phase/amplitude, periodicity,
ideal square and cosine waves, square-versus-cosine distances, binarization, boundary
fraction, and circular statistics.

Axis convention: the last axis of every `rows` array is the token x = 0..p-1; all leading
axes (e.g. step, neuron) are batch axes. Definitions follow the paper (docs/definitions.md):
  F[k] = sum_x w[x] exp(-2 pi i k x / p)                     (numpy.fft.fft)
  dominant frequency k* = argmax |F[k]| over k = 1..(p-1)/2; 0 for dead or constant rows
  phase phi = -angle(F[k]) in radians, wrapped to [-pi, pi): the row is f(2 pi k x / p - phi)
  amplitude = 2 |F[k*]| / p
  periodicity (paper Eq. 1) = max_k |F[k]| / mean_{k=1..p-1} |F[k]|  ((p-1)/2 for a cosine)
"""

from __future__ import annotations

import functools

import numpy as np

# A row whose largest non-constant Fourier magnitude is below this share of sqrt(p) ||w||_2 is
# treated as constant (or dead): frequency 0, NaN phase and NaN shape statistics.
CONSTANT_ROW_TOLERANCE = 1e-6


def wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Wrap radians to [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


DFT_BY_MATRIX_MAX_P = (
    512  # up to this p the DFT is two real matrix products; beyond it the FFT wins
)


def spectrum(rows: np.ndarray) -> np.ndarray:
    """Complex DFT F[..., k] = sum_x w[..., x] exp(-2 pi i k x / p), k = 0..p-1, complex128.
    For the moduli studied (p <= DFT_BY_MATRIX_MAX_P) it is two real matrix products with
    the cos/sin table: ~3.5x faster than numpy's FFT, which takes Bluestein's detour for
    prime p, and equal to numpy.fft.fft to ~1e-13 relative."""
    rows = np.asarray(rows, dtype=np.float64)
    p = rows.shape[-1]
    if p > DFT_BY_MATRIX_MAX_P:
        return np.fft.fft(rows, axis=-1)
    cos, sin = _dft_table(p)
    F = np.empty(rows.shape, np.complex128)
    F.real = rows @ cos
    F.imag = rows @ sin
    F.imag *= -1
    return F


@functools.lru_cache(maxsize=8)
def _dft_table(p: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of 2 pi k x / p as (x, k) matrices, from (k x mod p) so that each angle
    is reduced exactly before rounding."""
    x = np.arange(p)
    angle = 2 * np.pi * (np.outer(x, x) % p) / p
    return np.cos(angle), np.sin(angle)


def dominant_frequency(F: np.ndarray) -> np.ndarray:
    """k* = argmax |F[k]| over k = 1..(p-1)//2 (int); 0 where the row is constant or dead.
    Equivalent to the paper's k = 1..p-1 for real rows, whose |F[k]| = |F[p-k]|."""
    p = F.shape[-1]
    magnitude = np.abs(F[..., 1 : (p - 1) // 2 + 1])
    k = np.argmax(magnitude, axis=-1) + 1
    scale = np.sqrt((np.abs(F) ** 2).sum(-1))  # sqrt(p) * ||w||_2 (Parseval)
    constant = np.max(magnitude, axis=-1) <= CONSTANT_ROW_TOLERANCE * np.maximum(
        scale, np.finfo(np.float64).tiny
    )
    return np.where(constant, 0, k)


def _at(F: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """F[..., freq[...]] (frequency 0 reads the mean term; callers mask it)."""
    return np.take_along_axis(F, np.asarray(freq)[..., None], axis=-1)[..., 0]


def phase_at(F: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """Phase phi = -angle(F[freq]) in radians, wrapped to [-pi, pi); NaN where freq == 0."""
    return np.where(freq > 0, wrap_angle(-np.angle(_at(F, freq))), np.nan)


def amplitude_at(F: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """2 |F[freq]| / p in the rows' units; 0 where freq == 0."""
    p = F.shape[-1]
    return np.where(freq > 0, 2 * np.abs(_at(F, freq)) / p, 0.0)


def periodicity(F: np.ndarray) -> np.ndarray:
    """The paper's Eq. 1: max_k |F[k]| / mean_{k=1..p-1} |F[k]|; NaN for constant rows.
    A pure cosine scores (p-1)/2; a sign(cos) square wave ~15.8 at p = 97; noise ~2-3."""
    magnitude = np.abs(F[..., 1:])
    mean = magnitude.mean(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(dominant_frequency(F) > 0, magnitude.max(-1) / mean, np.nan)


def inverse_participation_ratio(F: np.ndarray) -> np.ndarray:
    """Spectral concentration: sum_k P_k^2 with P_k = |F[k]|^2 / sum_j |F[j]|^2 over the
    frequencies k = 1..(p-1)//2 (the DC term left out; for even p the real frequency p/2 too).
    1 for a single frequency (a cosine), ~0.67 for a sign(cos) square wave (power in the odd
    harmonics falls as 1/n^2), about 2/K for noise over K = (p-1)//2 frequencies; NaN for
    dead or constant rows."""
    K = (F.shape[-1] - 1) // 2
    power = np.abs(F[..., 1 : K + 1]) ** 2
    total = power.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ipr = (power**2).sum(-1) / total**2
    return np.where(dominant_frequency(F) > 0, ipr, np.nan)


def wave_angle(freq: np.ndarray, phase: np.ndarray, p: int) -> np.ndarray:
    """theta[..., x] = 2 pi freq x / p - phase for x = 0..p-1 (radians)."""
    x = np.arange(p)
    return 2 * np.pi * np.asarray(freq)[..., None] * x / p - np.asarray(phase)[..., None]


def square_levels(rows: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ideal square wave's two levels (paper, section 3): the medians of the row's values
    where cos(theta) >= 0 (high level) and where cos(theta) < 0 (low level); NaN for a half
    with no token (only at frequency 0)."""
    positive = np.cos(theta) >= 0
    return _median_where(rows, positive), _median_where(rows, ~positive)


def _median_where(rows: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """numpy.nanmedian of each row's entries where `mask` (last axis), NaN where none: by one
    sort (nanmedian's per-row handling cost ~6x more on (step, neuron) batches)."""
    mask = mask & ~np.isnan(rows)
    count = mask.sum(-1)
    ordered = np.sort(
        np.where(mask, rows, np.inf), axis=-1
    )  # the masked-in entries first, in order
    lower = np.take_along_axis(ordered, (np.maximum(count, 1) - 1)[..., None] // 2, -1)[..., 0]
    upper = np.take_along_axis(ordered, np.minimum(count // 2, rows.shape[-1] - 1)[..., None], -1)[
        ..., 0
    ]
    with np.errstate(invalid="ignore"):  # (inf + inf where count is 0, replaced by NaN)
        return np.where(count > 0, (lower + upper) / 2, np.nan)


def ideal_square(theta: np.ndarray, high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """high where cos(theta) >= 0, low elsewhere (sign(cos) with fitted levels)."""
    return np.where(np.cos(theta) >= 0, np.asarray(high)[..., None], np.asarray(low)[..., None])


def square_distance(
    rows: np.ndarray,
    theta: np.ndarray,
    freq: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    scale: np.ndarray,
) -> np.ndarray:
    """Mean nearest-point distance from the points (x, w[x]) to the ideal square wave drawn as
    a curve with vertical edges, in the plane (x in tokens, w in units of `scale`). Exact:
    a point is nearest either to its own level or to the closest edge, which lies
    dtheta * p / (2 pi freq) tokens away."""
    p = rows.shape[-1]
    freq = np.asarray(freq)[..., None]
    high, low, scale = (np.asarray(v)[..., None] for v in (high, low, scale))
    own_level = np.where(np.cos(theta) >= 0, high, low)
    to_level = np.abs(rows - own_level) / scale
    r = (theta - np.pi / 2) % np.pi  # edges sit at theta = pi/2 + m pi
    dx = np.minimum(r, np.pi - r) * p / (2 * np.pi * np.maximum(freq, 1))
    top, bottom = np.maximum(high, low), np.minimum(high, low)
    beyond = (np.maximum(rows - top, 0) + np.maximum(bottom - rows, 0)) / scale
    to_edge = np.hypot(dx, beyond)
    return np.minimum(to_level, to_edge).mean(-1)


def cosine_distance(
    rows: np.ndarray,
    theta: np.ndarray,
    freq: np.ndarray,
    amplitude: np.ndarray,
    offset: np.ndarray,
    scale: np.ndarray,
    n_starts: int = 7,
    newton_steps: int = 3,
) -> np.ndarray:
    """Mean nearest-point distance from the points (x, w[x]) to the ideal cosine
    offset + amplitude cos(theta) in the same plane as `square_distance`. The closest curve
    point x + d lies within the vertical gap v = |w - c(x)| of x, so d is searched on
    `n_starts` evenly spaced offsets in [-v, v] and the best refined by Newton's method.
    The result is the distance to an actual curve point (never above v) and matches a
    dense grid search to ~1e-3 (tested)."""
    p = rows.shape[-1]
    # float32 halves the cost of the many cosines; distances need ~1e-4, not 1e-16
    omega = (2 * np.pi * np.asarray(freq)[..., None] / p).astype(np.float32)  # radians per token
    a = (np.asarray(amplitude)[..., None] / np.asarray(scale)[..., None]).astype(np.float32)
    y = ((rows - np.asarray(offset)[..., None]) / np.asarray(scale)[..., None]).astype(np.float32)
    theta = np.asarray(theta, dtype=np.float32)
    vertical = np.abs(y - a * np.cos(theta))

    def distance_sq(d):
        return d**2 + (y - a * np.cos(theta + omega * d)) ** 2

    best_d, best = np.zeros_like(y), vertical**2
    for fraction in np.linspace(
        -1, 1, n_starts, dtype=np.float32
    ):  # float32 scalars keep d float32
        d = fraction * vertical
        candidate = distance_sq(d)
        better = candidate < best
        best_d, best = np.where(better, d, best_d), np.where(better, candidate, best)
    d = best_d
    for _ in range(newton_steps):
        t = theta + omega * d
        c, dc, ddc = a * np.cos(t), -a * omega * np.sin(t), -a * omega**2 * np.cos(t)
        gradient = d + (c - y) * dc
        curvature = 1 + dc**2 + (c - y) * ddc
        step = np.where(curvature > 0, gradient / np.where(curvature > 0, curvature, 1), 0.0)
        d = np.clip(d - step, -vertical, vertical)
        refined = distance_sq(d)
        d = np.where(refined < best, d, best_d)
        best_d, best = d, np.minimum(refined, best)
    return np.sqrt(best).mean(-1, dtype=np.float64)


def binarization(square_dist: np.ndarray, cosine_dist: np.ndarray) -> np.ndarray:
    """(d_cos - d_sq) / (d_cos + d_sq), in [-1, 1]: 1 for a perfect square wave, -1 for a
    perfect cosine, ~0 for noise (both fits equally poor). NaN where both are 0 or NaN."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (cosine_dist - square_dist) / (cosine_dist + square_dist)


def boundary_fraction(
    rows: np.ndarray, theta: np.ndarray, high: np.ndarray, low: np.ndarray
) -> np.ndarray:
    """Of the row's intermediate entries (farther than a quarter of the level gap from both
    levels), the share whose token is next to a sign change of the ideal square wave (the
    sign at x differs from the sign at x - 1 or x + 1, cyclically). NaN when no entry is
    intermediate (claim C1: intermediate values sit only at sign changes)."""
    high, low = np.asarray(high)[..., None], np.asarray(low)[..., None]
    quarter_gap = np.abs(high - low) / 4
    intermediate = (np.abs(rows - high) > quarter_gap) & (np.abs(rows - low) > quarter_gap)
    sign = np.cos(theta) >= 0
    at_edge = (sign != np.roll(sign, 1, axis=-1)) | (sign != np.roll(sign, -1, axis=-1))
    n_intermediate = intermediate.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(
            n_intermediate > 0, (intermediate & at_edge).sum(-1) / n_intermediate, np.nan
        )


def circular_correlation(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Fisher-Lee (1983) circular correlation over all pairs i < j along `axis`, NaN entries
    ignored:  r = sum sin(x_i - x_j) sin(y_i - y_j) / sqrt(sum sin^2(x_i - x_j) sum sin^2(y_i - y_j)).
    1 for y = x + c, -1 for y = -x + c; needs no circular mean, so it stays defined when
    angles spread evenly round the circle. Computed in O(n) from the identities
    sum_{i,j} sin(x_i-x_j) sin(y_i-y_j) = (|S(x-y)|^2 - |S(x+y)|^2) / 2 and
    sum_{i,j} sin^2(x_i-x_j) = (n^2 - |S(2x)|^2) / 2, with S(u) = sum exp(i u)."""
    valid = np.isfinite(x) & np.isfinite(y)
    x, y = np.where(valid, x, 0.0), np.where(valid, y, 0.0)
    n = valid.sum(axis)

    def resultant_sq(u):
        return np.abs(np.where(valid, np.exp(1j * u), 0).sum(axis)) ** 2

    numerator = resultant_sq(x - y) - resultant_sq(x + y)
    denominator = np.sqrt(
        np.clip(n**2 - resultant_sq(2 * x), 0, None) * np.clip(n**2 - resultant_sq(2 * y), 0, None)
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(
            denominator > 1e-12 * np.maximum(n, 1) ** 2, numerator / denominator, np.nan
        )


def mean_resultant_length(angles: np.ndarray, axis: int = -1) -> np.ndarray:
    """|mean exp(i angle)| over non-NaN entries: 1 when all agree, ~1/sqrt(n) when uniform."""
    valid = np.isfinite(angles)
    total = np.where(valid, np.exp(1j * np.where(valid, angles, 0)), 0).sum(axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(total) / valid.sum(axis)
