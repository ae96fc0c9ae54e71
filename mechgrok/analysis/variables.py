"""One registry of the analysis variables: each one's CF long_name and units (written into
analysis files) and, for those shown to people, a label (the headline, the report's figures
and explorer) and a short name (the sweep table's columns). Texts that depend on the run's
phase law (phi_out = phi_a + phi_b for add and mul, phi_a - phi_b for sub and div) hold the
placeholders {law} ("phase_a + phase_b"), {phi_law} ("phi_a + phi_b") and {pair} ("a + b"),
which `long_name`, `label` and `variable_attrs` fill from the law's sign."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mechgrok.operations import recorded_operation

WEIGHTS = {"a": "W_a", "b": "W_b", "out": "W_out"}
# (long_name, units) of the analysis variables; the a/b/out families are filled in below
VARIABLES: dict[str, tuple[str, str]] = {
    "step": ("optimizer updates applied before the snapshot", "1"),
    "neuron": ("hidden neuron index", "1"),
    "phase_b_own": ("phase of W_b at its own dominant frequency", "rad"),
    "phase_out_own": ("phase of W_out at its own dominant frequency", "rad"),
    "freq_agree": ("dominant frequencies of W_a, W_b and W_out agree (and are > 0)", "1"),
    "phase_sum_error": ("wrap(phase_out - ({law})): the phase law's error", "rad"),
    "structured": ("periodicity_a > threshold and W_a, W_b, W_out frequencies agree", "1"),
    "unstructured": ("periodicity_a < threshold_low (or undefined)", "1"),
    "r_all": (
        "Fisher-Lee circular correlation of phase_out with {law}, all neurons with a phase",
        "1",
    ),
    "r_structured": (
        "Fisher-Lee circular correlation of phase_out with {law}, structured neurons",
        "1",
    ),
    "phase_sum_coherence": ("|mean exp(i phase_sum_error)| over structured neurons", "1"),
    "n_structured": ("number of structured neurons", "1"),
    "n_unstructured": ("number of unstructured neurons", "1"),
    "periodicity_median": ("median periodicity_a over neurons", "1"),
    "binarization_median": ("median binarization_a over neurons", "1"),
    "square_vs_cosine_t": (
        "paired t of square_dist_a - cosine_dist_a over structured neurons",
        "1",
    ),
    "ideal_acc": ("Sq->Cos idealized model accuracy on all p^2 pairs", "1"),
    "ideal_acc_sq_sq": ("Sq->Sq idealized model accuracy on all p^2 pairs", "1"),
    "ideal_acc_cos_cos": ("Cos->Cos idealized model accuracy on all p^2 pairs", "1"),
    "ideal_acc_phase_sum": ("control: Sq->Cos with phase_out forced to {law}", "1"),
    "ideal_acc_shuffled": (
        "control: Sq->Cos with phase_out shuffled across neurons, mean over shuffle_draws permutations",
        "1",
    ),
    "ideal_acc_shuffled_hi": (
        "control: 95th percentile of Sq->Cos over shuffle_draws permutations of phase_out",
        "1",
    ),
    "ideal_acc_own": (
        "Sq->Cos idealized model with W_a, W_b, W_out each at its own dominant frequency and phase",
        "1",
    ),
    "restricted_loss": (
        "Nanda et al. restricted loss: hidden units kept only in key-frequency {pair} directions "
        "and the constant, cross-entropy on the validation pairs",
        "nats",
    ),
    "excluded_loss": (
        "Nanda et al. excluded loss: key-frequency {pair} directions removed from the hidden units, "
        "cross-entropy on the training pairs (labels used)",
        "nats",
    ),
    "val_loss": ("real model cross-entropy on the validation pairs", "nats"),
    "train_loss": ("real model cross-entropy on the training labels used", "nats"),
    "all_acc": ("real model accuracy on all p^2 pairs", "1"),
    "val_acc": ("real model accuracy on the validation pairs", "1"),
    "train_acc": ("real model accuracy on the training labels used", "1"),
    "additivity": (
        "share of the neuron's pre-activation variance over all pairs that f(a) + g(b) explains "
        "(1 for the two-hot MLP)",
        "1",
    ),
    "additivity_median": ("median additivity over neurons", "1"),
    "neuron_freq_2d": (
        "frequency k whose {1, cos, sin}(k a) x {1, cos, sin}(k b) 2D Fourier block holds most of "
        "the neuron's post-activation variance over pairs (Nanda et al.; 0: no variance)",
        "1",
    ),
    "neuron_freq_share": ("share of the neuron's post-activation variance in that block", "1"),
    "clustered_share": ("share of neurons with neuron_freq_share >= 0.85", "1"),
    "neurons_per_frequency": ("neurons with neuron_freq_share >= 0.85 at each frequency", "1"),
    "frequency": ("frequency k of the 2D Fourier blocks", "1"),
    "head": ("attention head index", "1"),
    "attention_a": ("head's mean attention from '=' to token a over all pairs", "1"),
    "attention_b": ("head's mean attention from '=' to token b over all pairs", "1"),
}
for _key, _weight in WEIGHTS.items():
    VARIABLES.update(
        {
            f"freq_{_key}": (f"dominant frequency k* of {_weight} (0: dead or constant row)", "1"),
            f"amp_{_key}": (
                f"amplitude 2|F[k*]|/p of {_weight} at its own dominant frequency",
                "1",
            ),
            f"periodicity_{_key}": (
                f"max|F| / mean|F| over k = 1..p-1 of {_weight} (paper Eq. 1)",
                "1",
            ),
            f"ipr_{_key}": (
                f"inverse participation ratio of {_weight}'s normalized power spectrum over k = 1..(p-1)//2 "
                "(1: one frequency, ~0.67 square wave, ~2/K noise)",
                "1",
            ),
            f"phase_{_key}": (
                f"phase of {_weight} at W_a's dominant frequency, in [-pi, pi)",
                "rad",
            ),
            f"square_dist_{_key}": (
                f"mean nearest-point distance of {_weight} to its ideal square wave",
                "amplitude",
            ),
            f"cosine_dist_{_key}": (
                f"mean nearest-point distance of {_weight} to its ideal cosine",
                "amplitude",
            ),
            f"binarization_{_key}": (
                f"(cosine_dist - square_dist) / (cosine_dist + square_dist) of {_weight}: "
                "1 square, -1 cosine, ~0 noise",
                "1",
            ),
            f"boundary_frac_{_key}": (
                f"share of intermediate entries of {_weight} next to a sign change of the ideal square wave",
                "1",
            ),
        }
    )

# label, short name: what people read
LABELS: dict[str, tuple[str, str]] = {
    "val_acc": ("validation accuracy (real model)", "real"),
    "train_acc": ("train accuracy (labels used)", "train"),
    "all_acc": ("accuracy on all pairs (real model)", "all pairs"),
    "ideal_acc": ("Sq->Cos idealized", "Sq->Cos"),
    "ideal_acc_own": ("Sq->Cos, own frequencies", "Sq->Cos own freq."),
    "ideal_acc_sq_sq": ("Sq->Sq idealized", "Sq->Sq"),
    "ideal_acc_cos_cos": ("Cos->Cos idealized", "Cos->Cos"),
    "ideal_acc_phase_sum": ("control: phi_out := {phi_law}", "phase law forced"),
    "ideal_acc_shuffled": ("control: phi_out shuffled, mean", "shuffled"),
    "ideal_acc_shuffled_hi": ("control: phi_out shuffled, 95th pct", "shuffled 95th pct"),
    "r_all": ("r, all neurons", "r"),
    "r_structured": ("r', structured neurons", "r'"),
    "phase_sum_coherence": ("|mean exp(i(phi_out - ({phi_law})))|, structured", "coherence"),
    "n_structured": ("structured neurons", "structured"),
    "restricted_loss": ("restricted loss (nats)", "restricted loss"),
    "excluded_loss": ("excluded loss (nats)", "excluded loss"),
    "clustered_share": ("neurons in a frequency cluster (share >= 0.85)", "clustered"),
    "additivity_median": ("additivity of the neurons' tables, median", "additivity"),
}


def law_sign(attrs: Mapping) -> int:
    """+1 when a run's phase law is phi_a + phi_b (add, mul), -1 when phi_a - phi_b (sub, div)."""
    return -1 if recorded_operation(attrs) in ("sub", "div") else 1


def _fill(text: str, sign: int) -> str:
    plus = sign > 0
    return (
        text.replace("{law}", "phase_a + phase_b" if plus else "phase_a - phase_b")
        .replace("{phi_law}", "phi_a + phi_b" if plus else "phi_a - phi_b")
        .replace("{pair}", "a + b" if plus else "a - b")
    )


def long_name(name: str, sign: int = 1) -> str:
    """The CF long_name of analysis variable `name` for a run whose law has `sign`."""
    return _fill(VARIABLES.get(name, (name.replace("_", " "), "1"))[0], sign)


def label(name: str, sign: int = 1) -> str:
    """The label people read for `name` (figures, explorer, headline)."""
    return _fill(LABELS[name][0], sign)


def short_name(name: str, sign: int = 1) -> str:
    """A table column's name for `name`."""
    return _fill(LABELS[name][1], sign)


def variable_attrs(name: str, sign: int = 1, boolean: bool = False) -> dict:
    """CF attributes (long_name, units; flag_values/flag_meanings for booleans) of an analysis variable."""
    units = VARIABLES.get(name, ("", "1"))[1]
    attrs: dict[str, object] = {"long_name": long_name(name, sign), "units": units}
    if boolean:
        attrs.update(
            flag_values=np.array([0, 1], np.int8), flag_meanings="false true", dtype="bool"
        )
    return attrs
