import dataclasses

import h5py
import numpy as np
import pytest
import xarray as xr
from conftest import assert_one_line_error, run_cli

import mechgrok
from mechgrok.config import RunConfig
from mechgrok.errors import OutputExistsError, ResumeError, TrajectoryError
from mechgrok.store.netcdf_reader import open_netcdf
from mechgrok.store.reader import open_trajectory


@pytest.fixture
def recorded(tmp_path, tiny_config):
    return mechgrok.record(tiny_config, out=tmp_path / "run.h5")


def test_file_opens_in_xarray_with_named_dims(recorded, tiny_config):
    ds = xr.open_dataset(recorded, engine="h5netcdf")
    assert ds.W_a.dims == ds.W_b.dims == ds.W_out.dims == ("step", "neuron", "token")
    assert ds.W_a.dtype == np.float32
    assert ds.b_in.dims == ("step", "neuron") and ds.b_out.dims == ("step", "token")
    assert ds.sizes["neuron"] == 16 and ds.sizes["token"] == 11
    assert list(ds.step.values) == list(range(0, 61, 5))
    for name in ("train_loss", "train_acc", "train_acc_true", "val_loss", "val_acc"):
        assert ds[name].dims == ("step",) and np.isfinite(ds[name].values).all()
    for field in dataclasses.fields(RunConfig):
        assert field.name in ds.attrs
    assert ds.attrs["modulus"] == 11 and ds.attrs["final_step"] == 60
    assert {
        "format_version",
        "mechgrok_version",
        "torch_version",
        "created",
        "saturation_step",
    } <= set(ds.attrs)
    assert ds.train_noised.sum() == 0 and ds.sizes["train_pair"] == 11 * round(0.5 * 11)
    with h5py.File(recorded, "r") as f:  # plain h5py sees the same arrays
        np.testing.assert_array_equal(f["W_a"][3], ds.W_a.isel(step=3).values)


def test_weights_on_file_are_the_models_rows(recorded, tiny_config):
    from mechgrok.recording.train import train_ensemble

    last = list(train_ensemble([tiny_config]))[-1]
    ds = open_trajectory(recorded)
    np.testing.assert_array_equal(
        ds.W_a.isel(step=-1).values, last.weights["W_a"].T
    )  # (neuron, token)
    np.testing.assert_array_equal(ds.W_out.isel(step=-1).values, last.weights["W_out"])


def test_open_trajectory_is_lazy(recorded):
    ds = open_trajectory(recorded)
    assert not ds.W_a.variable._in_memory
    chunked = open_trajectory(
        recorded, chunks={}
    )  # dask arrays on the stored chunks: one snapshot each
    assert chunked.W_a.chunks[0][0] == 1


def _assert_same_as_h5netcdf(path, **options):
    """open_netcdf gives what xarray's h5netcdf engine gives: values, dims, attributes (and
    their types), variable order, dtypes, stored layout, and the same reads by any indexing."""
    ours, theirs = open_netcdf(path, **options), xr.open_dataset(path, engine="h5netcdf", **options)
    xr.testing.assert_identical(ours, theirs)
    assert list(ours.data_vars) == list(theirs.data_vars) and list(ours.coords) == list(
        theirs.coords
    )
    assert {k: type(v) for k, v in ours.attrs.items()} == {
        k: type(v) for k, v in theirs.attrs.items()
    }
    for name, variable in theirs.variables.items():
        assert ours[name].dtype == variable.dtype and ours[name].chunks == variable.chunks, name
        for key in (
            "dtype",
            "chunksizes",
            "zlib",
            "complevel",
            "shuffle",
            "source",
            "_FillValue",
            "units",
        ):
            mine, xarrays = ours[name].encoding.get(key), variable.encoding.get(key)
            assert mine == xarrays or (mine != mine and xarrays != xarrays), (
                name,
                key,
            )  # (NaN fill values)
        if variable.ndim:
            dim = variable.dims[0]
            picks = {dim: [0, -1, 1]}, {dim: slice(None, None, 2)}, {dim: -1}
            for pick in picks:
                np.testing.assert_array_equal(
                    ours[name].isel(pick).values, variable.isel(pick).values
                )
    ours.close(), theirs.close()


def test_our_netcdf_reader_matches_xarrays_h5netcdf_engine(recorded, tmp_path):
    _assert_same_as_h5netcdf(recorded)
    _assert_same_as_h5netcdf(recorded, chunks={})  # dask arrays on the stored chunks
    _assert_same_as_h5netcdf(mechgrok.analyze(recorded).encoding["source"])
    torn = tmp_path / "torn.h5"
    torn.write_bytes(recorded.read_bytes())
    with h5py.File(
        torn, "r+"
    ) as f:  # killed between two appends: W_a one entry longer than the rest
        f["W_a"].resize(f["W_a"].shape[0] + 1, axis=0)
    _assert_same_as_h5netcdf(torn)
    padded, whole = open_netcdf(torn), open_netcdf(torn).load()
    assert padded.sizes["step"] == 14 and np.isnan(padded.val_acc.values[-1])
    for pick in (
        dict(step=[0, -1], token=3),
        dict(step=-1, neuron=[2, 0]),
        dict(step=slice(1, None, 3), neuron=1),
    ):
        np.testing.assert_array_equal(
            padded.W_b.isel(pick).values, whole.W_b.isel(pick).values
        )  # W_b padded, W_a not
    other = (
        tmp_path / "other.nc"
    )  # what else netCDF holds: text, int fill values, times, scalars, attribute lists
    xr.Dataset(
        {
            "label": ("run", np.array(["clean", "noisy"], dtype=object)),
            "count": ("run", np.array([3, -1]), {"_FillValue": -1}),
            "when": ("run", np.array(["2026-01-01", "2026-02-01"], dtype="datetime64[ns]")),
            "scale": ((), 2.5),
            "curve": (("step", "run"), np.arange(6.0).reshape(3, 2)),
        },
        coords={"run": [0, 1]},
        attrs={"names": ["a", "b"], "one": [7]},
    ).to_netcdf(other, engine="h5netcdf", unlimited_dims=["step"])
    _assert_same_as_h5netcdf(other)


def test_no_bias_run_has_no_bias_variables(tmp_path, tiny_config):
    path = mechgrok.record(dataclasses.replace(tiny_config, bias=False), out=tmp_path / "nb.h5")
    ds = open_trajectory(path)
    assert "b_in" not in ds and "b_out" not in ds and ds.attrs["bias"] == 0


def test_existing_output_is_refused_and_untouched(recorded, tiny_config):
    before = recorded.read_bytes()
    with pytest.raises(OutputExistsError, match="exists"):
        mechgrok.record(tiny_config, out=recorded)
    assert recorded.read_bytes() == before
    mechgrok.record(dataclasses.replace(tiny_config, steps=20), out=recorded, force=True)
    assert open_trajectory(recorded).step.values[-1] == 20


def test_a_half_written_snapshot_is_dropped_and_resume_matches(tmp_path, tiny_config):
    full = mechgrok.record(tiny_config, out=tmp_path / "full.h5")
    partial = tmp_path / "partial.h5"
    mechgrok.record(dataclasses.replace(tiny_config, steps=30), out=partial)
    with h5py.File(
        partial, "r+"
    ) as f:  # as if killed after step 30 and mid-way through the next write
        f.attrs["final_step"], f.attrs["stop_reason"] = -1, ""
        for name in ("W_a", "step", "val_acc"):
            f[name].resize(f[name].shape[0] + 1, axis=0)
    assert open_trajectory(partial).sizes["step"] == 7
    mechgrok.record(tiny_config, out=partial, resume=True)
    a, b = open_trajectory(full), open_trajectory(partial)
    assert list(a.step.values) == list(b.step.values)
    for name in ("W_a", "W_b", "W_out", "b_in", "b_out", "val_acc"):
        np.testing.assert_array_equal(a[name].values, b[name].values)


def test_resume_refuses_a_different_config(recorded, tiny_config):
    with pytest.raises(ResumeError, match="different config.*noise"):
        mechgrok.record(dataclasses.replace(tiny_config, noise=0.1), out=recorded, resume=True)


def test_resume_of_a_complete_run_changes_nothing(recorded, tiny_config):
    before = recorded.read_bytes()
    mechgrok.record(tiny_config, out=recorded, resume=True)
    assert recorded.read_bytes() == before


def _bad_files(tmp_path, recorded):
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(recorded.read_bytes()[:5000])
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.arange(3)
    wrong_shape = tmp_path / "wrong_shape.h5"
    wrong_shape.write_bytes(recorded.read_bytes())
    with h5py.File(wrong_shape, "r+") as f:
        f.attrs["modulus"] = 13
    return {
        "missing.h5": "no such file",
        "text.h5": "not an HDF5 file",
        "truncated.h5": "truncated",
        "other.h5": "missing W_a",
        "wrong_shape.h5": "expected",
    }, tmp_path


def test_bad_files_raise_one_line_errors_naming_the_file(tmp_path, recorded):
    cases, folder = _bad_files(tmp_path, recorded)
    for name, message in cases.items():
        with pytest.raises((TrajectoryError, FileNotFoundError)) as info:
            open_trajectory(folder / name)
        assert (
            name in str(info.value) and message in str(info.value) and "\n" not in str(info.value)
        )


def test_resume_from_an_earlier_checkpoint_regenerates_without_rewriting(
    tmp_path, tiny_config, monkeypatch
):
    import mechgrok.recording.runs

    monkeypatch.setattr(
        mechgrok.recording.runs, "CHECKPOINT_SECONDS", 1e9
    )  # checkpoints only at step 0 and the final step
    full = mechgrok.record(tiny_config, out=tmp_path / "full.h5")
    cut = tmp_path / "cut.h5"
    cut.write_bytes(full.read_bytes())
    with h5py.File(
        cut, "r+"
    ) as f:  # as if killed after 8 snapshots, long after the last checkpoint
        f.attrs["n_snapshots"], f.attrs["final_step"], f.attrs["stop_reason"] = 8, -1, ""
        f["resume"]["slot_step"][:] = np.where(f["resume"]["slot_step"][:] == 0, 0, -1)
        f["W_a"][7] = 123.0  # a marker: snapshots on file are kept, not rewritten
    mechgrok.record(tiny_config, out=cut, resume=True)
    a, b = open_trajectory(full), open_trajectory(cut)
    assert list(a.step.values) == list(b.step.values)
    assert (b.W_a.isel(step=7).values == 123.0).all()
    np.testing.assert_array_equal(
        a.W_a.isel(step=slice(8, None)).values, b.W_a.isel(step=slice(8, None)).values
    )
    np.testing.assert_array_equal(a.val_acc.values, b.val_acc.values)


def _as_if_killed(path):
    with h5py.File(path, "r+") as f:
        f.attrs["final_step"], f.attrs["stop_reason"] = -1, ""


def test_resume_with_options_that_end_before_the_file_is_refused_and_untouched(
    tmp_path, tiny_config
):
    config = dataclasses.replace(tiny_config, steps=40, eval_every=5)
    path = mechgrok.record(config, out=tmp_path / "r.h5")
    _as_if_killed(path)
    before = path.read_bytes()
    with pytest.raises(ResumeError, match="steps 20 is below the last step on file"):
        mechgrok.record(dataclasses.replace(config, steps=20), out=path, resume=True)
    reached = float(open_trajectory(path).val_acc.sel(step=20))
    with pytest.raises(ResumeError, match="would have stopped the run at step"):
        mechgrok.record(dataclasses.replace(config, stop_val_acc=reached), out=path, resume=True)
    with pytest.raises(
        ResumeError, match=r"patience 1 would have stopped the run at step \d+, before"
    ):
        mechgrok.record(dataclasses.replace(config, patience=1), out=path, resume=True)
    assert path.read_bytes() == before


def test_resume_whose_rule_ends_at_the_last_step_on_file_marks_it_final_truthfully(
    tmp_path, tiny_config
):
    path = mechgrok.record(dataclasses.replace(tiny_config, steps=40), out=tmp_path / "r.h5")
    _as_if_killed(path)
    mechgrok.record(dataclasses.replace(tiny_config, steps=40), out=path, resume=True)
    ds = open_trajectory(path)
    assert (
        ds.attrs["final_step"] == 40 == int(ds.step[-1])
        and ds.attrs["stop_reason"] == "step cap 40 reached"
    )


def test_an_analysis_streamed_to_file_in_uneven_chunks_equals_the_one_in_memory(
    tmp_path, tiny_config
):
    # 71 snapshots: more than one storage chunk (64 steps), met by analysis chunks of 5
    path = mechgrok.record(
        dataclasses.replace(tiny_config, steps=70, every=1), out=tmp_path / "t.h5"
    )
    streamed = mechgrok.analyze(path, chunk_steps=5)
    assert streamed.sizes["step"] == 71
    in_memory = mechgrok.analyze(open_trajectory(path), chunk_steps=7)
    for name in in_memory.data_vars:  # floats are stored as float32
        if in_memory[name].dtype.kind == "f":
            np.testing.assert_allclose(
                streamed[name].values,
                in_memory[name].values,
                rtol=1e-6,
                equal_nan=True,
                err_msg=name,
            )
        else:
            np.testing.assert_array_equal(
                streamed[name].values, in_memory[name].values, err_msg=name
            )


def _three_snapshots(path):
    rng = np.random.default_rng(0)
    with mechgrok.Recorder(path, modulus=11) as rec:
        for step in (0, 10, 20):
            rec.snapshot(step, {n: rng.normal(size=(8, 11)) for n in ("W_a", "W_b", "W_out")})
    return path


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: f["step"].__setitem__(slice(0, 3), [0, 20, 10]), "steps do not increase"),
        (lambda f: f["step"].__setitem__(slice(0, 3), [0, 10, 10]), "steps do not increase"),
        (lambda f: f.attrs.__setitem__("saturation_step", 15), "not one of its recorded steps"),
    ],
)
def test_steps_out_of_order_or_a_stray_saturation_step_are_refused(tmp_path, damage, message):
    path = _three_snapshots(tmp_path / "t.h5")
    with h5py.File(path, "r+") as f:
        damage(f)
    with pytest.raises(TrajectoryError, match=message):
        open_trajectory(path)
    for command in (
        ["analyze", str(path)],
        ["report", str(path), "--html", "--out", str(tmp_path / "r.html")],
    ):
        assert_one_line_error(run_cli(*command), message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.h5"]


def test_a_dataset_with_unsorted_steps_is_refused(tmp_path):
    ds = open_trajectory(_three_snapshots(tmp_path / "t.h5")).load()
    with pytest.raises(TrajectoryError, match="steps do not increase"):
        mechgrok.analyze(ds.isel(step=[0, 2, 1]))


def test_a_refused_resume_leaves_the_file_byte_for_byte(tmp_path, tiny_config):
    # n_snapshots rolled back and no checkpoint left among the committed snapshots: the resume
    # is refused, and it once truncated the datasets to n_snapshots before refusing
    path = mechgrok.record(tiny_config, out=tmp_path / "r.h5")
    _as_if_killed(path)
    with h5py.File(path, "r+") as f:
        f.attrs["n_snapshots"] = 2
        f.attrs["saturation_step"] = -1
        f["resume"]["slot_step"][:] = [-1, -1]
    before = path.read_bytes()
    with pytest.raises(TrajectoryError, match="no optimizer checkpoint"):
        mechgrok.record(tiny_config, out=path, resume=True)
    assert path.read_bytes() == before


def test_a_fifo_or_a_malformed_index_gets_one_line_not_a_hang_or_traceback(tmp_path):
    import json
    import os

    fifo = tmp_path / "pipe.h5"
    os.mkfifo(fifo)
    for command in (["analyze", str(fifo)], ["import", str(fifo), "--out", str(tmp_path / "x.h5")]):
        assert_one_line_error(run_cli(*command), "not a regular file")
    for runs in ([{"path": 3}], [{"path": ["a"]}]):
        (tmp_path / "sweep").mkdir(exist_ok=True)
        (tmp_path / "sweep" / "index.json").write_text(
            json.dumps({"format": "mechgrok-sweep", "runs": runs})
        )
        assert_one_line_error(
            run_cli("analyze", str(tmp_path / "sweep")), "not a mechgrok sweep index"
        )


def test_a_threshold_reached_at_a_check_between_snapshots_is_refused(tmp_path, tiny_config):
    # checks every 5 steps, snapshots every 20: the best check may fall between snapshots,
    # where only the stopping memory saw it (a resume once stopped later, with a false reason)
    config = dataclasses.replace(tiny_config, steps=60, every=20, eval_every=5, stop_val_acc=None)
    path = mechgrok.record(config, out=tmp_path / "r.h5")
    _as_if_killed(path)
    from mechgrok.store.reader import recorded_progress

    progress = recorded_progress(path)
    assert progress.best_val_step % 20 != 0 or progress.best_val_acc > progress.val_acc.max()
    before = path.read_bytes()
    with pytest.raises(ResumeError, match="would have stopped the run at step"):
        mechgrok.record(
            dataclasses.replace(config, stop_val_acc=progress.best_val_acc), out=path, resume=True
        )
    assert path.read_bytes() == before


def test_an_interrupted_run_is_said_to_be_so_and_can_be_closed_honestly(tmp_path, tiny_config):
    path = mechgrok.record(tiny_config, out=tmp_path / "r.h5")
    _as_if_killed(path)
    from mechgrok.store.reader import run_state

    assert run_state(path) == "interrupted"
    proc = run_cli("analyze", str(path))
    assert "was interrupted before its end" in " ".join(proc.stderr.split())
    assert "still recording" not in proc.stderr
    last = int(open_trajectory(path).step[-1])
    args = [
        f"--{k.replace('_', '-')}={v}"
        for k, v in dataclasses.asdict(tiny_config).items()
        if k in ("modulus", "width", "train_frac", "steps", "every")
    ]
    proc = run_cli("record", *args, "--out", str(path), "--resume", "--finish")
    assert proc.returncode == 0 and f"closed {path} at step {last}" in proc.stderr, proc.stderr
    with open_trajectory(path) as ds:
        assert (
            ds.attrs["final_step"] == last
            and ds.attrs["stop_reason"] == f"closed by the user at step {last}"
        )
    assert run_state(path) == "finished"
    again = run_cli("record", *args, "--out", str(path), "--resume", "--finish")
    assert_one_line_error(again, "already finished")
    assert_one_line_error(
        run_cli("record", *args, "--out", str(path), "--finish"), "give it with --resume"
    )


def test_analyses_of_mul_runs_are_reused(tmp_path):
    # the cache check resolved its thresholds for p, the analysis for p - 1: never current
    path = mechgrok.record(
        modulus=11, width=16, steps=40, every=10, operation="mul", out=tmp_path / "m.h5"
    )
    mechgrok.analyze(path)
    analysis = tmp_path / "m.analysis.h5"
    stamp = analysis.stat().st_mtime_ns
    mechgrok.analyze(path)
    assert analysis.stat().st_mtime_ns == stamp
