"""Recording from the user's own training loop (mechgrok.Recorder), as README shows it."""

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import mechgrok
from mechgrok.errors import InvalidOptionError, OutputExistsError
from mechgrok.ingest.layouts import LayoutError
from mechgrok.store.reader import open_trajectory

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_example() -> str:
    section = README.read_text().split("## Analyze your own runs", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_and_its_file_holds_the_models_exact_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(_readme_example(), "README example", "exec"), namespace)
    model, p = namespace["model"], namespace["p"]
    with open_trajectory("trajectories/my_loop.h5") as ds:
        assert list(ds.step.values) == list(range(0, 1001, 25)) and ds.attrs["final_step"] == 1000
        first, second = model[0].weight.detach().numpy(), model[2].weight.detach().numpy()
        np.testing.assert_array_equal(ds.W_a.isel(step=-1).values, first[:, :p])  # bitwise
        np.testing.assert_array_equal(ds.W_b.isel(step=-1).values, first[:, p:])
        np.testing.assert_array_equal(ds.W_out.isel(step=-1).values, second.T)
        np.testing.assert_array_equal(ds.b_in.isel(step=-1).values, model[0].bias.detach().numpy())
        assert np.isnan(ds.val_loss.values).all() and np.isfinite(ds.val_acc.values).all()
    result = namespace["result"]
    assert result.ideal_acc.isel(step=-1) > 0.95 and result.ideal_acc_shuffled.isel(step=-1) < 0.2
    assert result.attrs["grok_step"] >= 0  # from the val_acc the loop recorded


def test_bad_snapshots_are_refused_and_an_interrupted_loop_leaves_an_unfinished_file(tmp_path):
    p, width = 11, 8
    model = torch.nn.Sequential(
        torch.nn.Linear(2 * p, width), torch.nn.ReLU(), torch.nn.Linear(width, p)
    )
    path = tmp_path / "r.h5"
    with pytest.raises(RuntimeError, match="stopped"):
        with mechgrok.Recorder(path) as rec:
            rec.snapshot(0, model, metrics={"train_loss": 2.4})
            with pytest.raises(ValueError, match="unknown metric"):
                rec.snapshot(1, model, metrics={"accuracy": 1.0})
            with pytest.raises(ValueError, match="not after the last"):
                rec.snapshot(0, model)
            with pytest.raises(LayoutError, match="shapes"):
                rec.snapshot(
                    2,
                    torch.nn.Sequential(
                        torch.nn.Linear(2 * p, 9), torch.nn.ReLU(), torch.nn.Linear(9, p)
                    ),
                )
            rec.snapshot(5, model.state_dict())
            raise RuntimeError("stopped")
    with h5py.File(path, "r") as f:
        assert (
            f.attrs["final_step"] == -1 and f.attrs["n_snapshots"] == 2 and f.attrs["modulus"] == p
        )
    with pytest.raises(OutputExistsError, match="exists"):
        mechgrok.Recorder(path, modulus=p).snapshot(0, model)


def test_a_gelu_model_is_scored_with_gelu(tmp_path):
    p, width = 11, 32
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Linear(2 * p, width), torch.nn.GELU(), torch.nn.Linear(width, p)
    )
    a, b = torch.cartesian_prod(torch.arange(p), torch.arange(p)).T
    x = torch.cat([torch.nn.functional.one_hot(a, p), torch.nn.functional.one_hot(b, p)], 1).float()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(60):  # partly trained: accuracy well away from chance and from 1
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), (a + b) % p).backward()
        opt.step()
    with mechgrok.Recorder(tmp_path / "g.h5", activation="gelu") as rec:
        rec.snapshot(0, model)
    expected = (model(x).argmax(-1) == (a + b) % p).float().mean().item()
    assert mechgrok.analyze(tmp_path / "g.h5").all_acc.item() == pytest.approx(
        expected, abs=1e-6
    )  # same pairs right
    with pytest.raises(ValueError, match="unknown activation"):
        mechgrok.Recorder(tmp_path / "x.h5", activation="tanh")


def test_recorder_refuses_what_would_make_a_wrong_or_unreadable_file(tmp_path):
    ones = {name: np.ones((13, 16), np.float32) for name in ("W_a", "W_b", "W_out")}
    path = tmp_path / "t.h5"
    # a declared modulus is never overridden by shapes that contradict it
    with pytest.raises(InvalidOptionError, match="modulus 13 was declared.*16 tokens"):
        mechgrok.Recorder(path, modulus=13).snapshot(0, ones)
    # names mechgrok writes itself would make a file it cannot open
    for reserved in ("width", "modulus", "n_snapshots", "format_version"):
        with pytest.raises(InvalidOptionError, match=reserved):
            mechgrok.Recorder(path, attrs={reserved: 3})
    with pytest.raises(InvalidOptionError, match="1.5 is not a whole number"):
        mechgrok.Recorder(path).snapshot(1.5, ones)
    assert sorted(tmp_path.iterdir()) == []  # nothing written, no partial left
