"""`mechgrok import`: small real runs saved in each container, imported exactly."""

import hashlib
import json
import os
import pickle
import signal
import time

import h5py
import numpy as np
import pytest
import safetensors.torch  # a dependency: a skip would hide a broken install
import torch
from conftest import ForkedCli, assert_one_line_error, run_cli

import mechgrok
from mechgrok.store.reader import open_trajectory

P, H, STEPS = 13, 16, (0, 20, 40, 60)


def _train_states():
    """A two-hot nn.Linear MLP trained on (a + b) mod P; its state_dict at each of STEPS."""
    torch.manual_seed(0)
    a, b = torch.cartesian_prod(torch.arange(P), torch.arange(P)).T
    x = torch.cat([torch.nn.functional.one_hot(a, P), torch.nn.functional.one_hot(b, P)], 1).float()
    model = torch.nn.Sequential(torch.nn.Linear(2 * P, H), torch.nn.ReLU(), torch.nn.Linear(H, P))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1.0)
    states, losses = {}, []
    for step in range(STEPS[-1] + 1):
        loss = torch.nn.functional.cross_entropy(model(x), (a + b) % P)
        losses.append(loss.item())
        if step in STEPS:
            states[step] = {k: v.clone() for k, v in model.state_dict().items()}
        opt.zero_grad()
        loss.backward()
        opt.step()
    return states, losses


@pytest.fixture(scope="session")  # made once per worker, kept while other modules run
def trained():
    return _train_states()


def _assert_exact(path, states):
    with open_trajectory(path) as ds:
        assert list(ds.step.values) == list(STEPS) and ds.attrs["final_step"] == STEPS[-1]
        for i, step in enumerate(STEPS):
            first, second = states[step]["0.weight"].numpy(), states[step]["2.weight"].numpy()
            np.testing.assert_array_equal(ds.W_a.isel(step=i).values, first[:, :P])
            np.testing.assert_array_equal(ds.W_b.isel(step=i).values, first[:, P:])
            np.testing.assert_array_equal(ds.W_out.isel(step=i).values, second.T)
            np.testing.assert_array_equal(
                ds.b_out.isel(step=i).values, states[step]["2.bias"].numpy()
            )
        return ds.load()


def test_a_folder_of_per_step_files_with_metrics(tmp_path, trained):
    states, losses = trained
    folder = tmp_path / "run"
    folder.mkdir()
    for step in STEPS:  # Y-Agent style: {epoch}.pth holding {'model', 'epoch', metrics}
        torch.save(
            {"model": states[step], "epoch": step, "train_loss": losses[step], "test_acc": 0.5},
            folder / f"{step}.pth",
        )
    torch.save({"train": torch.arange(5)}, folder / "train_data.pth")  # not a checkpoint: skipped
    run_cli("import", str(folder), "--out", str(tmp_path / "t.h5"), "--quiet", check=True)
    ds = _assert_exact(tmp_path / "t.h5", states)
    np.testing.assert_allclose(ds.train_loss.values, [losses[s] for s in STEPS])
    assert (ds.val_acc.values == 0.5).all() and np.isnan(ds.val_loss.values).all()
    result = mechgrok.analyze(tmp_path / "t.h5")
    assert result.sizes["step"] == len(STEPS)


@pytest.mark.parametrize("layout", ["list", "dict", "legacy"])
def test_single_files_holding_every_checkpoint(tmp_path, trained, layout):
    states, losses = trained
    source = tmp_path / "run.pt"
    train_indices = torch.tensor([0, 5, P + 3, P * P - 1])  # pairs a * p + b
    if layout == "list":  # TransformerLens demo style
        torch.save(
            {
                "checkpoints": [states[s] for s in STEPS],
                "checkpoint_epochs": list(STEPS),
                "train_losses": losses,
                "test_losses": losses,
                "train_indices": train_indices,
            },
            source,
        )
    else:  # {epoch: state_dict}, in torch's zip container or its pre-1.6 (legacy) one
        torch.save(
            {step: states[step] for step in reversed(STEPS)},
            source,
            _use_new_zipfile_serialization=layout == "dict",
        )
    run_cli("import", str(source), "--out", str(tmp_path / "t.h5"), "--quiet", check=True)
    ds = _assert_exact(tmp_path / "t.h5", states)
    if layout == "list":
        np.testing.assert_allclose(ds.val_loss.values, [losses[s] for s in STEPS])
        assert list(ds.train_a.values) == [0, 0, 1, P - 1] and list(ds.train_b.values) == [
            0,
            5,
            3,
            P - 1,
        ]
        assert np.isfinite(
            mechgrok.analyze(tmp_path / "t.h5").all_acc.values
        ).all()  # scored from the weights


def test_safetensors_with_a_manifest_of_checksums(tmp_path, trained):
    states, _ = trained
    folder = tmp_path / "run"
    folder.mkdir()
    rows = []
    for step in STEPS:
        name = f"checkpoint_epoch_{step:05d}.safetensors"
        safetensors.torch.save_file(states[step], str(folder / name))
        rows.append(
            {
                "step": step,
                "file": name,
                "sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest(),
            }
        )
    (folder / "config.json").write_text(json.dumps({"p": P}))
    run_cli("import", str(folder), "--out", str(tmp_path / "plain.h5"), "--quiet", check=True)
    _assert_exact(tmp_path / "plain.h5", states)
    (folder / "checkpoints.json").write_text(json.dumps(rows))
    run_cli("import", str(folder), "--out", str(tmp_path / "t.h5"), "--quiet", check=True)
    _assert_exact(tmp_path / "t.h5", states)
    damaged = folder / rows[1]["file"]
    damaged.write_bytes(damaged.read_bytes()[:-8] + b"\0" * 8)
    assert_one_line_error(
        run_cli("import", str(folder), "--out", str(tmp_path / "d.h5")), "sha256 differs"
    )
    assert not (tmp_path / "d.h5").exists()


class Config:  # a pickled object, as some containers hold: weights_only refuses it
    def __init__(self, marker):
        self.modulus, self.marker = P, str(marker)

    def __setstate__(self, state):  # run only if the pickle's code were run
        open(state["marker"], "w").close()
        self.__dict__.update(state)


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_bad_sources_give_one_line_errors_and_write_nothing(tmp_path, trained):
    states, _ = trained
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run_cli("import", str(empty), "--out", str(tmp_path / "o.h5")), "no .pt")
    assert_one_line_error(
        run_cli("import", str(tmp_path / "missing"), "--out", str(tmp_path / "o.h5")),
        "no such file",
    )
    truncated = tmp_path / "cut.pt"
    torch.save({"checkpoints": [states[0]], "checkpoint_epochs": [0]}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    assert_one_line_error(
        run_cli("import", str(truncated), "--out", str(tmp_path / "o.h5")), "cut.pt", "truncated"
    )
    # a pickled config object (TransformerLens's demo saves one) is read as plain data: the
    # import goes on, says so, and none of the object's code runs
    pickled, marker = tmp_path / "pickled.pt", tmp_path / "code-ran"
    torch.save(
        {"checkpoints": [states[0]], "checkpoint_epochs": [0], "config": Config(marker)},
        pickled,
        pickle_module=pickle,
    )
    done = run_cli("import", str(pickled), "--out", str(tmp_path / "p.h5"), "--quiet", check=True)
    assert "test_import.Config as plain data (its code was not run)" in done.stderr
    assert not marker.exists() and (tmp_path / "p.h5").is_file()
    # a payload that would run a shell command (torch blocks its module even as data) is refused
    payload, ran = tmp_path / "payload.pt", tmp_path / "shell-ran"
    torch.save(
        {"checkpoints": [states[0]], "checkpoint_epochs": [0], "x": Payload(ran)},
        payload,
        pickle_module=pickle,
    )
    assert_one_line_error(
        run_cli("import", str(payload), "--out", str(tmp_path / "q.h5")), "--trust-pickle"
    )
    assert not ran.exists()
    other = tmp_path / "other.pt"
    other.write_bytes(
        b"\x89HDF\r\n\x1a\n" + bytes(100)
    )  # not a torch file at all: not blamed on pickled objects
    assert_one_line_error(
        run_cli("import", str(other), "--out", str(tmp_path / "o.h5")),
        "an HDF5 file, not a torch checkpoint",
    )
    plain = tmp_path / "plain.pkl"  # pickle.dump, not torch.save: named, not "Unsupported operand"
    plain.write_bytes(pickle.dumps({"checkpoints": [{"w": [1.0]}]}, protocol=4))
    for trust in ([], ["--trust-pickle"]):
        assert_one_line_error(
            run_cli("import", str(plain), "--out", str(tmp_path / "o.h5"), *trust),
            "a plain Python pickle (pickle.dump), not a torch.save checkpoint",
        )
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    torch.save(states[0], mixed / "0.pt")
    wide = torch.nn.Sequential(
        torch.nn.Linear(2 * P, H + 1), torch.nn.ReLU(), torch.nn.Linear(H + 1, P)
    ).state_dict()
    torch.save(wide, mixed / "20.pt")
    assert_one_line_error(
        run_cli("import", str(mixed), "--out", str(tmp_path / "o.h5")), "20.pt", "differ"
    )
    shapeless = tmp_path / "shapeless.pt"
    torch.save({0: {"x": torch.zeros(3, 4)}}, shapeless)
    assert_one_line_error(
        run_cli("import", str(shapeless), "--out", str(tmp_path / "o.h5")), "modulus"
    )
    assert not (tmp_path / "o.h5").exists()
    existing = tmp_path / "keep.txt"
    existing.write_text("mine")
    torch.save({0: states[0]}, tmp_path / "ok.pt")
    assert_one_line_error(
        run_cli("import", str(tmp_path / "ok.pt"), "--out", str(existing), "--force"),
        "not a mechgrok trajectory",
    )
    assert existing.read_text() == "mine"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_import_leaves_no_output(tmp_path, signum):
    """An import takes its name only once complete: interrupted, it leaves nothing (SIGTERM and
    Ctrl-C: one line saying so; SIGKILL: a hidden partial that the next import removes)."""
    states = {"0.weight": torch.zeros(64, 2 * 23), "2.weight": torch.zeros(23, 64)}
    source = tmp_path / "many.pt"
    torch.save(
        {
            "checkpoints": [{k: v + i for k, v in states.items()} for i in range(3000)],
            "checkpoint_epochs": list(range(3000)),
        },
        source,
    )
    out = tmp_path / "t.h5"
    proc = ForkedCli("import", str(source), "--out", str(out), "--quiet")
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None and not list(tmp_path.glob(".t.h5.*")):
        time.sleep(0.01)
    time.sleep(0.3)  # some snapshots in
    assert proc.poll() is None, "the import ended before it could be interrupted"
    os.kill(proc.pid, signum)
    proc.wait()
    assert not out.exists()
    partials = list(tmp_path.glob(".t.h5.*.partial"))
    if signum == signal.SIGKILL:
        assert len(partials) == 1
        old = time.time() - 3600  # stale: no process holds it
        os.utime(partials[0], (old, old))
        small = tmp_path / "small.pt"
        torch.save({"checkpoints": [states], "checkpoint_epochs": [0]}, small)
        run_cli("import", str(small), "--out", str(out), "--quiet", check=True)
        assert list(tmp_path.glob(".t.h5.*.partial")) == [] and out.exists()
    else:
        assert partials == []
        assert_one_line_error(proc, "interrupted; nothing was written")
        assert proc.returncode == 130


@pytest.mark.slow
def test_an_import_that_cannot_fit_is_refused_before_anything_is_written(tmp_path):
    # 300 checkpoints of 64 neurons at p = 13 take ~1.2 MiB: refused under a 600 kB limit
    folder = tmp_path / "run"
    folder.mkdir()
    state = torch.nn.Sequential(
        torch.nn.Linear(2 * P, 64), torch.nn.ReLU(), torch.nn.Linear(64, P)
    ).state_dict()
    for step in range(300):
        torch.save(state, folder / f"{step}.pt")
    out = tmp_path / "t.h5"
    proc = ForkedCli("import", folder, "--out", out, "--quiet", limit_bytes=600_000).wait()
    assert_one_line_error(proc, "300 checkpoints", "would take up to", "file-size limit of 586 KiB")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_deeper_mlp_is_read_at_its_last_hidden_layer_through_its_tables(tmp_path):
    """Two hidden layers: import and the Recorder read the last one through its activation
    tables (not as a one-layer MLP); --key, which names one layer's roles, is refused."""
    torch.manual_seed(0)
    layers = [torch.nn.Linear(2 * P, 20), torch.nn.Linear(20, 24), torch.nn.Linear(24, P)]
    model = torch.nn.Sequential(layers[0], torch.nn.ReLU(), layers[1], torch.nn.ReLU(), layers[2])
    a, b = torch.cartesian_prod(torch.arange(P), torch.arange(P)).T
    x = torch.cat([torch.nn.functional.one_hot(a, P), torch.nn.functional.one_hot(b, P)], 1).float()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1.0)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(x), (a + b) % P)
        opt.zero_grad()
        loss.backward()
        opt.step()
    state = {f"layers.{i}.{k}": v for i, m in enumerate(layers) for k, v in m.state_dict().items()}
    source = tmp_path / "dp_run.pt"
    torch.save({0: state, 100: state}, source)  # {epoch: state_dict}, as the study saved it
    run_cli("import", str(source), "--out", str(tmp_path / "t.h5"), "--quiet", check=True)
    ds = open_trajectory(tmp_path / "t.h5")
    assert ds.sizes["neuron"] == 24 and int(ds.attrs["hidden_layers"]) == 2
    with torch.no_grad():
        theirs = (model(x).argmax(-1) == (a + b) % P).float().mean().item()
    assert float(ds.all_acc[-1]) == pytest.approx(theirs, abs=1e-6)
    # the curves are the additive part of the last layer's pre-activation table
    pre = layers[1](torch.relu(layers[0](x))).detach().numpy().reshape(P, P, 24)
    np.testing.assert_allclose(ds.W_a.values[-1], (pre.mean(1) - pre.mean((0, 1))).T, atol=1e-5)
    np.testing.assert_allclose(ds.W_out.values[-1], layers[2].weight.detach().numpy().T)
    assert 0 < float(ds.additivity.values[-1].min()) < 1  # a deeper layer is not additive
    with mechgrok.Recorder(tmp_path / "r.h5") as recorder:
        recorder.snapshot(0, model)
    with h5py.File(tmp_path / "r.h5", "r") as f, h5py.File(tmp_path / "t.h5", "r") as g:
        np.testing.assert_array_equal(f["W_a"][0], g["W_a"][0])
    proc = run_cli(
        "import", str(source), "--out", str(tmp_path / "k.h5"), "--key", "b_in=layers.0.bias"
    )
    assert_one_line_error(proc, "2 hidden layers found", "layers.1.weight [24, 20]")
    assert not (tmp_path / "k.h5").exists()


def test_suspicious_checkpoints_are_named_and_impossible_ones_refused(tmp_path, trained):
    states, _ = trained
    same = [states[0]] * 3  # a list that holds one state dict three times (saved without copying)
    nan = {k: v.clone() for k, v in states[20].items()}
    nan["0.weight"][0, 0] = float("nan")
    source = tmp_path / "run.pt"
    torch.save({"checkpoints": [*same, nan], "checkpoint_epochs": [0, 1, 2, 3]}, source)
    proc = run_cli("import", str(source), "--out", str(tmp_path / "t.h5"), "--quiet")
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note:")]
    assert proc.returncode == 0 and len(notes) == 2, proc.stderr
    assert "1 of 4 imported checkpoints hold NaN" in notes[0]
    assert "2 of 4 imported checkpoints equal the checkpoint before them" in notes[1]
    complex_state = {k: v.to(torch.complex64) for k, v in states[0].items()}
    torch.save({0: complex_state}, tmp_path / "c.pt")
    proc = run_cli("import", str(tmp_path / "c.pt"), "--out", str(tmp_path / "c.h5"))
    assert_one_line_error(proc, "complex values")
    with pytest.raises(mechgrok.MechgrokError, match="val_acc 1.5 at step 0 is not in 0..1"):
        with mechgrok.Recorder(tmp_path / "r.h5") as rec:
            rec.snapshot(0, states[0], metrics={"val_acc": 1.5})
