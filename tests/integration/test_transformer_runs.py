"""`record --model transformer`: what it records, that a killed run resumes to the same
bits as one never stopped, and the options that do not apply refused in one line."""

import signal
import time

import h5py
import numpy as np
import pytest
import torch
import xarray as xr
from conftest import ForkedCli, assert_one_line_error, run_cli, run_forked

import mechgrok
from mechgrok.models.layout import PARAM_NAMES
from mechgrok.models.tables import transformer_curves, transformer_logits, transformer_tables
from mechgrok.models.transformer import forward
from mechgrok.operations import group_view

SMALL = ("--model", "transformer", "--modulus", "13", "--d-model", "16", "--heads", "2",
         "--d-mlp", "24", "--stop-val-acc", "off", "--per-decade", "30")  # fmt: skip


def _record(out, steps, *extra):
    run_cli(
        "record", *SMALL, "--steps", str(steps), "--out", str(out), "--quiet", *extra, check=True
    )


def test_a_recorded_transformer_keeps_its_parameters_and_their_curves(tmp_path):
    out = tmp_path / "t.h5"
    _record(out, 60)
    ds = mechgrok.open_trajectory(out)
    assert ds.attrs["model"] == "transformer" and ds.sizes["neuron"] == 24
    with h5py.File(out, "r") as f:
        last = {name: f["model"][name][-1] for name in PARAM_NAMES}
        assert f["model"]["blocks.0.attn.W_Q"].attrs["long_name"].startswith("parameter")
    # the stored curves are those of the stored parameters; the stored metrics are the model's
    curves = transformer_curves(last)
    for name in ("W_a", "W_b", "W_out", "b_in", "b_out", "additivity"):
        np.testing.assert_array_equal(ds[name].values[-1], curves[name], err_msg=name)
    logits = transformer_logits(last, transformer_tables(last)).reshape(-1, 13)
    torch_logits = forward(
        {k: torch.from_numpy(v) for k, v in last.items()},
        *torch.cartesian_prod(torch.arange(13), torch.arange(13)).T,
    )
    np.testing.assert_allclose(logits, torch_logits.numpy(), atol=1e-5)
    val = np.ones((13, 13), bool)
    val[ds.train_a.values, ds.train_b.values] = False
    labels = (np.arange(13)[:, None] + np.arange(13)[None]) % 13
    accuracy = (logits.reshape(13, 13, 13).argmax(-1) == labels)[val].mean()
    assert accuracy == pytest.approx(float(ds.val_acc[-1]), abs=1e-6)  # stored from float32


@pytest.mark.slow
def test_a_killed_transformer_recording_resumes_to_the_same_bits(tmp_path):
    whole = tmp_path / "whole.h5"
    _record(whole, 400)
    killed = tmp_path / "killed.h5"
    proc = ForkedCli("record", *SMALL, "--steps", "400", "--out", str(killed), "--quiet")
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        try:  # (a file read while it grows can look truncated for a moment)
            with h5py.File(killed, "r", locking=False) as f:
                if int(np.ravel(f.attrs["n_snapshots"])[0]) >= 40:
                    break
        except OSError:
            pass
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _record(killed, 400, "--resume")
    with h5py.File(whole, "r") as a, h5py.File(killed, "r") as b:
        names = ["step", "W_a", "W_out", "val_acc", "additivity", "neuron_freq_2d"]
        names += [f"model/{name}" for name in PARAM_NAMES]
        for name in names:
            np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "transformer", "--width", "64"], "the transformer's MLP neurons are --d-mlp"),
        (["--heads", "8"], "--heads sizes the transformer: add --model transformer"),
        (["--model", "transformer", "--activation", "gelu"], "activation 'gelu' is not available"),
        (["--model", "transformer", "--d-model", "30", "--heads", "4"], "not a multiple of heads"),
    ],
)
def test_options_that_do_not_apply_are_refused_in_one_line(tmp_path, args, message):
    assert_one_line_error(run_cli("record", *args, "--out", str(tmp_path / "x.h5")), message)
    assert not (tmp_path / "x.h5").exists()


def test_a_resume_with_another_model_is_refused(tmp_path):
    out = tmp_path / "t.h5"
    _record(out, 20)
    assert_one_line_error(
        run_cli(
            "record", *SMALL[:-4], "--d-model", "32", "--steps", "40", "--out", str(out), "--resume"
        ),
        "cannot resume with a different config",
    )


THREAD_RUNS = {
    "transformer": ("--model", "transformer", "--modulus", "59", "--d-model", "32", "--d-mlp", "64"),
    "mlp": ("--modulus", "59", "--width", "256"),
}  # fmt: skip


@pytest.mark.parametrize("model", THREAD_RUNS)
def test_a_run_is_the_same_bits_whatever_the_thread_count(tmp_path, model):
    """Training threads are chosen from the free cores; the run must not depend on them (the
    transformer's gathers' backward once accumulated in a thread-dependent order)."""
    args = (
        *THREAD_RUNS[model],
        "--steps",
        "40",
        "--stop-val-acc",
        "off",
        "--every",
        "20",
        "--quiet",
    )
    outs = []
    for i, threads in enumerate((1, 2, 2)):
        outs.append(tmp_path / f"t{i}.h5")
        run_cli("record", *args, "--threads", str(threads), "--out", str(outs[-1]), check=True)
    names = ["W_a", "W_out", "val_loss"]
    if model == "transformer":
        names += ["model/embed.W_E", "model/blocks.0.attn.W_Q"]
    with h5py.File(outs[0], "r") as first:
        for out in outs[1:]:
            with h5py.File(out, "r") as other:
                for name in names:
                    np.testing.assert_array_equal(first[name][:], other[name][:], err_msg=name)


@pytest.mark.slow
def test_a_full_disk_keeps_every_committed_transformer_snapshot_and_resume_matches(tmp_path):
    """The MLP's disk guarantee for the transformer's larger snapshots (its parameter group):
    a file-size limit stops the run with its committed snapshots intact, and a resume ends
    with the same bits as a run that was never stopped."""
    whole = tmp_path / "whole.h5"
    _record(whole, 200)
    out = tmp_path / "t.h5"
    args = (*SMALL, "--steps", "200", "--out", str(out), "--quiet", "--skip-space-check")
    proc = run_forked("record", *args, limit_bytes=650_000)
    assert_one_line_error(proc, "t.h5", "could not be written", "File too large", "--resume")
    with h5py.File(out, "r") as f, h5py.File(whole, "r") as w:
        n = int(np.ravel(f.attrs["n_snapshots"])[0])
        assert 0 < n < w["step"].shape[0]  # stopped part-way, every committed one intact
        assert np.isfinite(f["model"]["embed.W_E"][:n]).all()
    run_cli("record", *args[:-1], "--resume", check=True)
    with h5py.File(whole, "r") as a, h5py.File(out, "r") as b:
        for name in ("step", "W_a", "val_acc", "all_acc", "model/blocks.0.mlp.W_in"):
            np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)


def test_a_transformer_on_mul_reads_its_2d_frequency_in_the_group_order(tmp_path):
    """mul is read over the nonzero residues in discrete-log order: the 2D frequency of the
    stored tables is the one of that order, and the parameters load back as a state dict."""
    out = tmp_path / "mul.h5"
    run_cli(
        "record",
        *SMALL,
        "--operation",
        "mul",
        "--steps",
        "20",
        "--out",
        str(out),
        "--quiet",
        check=True,
    )
    params = xr.open_dataset(out, group="model", engine="h5netcdf")
    last = {name: params[name].isel(step=-1).values for name in params.data_vars}
    expected = transformer_curves(last, group_view("mul", 13).order, "mul")
    ds = mechgrok.open_trajectory(out)
    np.testing.assert_array_equal(ds.neuron_freq_2d.values[-1], expected["neuron_freq_2d"])
    assert float(ds.all_acc[-1]) == expected["all_acc"]
    assert mechgrok.analyze(out).sizes["frequency"] == (12 - 1) // 2
