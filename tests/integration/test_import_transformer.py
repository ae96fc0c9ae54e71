"""Importing the transformers of the grokking codebases: Nanda et al.'s per-epoch folders and
full_run_data lists, TransformerLens's demo file, with no flags; the model's own forward on
all pairs equals mechgrok's; variants mechgrok does not run are refused in one line."""

import pickle

import h5py
import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, run_cli
from transformer_codebases import all_pairs, their_logits, to_transformerlens, train

import mechgrok
from mechgrok.models.layout import PARAM_NAMES
from mechgrok.models.tables import transformer_logits, transformer_tables

P, EPOCHS = 11, 21


@pytest.fixture(scope="module")
def run():
    return train(P, EPOCHS, save_every=5)


def _save_nanda_folder(folder, run):
    """As their Trainer does: init.pth (model + train/test data), {epoch}.pth per save,
    final.pth with the loss lists."""
    model, states, train_losses, test_losses, train_data = run
    folder.mkdir()
    torch.save({"model": states[0], "train_data": train_data, "test_data": []}, folder / "init.pth")
    for epoch, state in states.items():
        if epoch:
            torch.save(
                {
                    "model": state,
                    "train_loss": train_losses[epoch],
                    "test_loss": test_losses[epoch],
                    "epoch": epoch,
                },
                folder / f"{epoch}.pth",
            )
    torch.save(
        {
            "model": model.state_dict(),
            "train_losses": train_losses,
            "test_losses": test_losses,
            "epoch": EPOCHS,
            "train_loss": train_losses[-1],
            "test_loss": test_losses[-1],
        },
        folder / "final.pth",
    )


def _model_params(path):
    with h5py.File(path, "r") as f:
        return [
            {name: f["model"][name][i] for name in PARAM_NAMES} for i in range(f["step"].shape[0])
        ]


def test_a_nanda_run_folder_imports_with_no_flags_and_computes_their_logits(tmp_path, run):
    model, states, train_losses, test_losses, train_data = run
    final = {k: v.clone() for k, v in model.state_dict().items()}
    _save_nanda_folder(tmp_path / "run", run)
    out = tmp_path / "t.h5"
    run_cli("import", str(tmp_path / "run"), "--out", str(out), "--quiet", check=True)
    ds = mechgrok.open_trajectory(out)
    assert ds.attrs["model"] == "transformer" and int(ds.attrs["heads"]) == 2
    assert list(ds.step.values) == [*sorted(states), EPOCHS]
    np.testing.assert_allclose(
        ds.val_loss.values[1:-1], [test_losses[e] for e in sorted(states)[1:]]
    )
    assert sorted(zip(ds.train_a.values, ds.train_b.values)) == sorted(
        (a, b) for a, b, _ in train_data
    )
    # every snapshot: mechgrok's numpy forward of the stored parameters = the model's own logits
    for params, step in zip(_model_params(out), ds.step.values):
        model.load_state_dict(states.get(int(step), final))
        theirs = their_logits(model, P).numpy().reshape(P, P, P)
        ours = transformer_logits(params, transformer_tables(params))
        np.testing.assert_allclose(ours, theirs, atol=2e-5)
    analysis = mechgrok.analyze(out)
    assert "neuron_freq_2d" in analysis and "neurons_per_frequency" in analysis
    # the real model's accuracy is the transformer's own, not its effective curves' MLP
    labels = (all_pairs(P)[:, 0] + all_pairs(P)[:, 1]) % P
    for step, accuracy in zip(analysis.step.values, analysis.all_acc.values):
        model.load_state_dict(states.get(int(step), final))
        theirs = (their_logits(model, P).argmax(-1) == labels).float().mean().item()
        assert accuracy == pytest.approx(theirs, abs=1e-6)


def test_full_run_data_and_the_transformerlens_demo_file_import_identically(tmp_path, run):
    model, states, train_losses, test_losses, train_data = run
    epochs = sorted(states)
    nanda = tmp_path / "full_run_data.pth"
    torch.save(
        {
            "state_dicts": [states[e] for e in epochs],
            "epochs": epochs,
            "train_losses": train_losses,
            "test_losses": test_losses,
        },
        nanda,
    )
    lens = tmp_path / "grokking_demo.pth"
    train_indices = torch.tensor([a * P + b for a, b, _ in train_data])

    class HookedTransformerConfig:  # saved as a pickled object, as the demo does
        def __init__(self):
            self.n_layers, self.d_vocab, self.act_fn, self.normalization_type = (
                1,
                P + 1,
                "relu",
                None,
            )

    HookedTransformerConfig.__module__ = "transformer_lens.HookedTransformerConfig"
    config = HookedTransformerConfig()
    torch.save(
        {
            "model": to_transformerlens(states[epochs[-1]]),
            "config": vars(config),
            "checkpoints": [to_transformerlens(states[e]) for e in epochs],
            "checkpoint_epochs": epochs,
            "test_losses": test_losses,
            "train_losses": train_losses,
            "train_indices": train_indices,
            "test_indices": torch.tensor([]),
        },
        lens,
    )
    for source in (nanda, lens):
        run_cli(
            "import",
            str(source),
            "--out",
            str(tmp_path / f"{source.stem}.h5"),
            "--quiet",
            check=True,
        )
    a, b = (tmp_path / "full_run_data.h5", tmp_path / "grokking_demo.h5")
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        for name in (
            "W_a",
            "W_b",
            "W_out",
            "b_in",
            "b_out",
            "additivity",
            "neuron_freq_2d",
            "step",
            "val_loss",
        ):
            np.testing.assert_array_equal(fa[name][:], fb[name][:], err_msg=name)
        for name in PARAM_NAMES:
            np.testing.assert_array_equal(fa["model"][name][:], fb["model"][name][:], err_msg=name)
    assert mechgrok.open_trajectory(b).attrs["source_layout"] == "TransformerLens HookedTransformer"


def test_a_pickled_config_object_is_read_as_data(tmp_path, run):
    _, states, *_ = run

    class HookedTransformerConfig:
        def __init__(self, act_fn):
            self.n_layers, self.act_fn, self.normalization_type = 1, act_fn, None

    globals()["HookedTransformerConfig"] = HookedTransformerConfig
    HookedTransformerConfig.__qualname__ = "HookedTransformerConfig"
    for act_fn, expect in (("relu", None), ("gelu", "uses gelu")):
        path = tmp_path / f"{act_fn}.pth"
        torch.save(
            {
                "checkpoints": [to_transformerlens(states[0])],
                "checkpoint_epochs": [0],
                "config": HookedTransformerConfig(act_fn),
            },
            path,
            pickle_module=pickle,
        )
        done = run_cli("import", str(path), "--out", str(tmp_path / f"{act_fn}.h5"), "--quiet")
        if expect is None:
            assert done.returncode == 0 and "HookedTransformerConfig as plain data" in done.stderr
        else:
            assert_one_line_error(done, expect)


def _variant(states, change):
    state = {k: v.clone() for k, v in states[0].items()}
    change(state)
    return state


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda s: s.update(
                {
                    k.replace("blocks.0", "blocks.1"): v
                    for k, v in list(s.items())
                    if k.startswith("blocks.0")
                }
            ),
            "2 layers",
        ),
        (
            lambda s: s.update(
                {"blocks.0.ln1.w": torch.ones(16), "blocks.0.ln1.b": torch.zeros(16)}
            ),
            "LayerNorm",
        ),
        (lambda s: s.update({"pos_embed.W_pos": s["pos_embed.W_pos"][:2]}), "no '=' token"),
        (
            lambda s: s.update({"embed.W_E": torch.randn(16, 2 * P + 1)}),
            "vocabulary of 23 tokens for 11 answers",
        ),
    ],
)
def test_variants_mechgrok_does_not_run_are_refused_by_name(tmp_path, run, change, message):
    _, states, *_ = run
    path = tmp_path / "v.pth"
    torch.save({"checkpoints": [_variant(states, change)], "checkpoint_epochs": [0]}, path)
    done = run_cli("import", str(path), "--out", str(tmp_path / "v.h5"))
    assert_one_line_error(done, message or "")
    assert not (tmp_path / "v.h5").exists()


@pytest.mark.parametrize(
    "config, message",
    [
        ({"normalization_type": "RMSPre"}, "LayerNorm"),
        ({"positional_embedding_type": "shortformer"}, "positional_embedding_type"),
        ({"parallel_attn_mlp": True}, "parallel_attn_mlp"),
        ({"attn_scale": 2.0}, "attn_scale"),
        ({"act_fn": "gelu"}, "uses gelu"),
        ({"attn_scale": 8**0.5, "normalization_type": None, "act_fn": "relu"}, None),
    ],
)
def test_configs_of_other_models_are_refused_and_the_standard_one_read(
    tmp_path, run, config, message
):
    _, states, *_ = run
    path = tmp_path / "c.pth"
    torch.save(
        {
            "checkpoints": [to_transformerlens(states[0])],
            "checkpoint_epochs": [0],
            "config": config,
        },
        path,
    )
    done = run_cli("import", str(path), "--out", str(tmp_path / "c.h5"), "--quiet")
    if message is None:
        assert done.returncode == 0, done.stderr
    else:
        assert_one_line_error(done, message)


def test_malformed_shapes_and_a_wrong_activation_get_one_line(tmp_path, run):
    _, states, *_ = run
    bad = {k: v.clone() for k, v in states[0].items()}
    bad["blocks.0.attn.W_O"] = torch.zeros(16, 15)
    path = tmp_path / "bad.pth"
    torch.save({"checkpoints": [bad], "checkpoint_epochs": [0]}, path)
    assert_one_line_error(
        run_cli("import", str(path), "--out", str(tmp_path / "b.h5")), "cannot lay out"
    )
    good = tmp_path / "good.pth"
    torch.save({"checkpoints": [states[0]], "checkpoint_epochs": [0]}, good)
    assert_one_line_error(
        run_cli("import", str(good), "--out", str(tmp_path / "g.h5"), "--activation", "gelu"),
        "ReLU MLP",
    )


def test_an_output_class_for_equals_is_dropped_in_both_layouts(tmp_path, run):
    """TransformerLens with d_vocab_out = p + 1 reads like Nanda's W_U [d, p + 1]."""
    _, states, *_ = run
    lens = to_transformerlens(states[5])
    lens["unembed.W_U"] = states[5]["unembed.W_U"].clone()  # all p + 1 columns
    lens["unembed.b_U"] = torch.zeros(P + 1)
    for name, state in (("lens", lens), ("nanda", states[5])):
        torch.save({"checkpoints": [state], "checkpoint_epochs": [5]}, tmp_path / f"{name}.pth")
        run_cli(
            "import",
            str(tmp_path / f"{name}.pth"),
            "--out",
            str(tmp_path / f"{name}.h5"),
            "--quiet",
            check=True,
        )
    with h5py.File(tmp_path / "lens.h5", "r") as a, h5py.File(tmp_path / "nanda.h5", "r") as b:
        for name in ("W_a", "W_out", "b_out", "all_acc", "model/unembed.W_U"):
            np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)


def test_nonzero_attention_biases_are_refused(tmp_path, run):
    _, states, *_ = run
    lens = to_transformerlens(states[0])
    lens["blocks.0.attn.b_Q"] += 0.5
    path = tmp_path / "b.pth"
    torch.save({"checkpoints": [lens], "checkpoint_epochs": [0]}, path)
    assert_one_line_error(
        run_cli("import", str(path), "--out", str(tmp_path / "b.h5")), "b_Q is not zero"
    )


def test_the_recorder_takes_a_transformer_from_your_own_loop(tmp_path, run):
    """mechgrok.Recorder with the model object of a loop written like the original code:
    the same trajectory as importing its saved state_dicts."""
    model, states, *_ = run
    final = {k: v.clone() for k, v in model.state_dict().items()}
    with mechgrok.Recorder(tmp_path / "loop.h5", modulus=P) as recorder:
        for epoch in sorted(states):
            model.load_state_dict(states[epoch])
            recorder.snapshot(epoch, model)
    model.load_state_dict(final)
    torch.save(
        {"checkpoints": [states[e] for e in sorted(states)], "checkpoint_epochs": sorted(states)},
        tmp_path / "saved.pth",
    )
    run_cli(
        "import",
        str(tmp_path / "saved.pth"),
        "--out",
        str(tmp_path / "saved.h5"),
        "--quiet",
        check=True,
    )
    with h5py.File(tmp_path / "loop.h5", "r") as a, h5py.File(tmp_path / "saved.h5", "r") as b:
        assert a.attrs["model"] == "transformer"
        for name in ("W_a", "W_out", "neuron_freq_share", "model/blocks.0.attn.W_O"):
            np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)
    with pytest.raises(mechgrok.MechgrokError, match="not the declared modulus 13"):
        with mechgrok.Recorder(tmp_path / "wrong.h5", modulus=13) as recorder:
            recorder.snapshot(0, model)
    assert not (tmp_path / "wrong.h5").exists()
