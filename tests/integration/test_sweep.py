import json

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli

import mechgrok
from mechgrok.config import RunConfig
from mechgrok.paper import NOISE_LEVELS
from mechgrok.store.reader import open_trajectory
from mechgrok.sweep.grid import ensemble_groups, expand_grid, record_sweep
from mechgrok.sweep.index import resolve_trajectories

GRID = ["--modulus", "13", "--width", "16", "--train-frac", "0.5", "--steps", "40", "--every", "10"]


def test_grid_expansion_and_ensemble_grouping():
    grid = expand_grid(
        dict(modulus=13, width=[8, 16], noise=[0.0, 0.1], seed=[0, 1, 2], betas=(0.9, 0.98))
    )
    assert len(grid) == 12 and all(c.betas == (0.9, 0.98) for c in grid)
    assert [(c.width, c.noise, c.seed) for c in grid[:4]] == [
        (8, 0.0, 0),
        (8, 0.0, 1),
        (8, 0.0, 2),
        (8, 0.1, 0),
    ]
    groups = ensemble_groups(grid)
    assert sorted(len(g) for g in groups) == [6, 6]  # widths differ: two ensembles
    assert all(len({grid[i].width for i in g}) == 1 for g in groups)
    assert [len(g) for g in ensemble_groups(grid, max_size=4)] == [4, 2, 4, 2]
    assert len(NOISE_LEVELS) == 19 and NOISE_LEVELS[0] == 0.0 and NOISE_LEVELS[-1] == 0.3


def test_cli_sweep_records_each_run_like_alone_and_index_feeds_analyze(tmp_path):
    run_cli(
        "record",
        *GRID,
        "--noise",
        "0,0.2",
        "--seed",
        "0,1",
        "--out",
        str(tmp_path / "sw"),
        "--quiet",
        check=True,
    )
    index = json.loads((tmp_path / "sw" / "index.json").read_text())
    assert len(index["runs"]) == 4
    paths = resolve_trajectories([tmp_path / "sw"])
    assert all(p.exists() for p in paths)
    config = RunConfig(modulus=13, width=16, train_frac=0.5, steps=40, every=10, noise=0.2, seed=1)
    alone = mechgrok.record(config, out=tmp_path / "alone.h5")
    together = next(p for p in paths if "noise0.2_seed1" in p.name)
    a, b = open_trajectory(alone), open_trajectory(together)
    assert list(a.step.values) == list(b.step.values)
    np.testing.assert_allclose(a.W_a.values, b.W_a.values, rtol=1e-4, atol=1e-6)
    assert b.attrs["noise"] == 0.2 and b.attrs["seed"] == 1
    proc = run_cli("analyze", str(tmp_path / "sw" / "index.json"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert all(p.with_name(p.stem + ".analysis.h5").exists() for p in paths)


def test_sweep_refuses_existing_files_and_resume_skips_complete_runs(tmp_path):
    run_cli("record", *GRID, "--seed", "0,1", "--out", str(tmp_path / "sw"), "--quiet", check=True)
    files = sorted((tmp_path / "sw").glob("*.h5"))
    before = {f: f.read_bytes() for f in files}
    assert_one_line_error(
        run_cli("record", *GRID, "--seed", "0,1", "--out", str(tmp_path / "sw")),
        "exists",
        "--resume",
    )
    run_cli(
        "record",
        *GRID,
        "--seed",
        "0,1",
        "--out",
        str(tmp_path / "sw"),
        "--resume",
        "--quiet",
        check=True,
    )
    assert {f: f.read_bytes() for f in files} == before


def test_a_failing_ensemble_does_not_stop_the_others(tmp_path):
    good = RunConfig(modulus=13, width=16, train_frac=0.5, steps=20, every=10)
    other_shape = RunConfig(modulus=11, width=8, train_frac=0.5, steps=20, every=10)
    folder = tmp_path / "sw"
    folder.mkdir()
    from mechgrok.recording.runs import default_trajectory_name

    blocker = folder / default_trajectory_name(other_shape)
    blocker.mkdir()  # a directory where that run's file should go: its ensemble fails
    paths, errors = record_sweep([good, other_shape], folder, resume=True)
    assert len(errors) == 1 and blocker.name in errors[0]
    assert open_trajectory(paths[0]).attrs["final_step"] == 20


@pytest.mark.slow
def test_sweep_on_a_local_dask_cluster(tmp_path):
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        grid = [
            RunConfig(modulus=13, width=16, train_frac=0.5, steps=30, every=10, seed=s)
            for s in (0, 1)
        ] + [RunConfig(modulus=11, width=8, train_frac=0.5, steps=30, every=10)]
        paths, errors = record_sweep(grid, tmp_path / "sw", scheduler=cluster.scheduler_address)
        assert errors == []
        for path, config in zip(paths, grid):
            ds = open_trajectory(path)
            assert (
                ds.attrs["final_step"] == 30
                and ds.attrs["seed"] == config.seed
                and ds.sizes["token"] == config.modulus
            )
        # analysis chunks spread over the same cluster give the local result
        remote = mechgrok.analyze(
            paths[0], scheduler=cluster.scheduler_address, chunk_steps=1, save=False
        )
        local = mechgrok.analyze(paths[0], save=False)
        np.testing.assert_allclose(remote.ideal_acc.values, local.ideal_acc.values)
