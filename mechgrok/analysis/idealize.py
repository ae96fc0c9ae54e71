"""The idealized models of the paper (section 4.1) and their controls, and accuracy over all
p^2 pairs. Pure numpy; leading axes are batch axes (e.g. step), then (neuron, token).

Every neuron i with a frequency (nu_i > 0, read from W_a) is replaced by unit-amplitude waves
  W_a[i, x] = f(2 pi nu x / p - phi_a),  W_b[i, x] = f(2 pi nu x / p - phi_b),
  W_out[i, z] = g(2 pi nu z / p - phi_out),   biases zero,
with f, g in {cos, sq = sign o cos (cos >= 0 -> +1, else -1)}. Dead neurons (nu = 0) are left out.
Controls, so that learned structure can be told from what the construction gives for free:
  phase_sum: Sq->Cos with phi_out forced to phi_a + phi_b (solves the task for any phases);
             for subtraction (sign -1: labels (a - b) mod p) everything reads phi_a - phi_b;
  shuffled:  Sq->Cos with phi_out permuted across neurons (breaks the learned relation), as a
             distribution over `shuffle_draws` permutations: its mean and 95th percentile.
Convention check:
  own:       Sq->Cos with W_a, W_b and W_out each at its own dominant frequency and phase
             there (a peer codebase's reading), instead of all three at W_a's frequency.
"""

from __future__ import annotations

import functools

import numpy as np

from mechgrok.analysis.fourier import wave_angle
from mechgrok.config import ANALYSIS_DEFAULTS
from mechgrok.models.activations import activate
from mechgrok.operations import law_labels

IDEAL_VARIANTS = ("sq_cos", "sq_sq", "cos_cos", "phase_sum", "shuffled", "shuffled_hi", "own")
SHUFFLE_DRAWS = int(ANALYSIS_DEFAULTS["shuffle_draws"])  # permutations behind the shuffled control
SHUFFLE_QUANTILE = 0.95
COSINE_BATCH_BYTES = (
    64 * 2**20
)  # memory for the per-frequency sums of the cosine read-outs scored at a time
SCREEN_CLASSES = (
    12  # classes tried first when screening (about 1 in 13 pairs of a shuffled control survives)
)
# A read-out scored below this at one snapshot is screened at the next (the shuffled draws always
# are): screening pays when most pairs are wrong and gives the same accuracy either way.
SCREEN_BELOW_ACCURACY = 0.5


def square(theta: np.ndarray) -> np.ndarray:
    """sign(cos(theta)) with cos = 0 sent to +1."""
    return np.where(np.cos(theta) >= 0, 1.0, -1.0)


def hidden_units(
    W_a: np.ndarray, W_b: np.ndarray, b_in: np.ndarray | None = None, activation: str = "relu"
) -> np.ndarray:
    """Post-activation hidden units of one MLP on all p^2 pairs, float32 (neuron, pair), pairs
    flattened a-major (index a * p + b), from input rows W_a, W_b (neuron, token)."""
    W_a, W_b = W_a.astype(np.float32, copy=False), W_b.astype(np.float32, copy=False)
    hidden = W_a[:, :, None] + W_b[:, None, :]  # (n, a, b)
    if b_in is not None:
        hidden += b_in[:, None, None].astype(np.float32)
    return activate(activation, hidden).reshape(W_a.shape[0], -1)


def square_hidden_units(theta_a: np.ndarray, theta_b: np.ndarray) -> np.ndarray:
    """`hidden_units(square(theta_a), square(theta_b))` (ReLU) in one product: with square
    waves of +-1, ReLU(sq_a + sq_b) = 2 [sq_a > 0] [sq_b > 0]. float32 (neuron, pair)."""
    up_a = (np.cos(theta_a) >= 0).astype(np.float32) * 2
    up_b = (np.cos(theta_b) >= 0).astype(np.float32)
    return (up_a[:, :, None] * up_b[:, None, :]).reshape(up_a.shape[0], -1)


def _credit(logits: np.ndarray, labels: np.ndarray, exact_ties: bool) -> float:
    """Accuracy of (pair, class) logits: with `exact_ties` a pair whose label ties with t - 1
    other classes for the largest logit counts 1/t; otherwise argmax (ties have probability ~0)."""
    if not exact_ties:
        return float((logits.argmax(-1) == labels).mean())
    top = logits.max(-1)
    label_logit = np.take_along_axis(logits, labels[:, None], -1)[:, 0]
    return float(((label_logit == top) / (logits == top[:, None]).sum(-1)).mean())


def readout_accuracies(
    hidden: np.ndarray,
    W_out_list: list[np.ndarray],
    b_out: np.ndarray | None = None,
    integer_logits: list[bool] | None = None,
    sign: int = 1,
) -> np.ndarray:
    """Accuracy on all pairs of each output matrix (neuron, class) in W_out_list read from the
    same hidden units (neuron, pair), with output bias b_out (class,): one matrix product for
    all outputs, in float32; the label of pair (a, b) is (a + sign b) mod p. A pair whose
    label ties with t - 1 other classes for the largest logit counts 1/t (expected accuracy
    under random tie-breaking), checked for the outputs flagged in `integer_logits` (integer
    logits: Sq->Sq, a collapsed real model); elsewhere ties have probability ~0 and argmax is used."""
    p = W_out_list[0].shape[-1]
    labels = law_labels(p, sign)
    integer_logits = integer_logits or [False] * len(W_out_list)
    outputs = np.concatenate(W_out_list, axis=-1).astype(np.float32, copy=False)  # (n, k p)
    logits = (hidden.T @ outputs).reshape(-1, len(W_out_list), p)
    if b_out is not None:
        logits += b_out.astype(np.float32)
    return np.array(
        [
            _credit(np.ascontiguousarray(logits[:, index]), labels, exact)
            for index, exact in enumerate(integer_logits)
        ]
    )


def cosine_readout_accuracies(
    hidden: np.ndarray,
    freq: np.ndarray,
    phases: np.ndarray,
    p: int,
    sign: int = 1,
    screen: bool | np.ndarray = False,
) -> np.ndarray:
    """Accuracy on all pairs of cosine read-outs W_out[i, c] = cos(2 pi freq_i c / p - phases[v, i])
    of the same hidden units (neuron, pair), one per row v of `phases` (variant, neuron);
    neurons with freq 0 are left out. Equal to `readout_accuracies` with those matrices, but
    computed by frequency: the neurons sharing a frequency k add up to
    A_v,k(pair) cos(2 pi k c / p) + B_v,k(pair) sin(2 pi k c / p), so each variant costs a
    (pairs x 2K) by (2K x p) product for the K frequencies in use instead of (pairs x n) by
    (n x p): what makes many shuffled draws cheap. For the variants flagged in `screen` (one
    flag, or one per variant), pairs whose label is beaten by one of a few fixed classes are
    counted wrong before all p logits are computed (same result; ~2x faster when most pairs
    are wrong, as for the shuffled control). Neurons already sorted by frequency are not copied."""
    freq = np.asarray(freq)
    phases = np.atleast_2d(phases)
    n_variants = phases.shape[0]
    screen = np.broadcast_to(np.asarray(screen, dtype=bool), (n_variants,))
    labels = law_labels(p, sign)
    order = np.argsort(freq, kind="stable")
    order = order[freq[order] > 0]
    if order.size == 0:
        return np.full(n_variants, np.nan)
    frequencies, starts = np.unique(freq[order], return_index=True)
    bounds = np.append(starts, order.size)
    first_row = int(order[0])
    contiguous = np.array_equal(order, np.arange(first_row, first_row + order.size))
    rows = (
        hidden[first_row : first_row + order.size] if contiguous else hidden[order]
    )  # grouped by frequency
    cos_part = np.cos(phases[:, order]).astype(np.float32)
    sin_part = np.sin(phases[:, order]).astype(np.float32)
    basis = _class_basis(frequencies, p)
    scorer = _screened_scorer(tuple(frequencies.tolist()), p, sign) if screen.any() else None
    accuracies = np.empty(n_variants)
    largest = int(
        np.clip(COSINE_BATCH_BYTES // (2 * frequencies.size * hidden.shape[1] * 4), 1, n_variants)
    )
    batch_size = -(
        -n_variants // -(-n_variants // largest)
    )  # batches of even size: each one reads every row once
    for first in range(0, n_variants, batch_size):
        batch = slice(first, min(first + batch_size, n_variants))
        width = batch.stop - batch.start
        # per-frequency sums, laid out (frequency, cos/sin, variant, pair) so each matrix product writes in place
        sums = np.empty((frequencies.size, 2 * width, hidden.shape[1]), np.float32)
        for k in range(frequencies.size):
            lo, hi = bounds[k], bounds[k + 1]
            weights = np.concatenate(
                [cos_part[batch, lo:hi], sin_part[batch, lo:hi]]
            )  # (2 width, n_k)
            np.matmul(weights, rows[lo:hi], out=sums[k])
        sums = sums.reshape(frequencies.size, 2, width, -1)
        for v in range(width):
            coefficients = sums[:, :, v, :].reshape(2 * frequencies.size, -1)  # (2K, pairs), a view
            accuracies[first + v] = (
                scorer.accuracy(coefficients)  # type: ignore[union-attr]  # made where screen has any
                if screen[first + v]
                else _credit(coefficients.T @ basis, labels, exact_ties=False)
            )
    return accuracies


def _class_basis(frequencies: np.ndarray, p: int) -> np.ndarray:
    """cos and sin of 2 pi k c / p for each frequency k (rows cos k1, sin k1, cos k2, ...) over
    the classes c (columns): (2K, p) float32."""
    classes = 2 * np.pi * np.outer(frequencies, np.arange(p)) / p
    return np.stack([np.cos(classes), np.sin(classes)], axis=1).reshape(-1, p).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _screened_scorer(frequencies: tuple[int, ...], p: int, sign: int) -> _ScreenedScorer:
    """One scorer per set of frequencies in use: read-outs and snapshots that share the set
    share its tables (the label columns are (2K, p^2), ~4 MB at p = 97)."""
    return _ScreenedScorer(_class_basis(np.array(frequencies), p), law_labels(p, sign))


class _ScreenedScorer:
    """Argmax accuracy of logits = coefficients.T @ basis for coefficients (2K, pair) and
    basis (2K, class), computing all classes only for the pairs whose label logit is not
    clearly beaten by one of SCREEN_CLASSES fixed classes. "Clearly": by more than a relative
    1e-5, so that rounding (the label logit is a column-wise dot product, not the matrix
    product) never rejects a pair the full argmax would count; near-ties go on to the full
    argmax, which decides as without screening."""

    def __init__(self, basis: np.ndarray, labels: np.ndarray):
        p, basis_t = basis.shape[1], basis.T
        self.basis, self.labels = basis, labels
        candidates = np.unique(np.linspace(0, p - 1, min(SCREEN_CLASSES, p)).round().astype(int))
        self.candidate_basis_t = basis_t[candidates]  # (candidate, 2K)
        self.label_basis = np.ascontiguousarray(
            basis_t[labels].T
        )  # (2K, pair): each pair's label column
        self.is_label = candidates[:, None] == labels[None, :]

    def accuracy(self, coefficients: np.ndarray) -> float:
        label_logit = np.einsum("ji,ji->i", coefficients, self.label_basis)
        candidate_logit = self.candidate_basis_t @ coefficients  # (candidate, pair)
        margin = 1e-5 * (np.abs(label_logit) + np.abs(candidate_logit))
        beaten = ((candidate_logit > label_logit + margin) & ~self.is_label).any(axis=0)
        alive = np.flatnonzero(~beaten)
        if alive.size == 0:
            return 0.0
        logits = coefficients[:, alive].T @ self.basis  # (surviving pair, class)
        return float((logits.argmax(-1) == self.labels[alive]).sum() / self.labels.size)


def shuffled_phases(
    phase_out: np.ndarray, used: np.ndarray, step: int, draws: int, seed: int = 0
) -> np.ndarray:
    """`draws` permutations of phase_out (neuron,) among the `used` neurons, seeded by
    (seed, step, draw) so that they do not depend on how snapshots are batched: (draws, neuron)."""
    members = np.flatnonzero(used)
    out = np.repeat(np.asarray(phase_out, dtype=float)[None], draws, axis=0)
    for draw in range(draws):
        order = np.random.default_rng([seed, int(step), draw]).permutation(members.size)
        out[draw, members] = out[draw, members][order]
    return out


def ideal_accuracies(
    freq: np.ndarray,
    phase_a: np.ndarray,
    phase_b: np.ndarray,
    phase_out: np.ndarray,
    p: int,
    steps: np.ndarray | None = None,
    shuffle_seed: int = 0,
    shuffle_draws: int = SHUFFLE_DRAWS,
    own: dict[str, np.ndarray] | None = None,
    sign: int = 1,
) -> dict[str, np.ndarray]:
    """Accuracy over all pairs of the idealized models and controls (IDEAL_VARIANTS) built
    from per-neuron frequency and phases (step, n). Neurons with freq 0 or a NaN phase are
    left out; with none left the accuracy is NaN. `shuffled` is the mean and `shuffled_hi`
    the 95th percentile over `shuffle_draws` permutations of phi_out (`shuffled_phases`).
    `own` (keys freq_b, freq_out, phase_b_own, phase_out_own, each (step, n)) adds the
    Sq->Cos model with each curve at its own frequency and phase. `sign` is the operation's
    law: labels (a + sign b) mod p, and the phase-sum control phi_a + sign phi_b."""
    freq = np.asarray(freq)
    steps = np.arange(freq.shape[0]) if steps is None else np.asarray(steps)
    names = [v for v in IDEAL_VARIANTS if v != "own" or own is not None]
    result = {name: np.full(freq.shape[0], np.nan) for name in names}
    screen = {
        "sq_cos": False,
        "phase_sum": False,
        "cos_cos": False,
        "own": True,
    }  # until a snapshot says otherwise
    for row, step in enumerate(steps):
        used = (
            (freq[row] > 0)
            & np.isfinite(phase_a[row])
            & np.isfinite(phase_b[row])
            & np.isfinite(phase_out[row])
        )
        if used.any():
            scores = _ideal_snapshot(
                freq[row],
                phase_a[row],
                phase_b[row],
                phase_out[row],
                used,
                p,
                shuffled_phases(phase_out[row], used, step, shuffle_draws, shuffle_seed),
                sign,
                screen,
            )
            for name, value in scores.items():
                result[name][row] = value
        if own is not None:
            result["own"][row] = _own_snapshot(  # type: ignore[call-arg]  # mypy miscounts *(4 items)
                freq[row],
                phase_a[row],
                *(own[k][row] for k in ("freq_b", "freq_out", "phase_b_own", "phase_out_own")),
                p,
                sign,
                screen["own"],
            )
        for name in screen:
            if name in result and np.isfinite(result[name][row]):
                screen[name] = bool(result[name][row] < SCREEN_BELOW_ACCURACY)
    return result


def _ideal_snapshot(
    freq, phase_a, phase_b, phase_out, used, p, shuffled, sign, screen: dict[str, bool]
) -> dict[str, float]:
    """The paper-convention variants of one snapshot (neuron,) arrays; `shuffled` (draw,
    neuron); `screen` says which cosine read-outs to screen (the draws always are)."""
    order = np.argsort(
        np.where(used, freq, 0), kind="stable"
    )  # neurons by frequency: no copies when scoring
    freq, phase_a, phase_b, phase_out, used, shuffled = (
        x[..., order] for x in (freq, phase_a, phase_b, phase_out, used, shuffled)
    )
    freq = np.where(used, freq, 0)

    def angle(phase):
        return wave_angle(freq, np.where(used, phase, 0.0), p)

    theta_a, theta_b = angle(phase_a), angle(phase_b)
    square_hidden = square_hidden_units(theta_a, theta_b)
    cosine_variants = np.concatenate([np.stack([phase_out, phase_a + sign * phase_b]), shuffled])
    screened = np.array([screen["sq_cos"], screen["phase_sum"]] + [True] * len(shuffled))
    cosine = cosine_readout_accuracies(
        square_hidden, freq, np.where(used, cosine_variants, 0.0), p, sign, screened
    )
    sq_cos, phase_sum, draws = cosine[0], cosine[1], cosine[2:]
    (sq_sq,) = readout_accuracies(
        square_hidden,
        [np.where(used[:, None], square(angle(phase_out)), 0.0)],
        integer_logits=[True],
        sign=sign,
    )
    (cos_cos,) = cosine_readout_accuracies(
        hidden_units(np.cos(theta_a), np.cos(theta_b)),
        freq,
        np.where(used, phase_out, 0.0)[None],
        p,
        sign,
        screen["cos_cos"],
    )
    return dict(
        sq_cos=sq_cos,
        phase_sum=phase_sum,
        sq_sq=sq_sq,
        cos_cos=cos_cos,
        shuffled=draws.mean(),
        shuffled_hi=np.quantile(draws, SHUFFLE_QUANTILE),
    )


def _own_snapshot(
    freq_a, phase_a, freq_b, freq_out, phase_b, phase_out, p, sign, screen: bool
) -> float:
    """Sq->Cos of one snapshot with W_a, W_b, W_out each at its own frequency and phase
    (`screen`: screen the read-out)."""
    used = (
        (freq_a > 0)
        & (freq_b > 0)
        & (freq_out > 0)
        & np.isfinite(phase_a)
        & np.isfinite(phase_b)
        & np.isfinite(phase_out)
    )
    if not used.any():
        return np.nan

    order = np.argsort(
        np.where(used, freq_out, 0), kind="stable"
    )  # neurons by W_out's frequency: no copies when scoring
    freq_a, phase_a, freq_b, freq_out, phase_b, phase_out, used = (
        x[order] for x in (freq_a, phase_a, freq_b, freq_out, phase_b, phase_out, used)
    )

    def angle(freq, phase):
        return wave_angle(np.where(used, freq, 0), np.where(used, phase, 0.0), p)

    hidden = square_hidden_units(angle(freq_a, phase_a), angle(freq_b, phase_b))
    (accuracy,) = cosine_readout_accuracies(
        hidden, np.where(used, freq_out, 0), np.where(used, phase_out, 0.0)[None], p, sign, screen
    )
    return accuracy
