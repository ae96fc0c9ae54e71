"""Operations beyond addition: labels, stratified splits, discrete logs, and the analysis
reading each operation's law on planted weights with known phases."""

import numpy as np
import pytest
import xarray as xr
from planted import planted_rows

import mechgrok
from mechgrok.config import RunConfig
from mechgrok.operations import group_view, law_labels, operate, primitive_root
from mechgrok.task import make_task


@pytest.mark.parametrize("operation", ["add", "sub", "mul", "div"])
@pytest.mark.parametrize("p", [11, 13])
def test_labels_and_split_of_each_operation(operation, p):
    task = make_task(p, 0.4, 0.25, seed=3, operation=operation)
    nonzero = operation in ("mul", "div")
    operands = np.arange(1, p) if nonzero else np.arange(p)
    pairs = {(a, b) for a in operands for b in operands}
    train = set(zip(task.train_a.tolist(), task.train_b.tolist()))
    val = set(zip(task.val_a.tolist(), task.val_b.tolist()))
    assert train | val == pairs and not train & val  # every pair once
    expected = {
        "add": lambda a, b: (a + b) % p,
        "sub": lambda a, b: (a - b) % p,
        "mul": lambda a, b: a * b % p,
        "div": lambda a, b: a * pow(int(b), p - 2, p) % p,
    }[operation]
    assert all(
        expected(a, b) == c for a, b, c in zip(task.train_a, task.train_b, task.train_label_true)
    )
    assert all(expected(a, b) == c for a, b, c in zip(task.val_a, task.val_b, task.val_label))
    # stratified: every answer holds the same number of training pairs
    counts = np.bincount(task.train_label_true, minlength=p)
    assert set(counts[operands]) == {round(0.4 * operands.size)} and (counts[0] == 0) == nonzero
    # noise: the noised labels are wrong answers among the operands
    noised = task.train_noised
    assert noised.sum() == round(0.25 * task.train_a.size)
    assert (task.train_label[noised] != task.train_label_true[noised]).all() and np.isin(
        task.train_label, operands
    ).all()


@pytest.mark.parametrize(
    "p, generator", [(5, 2), (7, 3), (11, 2), (13, 2), (23, 5), (31, 3), (97, 5)]
)
def test_discrete_log_order_visits_every_nonzero_residue(p, generator):
    assert primitive_root(p) == generator
    view = group_view("mul", p)
    assert view.n == p - 1 and sorted(view.order) == list(range(1, p))
    # in that order multiplication is addition of positions, division subtraction
    i, j = np.divmod(np.arange(view.n**2), view.n)
    a, b = view.order[i], view.order[j]
    assert (view.order[law_labels(view.n, 1)] == operate("mul", a, b, p)).all()
    assert (view.order[law_labels(view.n, -1)] == operate("div", a, b, p)).all()


def _planted_run(operation, p=23, freqs=(1, 3, 5, 7), grid=5):
    """Cosine rows (exact phases) in the group's order with phi_out obeying the operation's
    law, neurons spread evenly over (phi_a, phi_b); token 0 of mul/div is noise."""
    view = group_view(operation, p)
    axis = np.linspace(-np.pi, np.pi, grid, endpoint=False) + 0.1
    phase_a, phase_b = (
        np.tile(g.ravel(), len(freqs)) for g in np.meshgrid(axis, axis + 0.3, indexing="ij")
    )
    freq = np.repeat(freqs, grid * grid)
    phase_out = np.angle(np.exp(1j * (phase_a + view.sign * phase_b)))
    rows = {
        "W_a": planted_rows(freq, phase_a, view.n, "cos", 0.5),
        "W_b": planted_rows(freq, phase_b, view.n, "cos", 0.5),
        "W_out": planted_rows(freq, phase_out, view.n, "cos", 0.7),
    }
    weights = {}
    for name, values in rows.items():
        full = np.random.default_rng(1).normal(0, 0.3, (freq.size, p))
        full[:, view.order] = values
        weights[name] = (("step", "neuron", "token"), full[None])
    ds = xr.Dataset(
        weights,
        coords={"step": [0], "neuron": np.arange(freq.size), "token": np.arange(p)},
        attrs={"operation": operation},
    )
    return ds, dict(freq=freq, phase_a=phase_a, phase_b=phase_b, phase_out=phase_out)


@pytest.mark.parametrize("operation", ["sub", "mul", "div"])
def test_planted_runs_are_read_in_their_group_with_their_law(operation):
    ds, truth = _planted_run(operation)
    result = mechgrok.analyze(ds).isel(step=0)
    assert result.attrs["group_size"] == (22 if operation in ("mul", "div") else 23)
    assert np.array_equal(result.freq_a.values, truth["freq"]) and result.structured.all()
    for key in ("a", "b", "out"):
        error = np.angle(np.exp(1j * (result[f"phase_{key}"].values - truth[f"phase_{key}"])))
        assert np.abs(error).max() < 1e-6
    assert result.r_structured > 0.99 and result.phase_sum_coherence > 0.99
    assert (
        result.ideal_acc > 0.99
        and result.ideal_acc_phase_sum > 0.99
        and result.ideal_acc_shuffled < 0.2
    )
    # read as plain addition, the same weights show no law
    plain = mechgrok.analyze(ds.assign_attrs(operation="add")).isel(step=0)
    assert plain.ideal_acc < 0.5


def test_accessor_shows_mul_rows_in_discrete_log_order():
    ds, truth = _planted_run("mul")
    view = ds.mechgrok.neuron(0, step=0)
    assert list(view.token.values) == list(group_view("mul", 23).order)
    np.testing.assert_allclose(
        view.W_a.values, planted_rows(truth["freq"][:1], truth["phase_a"][:1], 22, "cos", 0.5)[0]
    )


def test_mul_and_div_need_a_prime_modulus_and_names_must_be_known():
    with pytest.raises(ValueError, match="prime modulus"):
        RunConfig(modulus=21, operation="mul")
    with pytest.raises(ValueError, match="unknown operation"):
        RunConfig(operation="pow")
    with pytest.raises(ValueError, match="unknown activation"):
        RunConfig(activation="tanh")
    RunConfig(modulus=21, operation="sub")  # add and sub work at any modulus
