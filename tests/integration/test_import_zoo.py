"""Real published layouts, built the way their codebases build them: small models trained
with their module names, saved with their containers, imported with no flags. The imported
curves run forward must give the source model's own logits (to 1e-5) and accuracy (exactly),
and the analysis's all-pairs accuracy must be that accuracy."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli
from torch import nn

import mechgrok
from mechgrok.store.reader import open_trajectory

P, H, D = 17, 24, 8


def _pairs():
    a, b = torch.cartesian_prod(torch.arange(P), torch.arange(P)).T
    return a, b, (a + b) % P


def _train(model, steps=60, lr=1e-2):
    a, b, labels = _pairs()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1.0)
    for _ in range(steps):
        loss = F.cross_entropy(model(a, b), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


class SharedInput(nn.Module):
    """One input weight fed one_hot(a) + one_hot(b), a non-trainable basis buffer."""

    def __init__(self):
        super().__init__()
        self.W_in = nn.Parameter(torch.randn(H, P) / math.sqrt(P))
        self.W_out = nn.Parameter(torch.randn(P, H) / math.sqrt(H))
        self.register_buffer("basis", torch.eye(P))

    def forward(self, a, b):
        x = F.one_hot(a, P).float() + F.one_hot(b, P).float()
        return F.relu(x @ self.W_in.T) @ self.W_out.T


class SharedInputModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = SharedInput()

    def forward(self, a, b):
        return self.mlp(a, b)


class EmbeddingMLP(nn.Module):
    """nn.Embedding tokens, one layer on the concatenated embeddings, an nn.Embedding used as
    the unembedding."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(P, D)
        self.l1 = nn.Linear(2 * D, H)
        self.unembed = nn.Embedding(P, H)

    def forward(self, a, b):
        x = torch.cat([self.embed(a), self.embed(b)], -1)
        return F.relu(self.l1(x)) @ self.unembed.weight.T


class TwoHot(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * P, H), nn.ReLU(), nn.Linear(H, P))

    def forward(self, a, b):
        return self.net(torch.cat([F.one_hot(a, P), F.one_hot(b, P)], -1).float())


def _assert_imported_exactly(path, model):
    a, b, labels = _pairs()
    with torch.no_grad():
        expected = model(a, b).double().numpy()
    with open_trajectory(path) as ds:
        last = ds.isel(step=-1)
        W_a, W_b, W_out = (last[n].values.astype(np.float64) for n in ("W_a", "W_b", "W_out"))
        b_in = last["b_in"].values if "b_in" in ds else 0.0
        b_out = last["b_out"].values if "b_out" in ds else 0.0
    hidden = np.maximum(W_a[:, a.numpy()] + W_b[:, b.numpy()] + np.reshape(b_in, (-1, 1)), 0)
    logits = hidden.T @ W_out + b_out
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    accuracy = float((expected.argmax(-1) == labels.numpy()).mean())
    assert float((logits.argmax(-1) == labels.numpy()).mean()) == accuracy
    # mechgrok credits a pair whose label ties t - 1 other classes with 1/t (a pair whose
    # hidden units are all dead has p equal logits): the same reading of the model's own logits
    top = expected.max(-1, keepdims=True)
    ties = (expected == top).sum(-1)
    tied_accuracy = float(((expected[np.arange(P * P), labels.numpy()] == top[:, 0]) / ties).mean())
    result = mechgrok.analyze(path)
    assert float(result["all_acc"].isel(step=-1)) == pytest.approx(tied_accuracy, abs=1e-12)
    return result


def test_shared_input_per_epoch_files_with_accuracies_and_a_final_copy(tmp_path):
    torch.manual_seed(0)
    model = SharedInputModel()
    run = tmp_path / "run"
    run.mkdir()
    for epoch in (0, 20, 40):
        _train(model, steps=20)
        torch.save(
            {
                "model": model.state_dict(),
                "train_accuracy": torch.tensor(0.5 + epoch / 100, requires_grad=True),
                "test_accuracy": 0.1 + epoch / 100,
                "train_loss": 1.0,
                "test_loss": 2.0,
                "epoch": epoch,
            },
            run / f"{epoch}.pth",
        )
    torch.save({"model": model.state_dict(), "epoch": 40}, run / "final.pth")  # the last again
    a, b, labels = _pairs()
    train = torch.randperm(P * P)[:100]
    torch.save(torch.stack([a[train], b[train], labels[train]], 1), run / "train_data.pth")
    out = tmp_path / "t.h5"
    proc = run_cli("import", str(run), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "UserWarning" not in proc.stderr  # a requires_grad metric leaked torch's warning
    result = _assert_imported_exactly(out, model)
    with open_trajectory(out) as ds:
        assert list(ds.step.values) == [0, 20, 40]
        np.testing.assert_allclose(ds.val_acc.values, [0.1, 0.3, 0.5])
        np.testing.assert_allclose(ds.train_acc.values, [0.5, 0.7, 0.9], atol=1e-6)
        np.testing.assert_array_equal(ds.W_a.values, ds.W_b.values)  # one shared input
        np.testing.assert_array_equal(ds.train_a.values, a[train].numpy())  # the stored split
        np.testing.assert_array_equal(ds.train_b.values, b[train].numpy())
    assert result.attrs["grok_step"] in (-1, 40)


def test_an_embedding_mlp_saved_alone_beside_its_config(tmp_path):
    torch.manual_seed(1)
    model = _train(EmbeddingMLP())
    torch.save(model.state_dict(), tmp_path / "model_7.pt")
    (tmp_path / "config_7.json").write_text(json.dumps({"C": P, "d": D, "n_hidden": H}))
    out = tmp_path / "t.h5"
    proc = run_cli("import", str(tmp_path / "model_7.pt"), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    _assert_imported_exactly(out, model)
    with open_trajectory(out) as ds:
        assert ds.sizes["token"] == P and ds.attrs["step_known"] == 0
    summary = " ".join(run_cli("analyze", str(out)).stderr.split())  # rich wraps the caption
    assert "at the end (step unknown)" in summary
    assert "grok step unknown (no validation metric)" in summary
    assert "accuracy on all pairs (real model)" in summary  # what the weights alone tell
    mechgrok.report([out], out=tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert "This run has one snapshot (step unknown)" in page
    assert "Timeline. Top:" not in page  # no timeline pretending to be one


@pytest.mark.parametrize("prefix", ["module.", "_module."])
def test_wrapped_models_saved_as_epoch_dicts(tmp_path, prefix):
    torch.manual_seed(2)
    model = TwoHot()
    states = {}
    for epoch in (0, 10, 30):
        _train(model, steps=10)
        states[epoch] = {prefix + k: v.clone() for k, v in model.state_dict().items()}
    torch.save(states, tmp_path / "dp.pt")  # {epoch: state_dict} of a DataParallel/Opacus model
    out = tmp_path / "t.h5"
    proc = run_cli("import", str(tmp_path / "dp.pt"), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    _assert_imported_exactly(out, model)


def test_a_grokfast_style_list_file(tmp_path):
    torch.manual_seed(3)
    model = TwoHot()
    nets, its = [], []
    for it in (0, 25, 50):
        _train(model, steps=25)
        nets.append({k: v.clone() for k, v in model.state_dict().items()})
        its.append(it)
    torch.save({"net": nets, "net_its": its}, tmp_path / "results.pt")
    out = tmp_path / "t.h5"
    run_cli("import", str(tmp_path / "results.pt"), "--out", str(out), "--quiet", check=True)
    _assert_imported_exactly(out, model)
