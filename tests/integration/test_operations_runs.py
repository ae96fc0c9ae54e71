"""Recording and analyzing each operation and activation end to end, and their bad inputs."""

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli

import mechgrok

TINY = [
    "--modulus",
    "11",
    "--width",
    "16",
    "--train-frac",
    "0.6",
    "--lr",
    "1e-2",
    "--eval-every",
    "10",
    "--per-decade",
    "10",
    "--steps",
    "60",
    "--stop-val-acc",
    "off",
    "-q",
]


@pytest.mark.parametrize(
    "operation, activation",
    [("add", "relu"), ("sub", "gelu"), ("mul", "quadratic"), ("div", "silu")],
)
def test_each_operation_records_and_analyzes(tmp_path, operation, activation):
    out = tmp_path / "run.h5"
    run_cli(
        "record",
        *TINY,
        "--operation",
        operation,
        "--activation",
        activation,
        "--out",
        str(out),
        check=True,
    )
    trajectory = mechgrok.open_trajectory(out)
    assert (trajectory.attrs["operation"], trajectory.attrs["activation"]) == (
        operation,
        activation,
    )
    assert (
        trajectory.attrs["final_step"] == 60 and trajectory.attrs["stop_val_acc"] == "off"
    )  # exactly --steps
    result = mechgrok.analyze(out)
    assert result.attrs["operation"] == operation
    assert result.attrs["group_size"] == (10 if operation in ("mul", "div") else 11)
    assert result.attrs["phase_law"].endswith(
        "- phi_b" if operation in ("sub", "div") else "+ phi_b"
    )
    # the analysis's own scoring of the real model (labels of the operation's law, in its group's order, with the
    # run's activation) agrees with the trainer's recorded accuracies, to within a near-tie pair or two
    scored = mechgrok.analyze(trajectory.load().drop_vars(["val_acc", "train_acc_true"]))
    n_pairs = result.attrs["group_size"] ** 2
    np.testing.assert_allclose(scored.all_acc.values, result.all_acc.values, atol=2.5 / n_pairs)
    assert (
        float(result.all_acc[-1]) > 0.2
    )  # trained: over twice chance (1/11), so the comparison means something
    assert (
        mechgrok.open_trajectory(out).mechgrok.neuron(0, step=60).sizes["token"]
        == result.attrs["group_size"]
    )


def test_an_operation_sweep_records_one_file_per_operation(tmp_path):
    run_cli("record", *TINY, "--operation", "add,sub", "--out", str(tmp_path / "ops"), check=True)
    names = sorted(p.name for p in (tmp_path / "ops").glob("*.h5"))
    assert len(names) == 2 and names[1].startswith("sub_relu_")


def test_bad_operations_and_activations_are_one_line_errors(tmp_path):
    assert_one_line_error(
        run_cli("record", *TINY, "--operation", "pow", "--out", str(tmp_path / "a.h5")),
        "'pow'",
        "add",
    )
    assert_one_line_error(
        run_cli(
            "record",
            *TINY,
            "--operation",
            "mul",
            "--modulus",
            "21",
            "--out",
            str(tmp_path / "b.h5"),
        ),
        "prime modulus",
    )
    assert_one_line_error(
        run_cli("record", *TINY, "--activation", "tanh", "--out", str(tmp_path / "c.h5")), "'tanh'"
    )
    assert_one_line_error(
        run_cli("record", *TINY[:-3], "--stop-val-acc", "of", "--out", str(tmp_path / "d.h5")),
        "'of'",
    )
    assert not list(tmp_path.iterdir())


def test_analyze_says_how_mul_is_read(tmp_path):
    out = tmp_path / "mul.h5"
    run_cli("record", *TINY, "--operation", "mul", "--out", str(out), check=True)
    proc = run_cli("analyze", str(out), check=True)
    text = " ".join((proc.stdout + proc.stderr).split())
    assert "10 nonzero residues in discrete-log order" in text
    assert "operation mul" in text
