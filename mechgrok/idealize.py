"""The idealized models of the paper (section 4.1) and their controls, and accuracy over all
p^2 pairs. Pure numpy; leading axes are batch axes (e.g. step), then (neuron, token).

Every neuron i with a frequency (nu_i > 0, read from W_a) is replaced by unit-amplitude waves
  W_a[i, x] = f(2 pi nu x / p - phi_a),  W_b[i, x] = f(2 pi nu x / p - phi_b),
  W_out[i, z] = g(2 pi nu z / p - phi_out),   biases zero,
with f, g in {cos, sq = sign o cos (cos >= 0 -> +1, else -1)}. Dead neurons (nu = 0) are left out.
Controls, so that learned structure can be told from what the construction gives for free:
  phase_sum: Sq->Cos with phi_out forced to phi_a + phi_b (solves the task for any phases);
  shuffled:  Sq->Cos with phi_out permuted across neurons (breaks the learned relation).
"""
from __future__ import annotations

import numpy as np

from .activations import activate
from .fourier import wave_angle

IDEAL_VARIANTS = ("sq_cos", "sq_sq", "cos_cos", "phase_sum", "shuffled")


def square(theta: np.ndarray) -> np.ndarray:
    """sign(cos(theta)) with cos = 0 sent to +1."""
    return np.where(np.cos(theta) >= 0, 1.0, -1.0)


def pair_labels(p: int) -> np.ndarray:
    """(a + b) mod p for all pairs, flattened a-major: index a * p + b."""
    a, b = np.divmod(np.arange(p * p), p)
    return (a + b) % p


def accuracy_all_pairs(W_a: np.ndarray, W_b: np.ndarray, W_out_list: list[np.ndarray],
                       b_in: np.ndarray | None = None, b_out: np.ndarray | None = None,
                       integer_logits: list[bool] | None = None, activation: str = "relu") -> np.ndarray:
    """Accuracy over all p^2 pairs of MLPs that share input rows W_a, W_b (..., n, p) and
    first-layer bias b_in (..., n), for each output matrix in W_out_list (..., n, p), with
    output bias b_out (..., p); leading axes are looped over. Returns (len(W_out_list), ...)
    accuracies, computed in float32 with one matrix product for all outputs; the hidden layer
    applies `activation` (activations.ACTIVATIONS; the idealized models are ReLU). A pair whose label ties with t - 1 other
    classes for the largest logit counts 1/t (expected accuracy under random tie-breaking).
    Exact ties are checked for the outputs flagged in `integer_logits` (Sq->Sq, whose
    logits are integers; a collapsed real model); elsewhere they have probability ~0 and
    the cheaper argmax is used."""
    if W_a.ndim > 2:  # one snapshot at a time: memory stays at one (p^2, n) hidden matrix
        return np.stack([accuracy_all_pairs(W_a[i], W_b[i], [w[i] for w in W_out_list],
                                            None if b_in is None else b_in[i], None if b_out is None else b_out[i],
                                            integer_logits, activation) for i in range(W_a.shape[0])], axis=-1)
    p = W_a.shape[-1]
    batch_shape = W_a.shape[:-2]
    labels = pair_labels(p)
    integer_logits = integer_logits or [False] * len(W_out_list)
    W_a, W_b = W_a.astype(np.float32, copy=False), W_b.astype(np.float32, copy=False)
    hidden = W_a[..., :, :, None] + W_b[..., :, None, :]  # (..., n, a, b)
    if b_in is not None:
        hidden += b_in[..., :, None, None].astype(np.float32)
    hidden = activate(activation, hidden)
    hidden = hidden.reshape(*batch_shape, W_a.shape[-2], p * p)
    outputs = np.concatenate(W_out_list, axis=-1).astype(np.float32, copy=False)  # (..., n, k p)
    logits = np.swapaxes(hidden, -1, -2) @ outputs  # (..., p^2, k p)
    logits = logits.reshape(*batch_shape, p * p, len(W_out_list), p)
    if b_out is not None:
        logits += b_out[..., None, None, :].astype(np.float32)
    accuracies = []
    for index, exact_ties in enumerate(integer_logits):
        part = logits[..., index, :]
        if exact_ties:
            top = part.max(-1)
            label_logit = np.take_along_axis(part, np.broadcast_to(labels[:, None], (*part.shape[:-1], 1)), -1)[..., 0]
            credit = (label_logit == top) / (part == top[..., None]).sum(-1)
        else:
            credit = part.argmax(-1) == labels
        accuracies.append(credit.mean(-1))
    return np.stack(accuracies)


def ideal_accuracies(freq: np.ndarray, phase_a: np.ndarray, phase_b: np.ndarray, phase_out: np.ndarray,
                     p: int, steps: np.ndarray | None = None, shuffle_seed: int = 0) -> dict[str, np.ndarray]:
    """Accuracy over all pairs of the idealized models and controls (IDEAL_VARIANTS) built
    from per-neuron frequency and phases (step, n). Neurons with freq 0 or a NaN phase are
    left out; with none left the accuracy is NaN. The shuffle permutes phi_out among each
    snapshot's included neurons, seeded by (shuffle_seed, step) so that it does not depend
    on how snapshots are batched."""
    freq = np.asarray(freq)
    used = (freq > 0) & np.isfinite(phase_a) & np.isfinite(phase_b) & np.isfinite(phase_out)
    zero = np.zeros_like(phase_a)

    def angle(phase):
        return wave_angle(np.where(used, freq, 0), np.where(used, phase, zero), p)

    def masked(rows):  # excluded neurons contribute nothing: zero output rows
        return np.where(used[..., None], rows, 0.0)

    steps = np.arange(freq.shape[0]) if steps is None else np.asarray(steps)
    shuffled_out = np.array(phase_out, dtype=float, copy=True)
    for row, step in enumerate(steps):
        members = np.flatnonzero(used[row])
        order = np.random.default_rng([shuffle_seed, int(step)]).permutation(members.size)
        shuffled_out[row, members] = shuffled_out[row, members][order]

    theta_a, theta_b, theta_out = angle(phase_a), angle(phase_b), angle(phase_out)
    sq_a, sq_b = square(theta_a), square(theta_b)
    cos_out = masked(np.cos(theta_out))
    square_input_outputs = [
        cos_out,  # sq_cos
        masked(square(theta_out)),  # sq_sq
        masked(np.cos(angle(phase_a + phase_b))),  # phase_sum
        masked(np.cos(angle(shuffled_out))),  # shuffled
    ]
    sq_cos, sq_sq, phase_sum, shuffled = accuracy_all_pairs(sq_a, sq_b, square_input_outputs,
                                                            integer_logits=[False, True, False, False])
    (cos_cos,) = accuracy_all_pairs(np.cos(theta_a), np.cos(theta_b), [cos_out])
    result = dict(sq_cos=sq_cos, sq_sq=sq_sq, cos_cos=cos_cos, phase_sum=phase_sum, shuffled=shuffled)
    empty = ~used.any(-1)
    return {name: np.where(empty, np.nan, value) for name, value in result.items()}
