"""Progress measures of Nanda et al. (2023), "Progress measures for grokking via mechanistic
interpretability" (section 5), adapted to this MLP. Pure numpy.

The paper's transformer computes logits from MLP neuron activations at the last token; here
the hidden units h_i(a, b) of the MLP take their place (all p^2 pairs, flattened a-major).
- Key frequencies: the paper takes the few frequencies its trained transformer uses (5 of
  56). Here they are the frequencies the trained model's structured neurons use: the
  dominant frequencies of W_a among the neurons structured at the last snapshot. ReLU MLPs
  spread their neurons over many frequencies (often all), so the key set is larger than the
  paper's and restricted/excluded mostly separate what depends on a + b alone from the rest.
- Restricted loss: every neuron's activation over the p^2 pairs is replaced by its
  projection onto the constant and cos/sin(2 pi k (a + b) / p) for the key k, then read out
  by W_out and b_out: logits made of key-frequency terms in a + b - c only. Cross-entropy
  on the validation pairs (true labels), as the paper evaluates it on its test pairs.
- Excluded loss: those key-frequency components are removed from the activations (the
  constant stays), then read out; cross-entropy on the training pairs with the labels used
  in training (noisy ones included), as the paper evaluates it on its training data.
Runs with no recorded split are scored on all pairs with true labels (attribute progress_pairs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mechgrok.analysis.idealize import hidden_units, readout_accuracies
from mechgrok.errors import InvalidOptionError
from mechgrok.operations import law_labels

KEY_FREQS_RULE = "dominant frequencies of W_a among the structured neurons at the last snapshot"


def key_frequencies(freq_a: np.ndarray, structured: np.ndarray) -> tuple[int, ...]:
    """The key frequencies (KEY_FREQS_RULE) from one snapshot's per-neuron dominant
    frequencies of W_a and structured flags (neuron,), ascending; empty if none is structured."""
    return tuple(int(k) for k in np.unique(np.asarray(freq_a)[np.asarray(structured, dtype=bool)]))


def check_key_frequencies(freqs, p: int) -> tuple[int, ...]:
    """Given key frequencies as a sorted tuple; ValueError unless distinct integers in 1..(p-1)//2."""
    values = tuple(sorted(int(k) for k in freqs))
    if not values or len(set(values)) != len(values) or values[0] < 1 or values[-1] > (p - 1) // 2:
        raise InvalidOptionError(
            f"key frequencies {list(freqs)} must be distinct integers in 1..{(p - 1) // 2} for p = {p}"
        )
    return values


@dataclass(frozen=True)
class KeyProjection:
    """The key-frequency directions over the p^2 pairs: cos and sin of 2 pi k s / p for each
    key k, where s = (a + sign b) mod p is the pair's class, scaled to unit norm over the pairs
    (p pairs per class), so orthonormal. A direction depends on the pair only through its
    class, so projecting a function of the pairs onto them needs only its p class sums."""

    class_directions: np.ndarray  # (class, 2K)
    pair_class: np.ndarray  # (pair,): s of each pair, pairs a-major (index a * p + b)
    class_order: np.ndarray  # (pair,): pair indices sorted by class, p groups of p

    @classmethod
    def of(cls, key_freqs: tuple[int, ...], p: int, sign: int = 1) -> KeyProjection:
        angle = 2 * np.pi * np.outer(np.arange(p), np.asarray(key_freqs, dtype=float)) / p
        pair_class = law_labels(p, sign)
        return cls(
            np.concatenate([np.cos(angle), np.sin(angle)], axis=1) / np.sqrt(p * p / 2),
            pair_class,
            np.argsort(pair_class, kind="stable"),
        )

    def directions(self) -> np.ndarray:
        """The directions themselves, (pair, 2K)."""
        return self.class_directions[self.pair_class]

    def coefficients(self, values: np.ndarray) -> np.ndarray:
        """Projections (row, 2K), float64, of rows of values over the pairs (row, pair)."""
        p = self.class_directions.shape[0]
        class_sums = (
            values[:, self.class_order].reshape(values.shape[0], p, p).sum(-1)
        )  # p terms each
        return class_sums.astype(np.float64) @ self.class_directions


def key_directions(key_freqs: tuple[int, ...], p: int, sign: int = 1) -> np.ndarray:
    """Orthonormal directions over the p^2 pairs (pair, 2 len(key_freqs)):
    cos and sin of 2 pi k (a + sign b) / p for each key k, each of unit norm."""
    return KeyProjection.of(key_freqs, p, sign).directions()


def log_normalizers(logits: np.ndarray) -> np.ndarray:
    """log sum_c exp(logits[..., c]) per row: float64, except the exponentials of logit - max
    (in (0, 1], float32 is ~1e-7 relative there)."""
    logits = np.asarray(logits, dtype=np.float64)
    top = logits.max(-1, keepdims=True)
    return np.log(np.exp((logits - top).astype(np.float32)).sum(-1, dtype=np.float64)) + top[..., 0]


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy in nats of (pair, class) logits against integer labels (float64)."""
    logits = np.asarray(logits, dtype=np.float64)
    return float((log_normalizers(logits) - logits[np.arange(labels.size), labels]).mean())


def losses_from_hidden(
    hidden: np.ndarray,
    W_out: np.ndarray,
    b_out: np.ndarray | None,
    keys: KeyProjection,
    train_index: np.ndarray,
    train_label: np.ndarray,
    val_index: np.ndarray,
    val_label: np.ndarray,
) -> tuple[float, float]:
    """(restricted_loss, excluded_loss) of one snapshot from its hidden units (neuron, pair),
    output rows W_out (neuron, class), bias b_out (class,) and the key directions `keys`.
    The key components of the logits depend on a pair only through its class, so they are
    computed once per class (class, class) and looked up per pair. The product over the
    training pairs runs in float32, the rest and the cross-entropies in float64."""
    hidden = np.asarray(hidden, dtype=np.float32)
    W_out64 = np.asarray(W_out, dtype=np.float64)
    bias = 0.0 if b_out is None else np.asarray(b_out, dtype=np.float64)
    key_readout = (
        keys.coefficients(hidden).T @ W_out64
    )  # (2K, class): key components through the output layer
    key_logits = keys.class_directions @ key_readout  # (pair class, class)
    constant = (
        hidden.mean(-1, dtype=np.float64) @ W_out64
    )  # (class,): the constant component through the output layer
    restricted = key_logits + constant + bias  # a pair's restricted logits are its class's row
    val_class = keys.pair_class[val_index]
    restricted_loss = float(
        (log_normalizers(restricted)[val_class] - restricted[val_class, val_label]).mean()
    )
    full = (hidden[:, train_index].T @ np.asarray(W_out, dtype=np.float32)).astype(np.float64)
    excluded = full + (bias - key_logits)[keys.pair_class[train_index]]
    return restricted_loss, cross_entropy(excluded, train_label)


def real_model_measures(
    W_a: np.ndarray,
    W_b: np.ndarray,
    W_out: np.ndarray,
    b_in: np.ndarray | None,
    b_out: np.ndarray | None,
    activation: str,
    key_freqs: tuple[int, ...] | None,
    train_index: np.ndarray | None,
    train_label: np.ndarray | None,
    accuracy: bool,
    sign: int = 1,
) -> dict[str, np.ndarray]:
    """Per snapshot (leading axis) of the real model: `restricted_loss` and `excluded_loss`
    (NaN without key frequencies) and, with `accuracy`, `all_acc` (accuracy on all p^2 pairs,
    exact ties credited 1/t). Without a split (train_index None) both losses use all pairs.
    Labels and key directions follow (a + sign b) mod p."""
    n_steps, _, p = W_a.shape
    labels = law_labels(p, sign)
    if train_index is None:
        train_index, train_label = np.arange(p * p), labels
        val_index = train_index
    else:
        val_index = np.setdiff1d(np.arange(p * p), train_index)
    keys = KeyProjection.of(key_freqs, p, sign) if key_freqs else None
    out = {"restricted_loss": np.full(n_steps, np.nan), "excluded_loss": np.full(n_steps, np.nan)}
    if accuracy:
        out["all_acc"] = np.full(n_steps, np.nan)
    for step in range(n_steps):
        b_in_step = None if b_in is None else b_in[step]
        b_out_step = None if b_out is None else b_out[step]
        hidden = hidden_units(W_a[step], W_b[step], b_in_step, activation)
        if keys is not None:
            out["restricted_loss"][step], out["excluded_loss"][step] = losses_from_hidden(
                hidden,
                W_out[step],
                b_out_step,
                keys,
                train_index,
                train_label,  # type: ignore[arg-type]  # given with train_index
                val_index,
                labels[val_index],
            )
        if accuracy:
            (out["all_acc"][step],) = readout_accuracies(
                hidden, [W_out[step]], b_out_step, integer_logits=[True], sign=sign
            )
    return out
