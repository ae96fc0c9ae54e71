import time

import h5py
import numpy as np
import pytest
from conftest import ForkedCli, assert_one_line_error, run_cli

from mechgrok.store.reader import attr_int, open_trajectory

# long enough (a few seconds) that the kill lands mid-recording
KILLABLE = [
    "--modulus",
    "23",
    "--width",
    "64",
    "--train-frac",
    "0.5",
    "--steps",
    "4000",
    "--every",
    "20",
    "--stop-val-acc",
    "1.0",
]


def _snapshots_on_file(path) -> int:
    try:
        with h5py.File(path, "r", locking=False) as f:
            return attr_int(f.attrs["n_snapshots"])
    except Exception:  # noqa: BLE001 - absent, or caught mid-write: poll again
        return 0


@pytest.mark.slow
def test_sigkill_leaves_a_readable_file_and_resume_matches_uninterrupted(tmp_path):
    killed, whole = tmp_path / "killed.h5", tmp_path / "whole.h5"
    proc = ForkedCli("record", *KILLABLE, "--out", str(killed), "--quiet")
    deadline = time.time() + 60
    while _snapshots_on_file(killed) < 10 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "recording ended before it could be killed"
    proc.kill()
    proc.wait()

    ds = open_trajectory(killed)  # opens, with every completed snapshot
    n_kept = ds.sizes["step"]
    assert n_kept >= 10 and ds.attrs["final_step"] == -1
    assert list(ds.step.values) == list(range(0, 20 * n_kept, 20))
    assert np.isfinite(ds.W_a.values).all()
    ds.close()  # HDF5 shares one handle per file within a process: close before another process writes

    run_cli("record", *KILLABLE, "--out", str(killed), "--resume", "--quiet", check=True)
    run_cli("record", *KILLABLE, "--out", str(whole), "--quiet", check=True)
    a, b = open_trajectory(killed), open_trajectory(whole)
    assert a.attrs["final_step"] == b.attrs["final_step"] == 4000
    assert list(a.step.values) == list(b.step.values)
    for name in ("W_a", "W_b", "W_out", "b_in", "b_out", "train_loss", "val_acc"):
        np.testing.assert_array_equal(a[name].values, b[name].values)


def test_cli_records_and_summarises(tmp_path):
    proc = run_cli(
        "record",
        "--modulus",
        "11",
        "--width",
        "8",
        "--steps",
        "30",
        "--train-frac",
        "0.5",
        cwd=tmp_path,
        check=True,
    )
    path = tmp_path / "trajectories" / "p11_w8_tf0.5_noise0_seed0.h5"
    assert path.exists()
    assert "wrote" in proc.stderr and "final step 30" in proc.stderr
    # the same command again refuses and leaves the file alone
    before = path.read_bytes()
    again = run_cli(
        "record",
        "--modulus",
        "11",
        "--width",
        "8",
        "--steps",
        "30",
        "--train-frac",
        "0.5",
        cwd=tmp_path,
    )
    assert_one_line_error(again, "exists", "--resume")
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--modulus", "2"], "--modulus"),
        (["--width", "0"], "--width"),
        (["--train-frac", "1.5"], "--train-frac"),
        (["--train-frac", "0"], "--train-frac"),
        (["--noise", "1"], "--noise"),
        (["--every", "0"], "--every"),
        (["--steps", "-1"], "--steps"),
        (["--device", "quantum"], "device"),
        (["--betas", "0.9"], "--betas"),
        (["--modulus", "11", "--train-frac", "0.01"], "train_frac"),
        (["--resume", "--force"], "exclude"),
        (["--every", "5", "--per-decade", "50"], "--every and --per-decade exclude"),
        (["--patience", "5", "--stop-val-acc", "off"], "--patience has no effect"),
        (["--modulus", "5", "--operation", "mul"], "leaves 4 nonzero residues"),
    ],
)
def test_impossible_parameters_give_one_line_errors(tmp_path, args, fragment):
    proc = run_cli(
        "record",
        *args,
        "--steps" if "--steps" not in args else "--quiet",
        *(["1"] if "--steps" not in args else []),
        cwd=tmp_path,
    )
    assert_one_line_error(proc, fragment)
    assert not (tmp_path / "trajectories").exists() or not any(
        (tmp_path / "trajectories").iterdir()
    )


def test_the_largest_seed_is_accepted_and_long_names_fit(tmp_path):
    # the seed's bound was compared as a float (2^63 - 1 rounds up) and refused itself; a
    # legal 240-character name was refused because its hidden partial name passed 255
    name = "a" * 237 + ".h5"
    args = ["--modulus", "11", "--width", "8", "--steps", "5", "--quiet"]
    run_cli("record", *args, "--seed", str(2**63 - 1), "--out", str(tmp_path / name), check=True)
    assert [p.name for p in tmp_path.iterdir()] == [name]
