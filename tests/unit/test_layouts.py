"""Finding W_a, W_b, W_out in other codebases' parameter layouts."""

import numpy as np
import pytest
import torch  # a dependency: a skip would hide a broken install

from mechgrok.ingest.layouts import LayoutError, curves_from_parameters

P, H = 11, 8


@pytest.fixture
def planted():
    rng = np.random.default_rng(0)
    return {
        name: rng.normal(size=shape).astype(np.float32)
        for name, shape in (
            ("W_a", (H, P)),
            ("W_b", (H, P)),
            ("W_out", (H, P)),
            ("b_in", (H,)),
            ("b_out", (P,)),
        )
    }


def _check(curves, planted, with_bias=True):
    for name in ("W_a", "W_b", "W_out") + (("b_in", "b_out") if with_bias else ()):
        np.testing.assert_array_equal(curves[name], planted[name])
    assert with_bias or "b_in" not in curves


def test_nn_linear_layout_as_stored_by_torch(planted):
    state = {
        "fc1.weight": np.concatenate([planted["W_a"], planted["W_b"]], 1),
        "fc1.bias": planted["b_in"],
        "fc2.weight": planted["W_out"].T,
        "fc2.bias": planted["b_out"],
    }
    _check(curves_from_parameters(state), planted)  # the modulus is inferred: sides 2p and p
    _check(curves_from_parameters(state, modulus=P), planted)


def test_transposed_layout_without_biases(planted):
    state = {
        "W_in": np.concatenate([planted["W_a"], planted["W_b"]], 1).T,
        "W_out": planted["W_out"],
    }
    _check(curves_from_parameters(state, modulus=P), planted, with_bias=False)


def test_torch_tensors_and_direct_mappings(planted):
    direct = {name: torch.from_numpy(value) for name, value in planted.items()}
    _check(curves_from_parameters(direct), planted)


def test_ambiguous_or_unrecognisable_shapes_say_what_to_do(planted):
    square = {
        "a.weight": np.zeros((P, 2 * P), np.float32),
        "b.weight": np.zeros((P, P), np.float32),
    }
    with pytest.raises(LayoutError, match="width equals the modulus"):
        curves_from_parameters(square, modulus=P)
    both = {
        "a.weight": np.zeros((2 * P, 2 * P), np.float32),
        "b.weight": np.zeros((P, 2 * P), np.float32),
    }
    with pytest.raises(LayoutError, match="several parameters could be the input layer"):
        curves_from_parameters(both, modulus=P)
    with pytest.raises(LayoutError, match="no input layer found"):
        curves_from_parameters({"x": np.zeros((3, 4), np.float32)}, modulus=P)
    with pytest.raises(LayoutError, match="give the modulus"):
        curves_from_parameters({"x": np.zeros((3, 4), np.float32)})
    with pytest.raises(LayoutError, match="no parameter named 'nope'"):
        curves_from_parameters(
            {"x": np.zeros((3, 4), np.float32)}, modulus=P, keys={"input": "nope"}
        )


def test_a_shared_input_weight_named_by_keys(planted):
    state = {
        "mlp.W_in": planted["W_a"],
        "mlp.W_out": planted["W_out"].T,
    }  # Y-Agent: [H, p] and [p, H]
    curves = curves_from_parameters(
        state, modulus=P, keys={"input": "mlp.W_in", "output": "mlp.W_out"}
    )
    np.testing.assert_array_equal(curves["W_a"], planted["W_a"])
    np.testing.assert_array_equal(curves["W_b"], planted["W_a"])
    np.testing.assert_array_equal(curves["W_out"], planted["W_out"])
    with pytest.raises(LayoutError, match="name the output weight"):
        curves_from_parameters(state, modulus=P, keys={"input": "mlp.W_in"})
    # the names W_in and W_out tell the roles with no keys; the modulus tells p from the width
    by_name = curves_from_parameters(state, modulus=P)
    assert all(np.array_equal(by_name[k], curves[k]) for k in curves)
    unnamed = {"first": state["mlp.W_in"], "second": state["mlp.W_out"]}
    with pytest.raises(LayoutError, match="no input layer found"):  # shapes alone cannot tell
        curves_from_parameters(unnamed, modulus=P)


@pytest.mark.parametrize("name", ["relu", "gelu", "silu", "quadratic", "identity"])
def test_activations_match_torch(name):
    from mechgrok.models.activations import activate

    x = np.linspace(-6, 6, 2001, dtype=np.float32)
    expected = {
        "relu": torch.relu,
        "gelu": torch.nn.functional.gelu,
        "silu": torch.nn.functional.silu,
        "quadratic": torch.square,
        "identity": lambda t: t,
    }[name](torch.from_numpy(x.copy())).numpy()
    np.testing.assert_allclose(activate(name, x.copy()), expected, atol=2e-6, rtol=1e-6)


@pytest.mark.parametrize("form", ["concatenated", "summed", "one per token"])
def test_embedding_mlps_give_their_exact_effective_input_curves(form):
    d = 5
    torch.manual_seed(0)
    embed = torch.nn.Embedding(P, d)
    first = torch.nn.Linear(2 * d if form == "concatenated" else d, H)
    second = torch.nn.Linear(d, H)
    out = torch.nn.Linear(H, P)
    a, b = torch.cartesian_prod(torch.arange(P), torch.arange(P)).T
    with torch.no_grad():
        if form == "concatenated":
            pre = first(torch.cat([embed(a), embed(b)], 1))
        elif form == "summed":
            pre = first(embed(a) + embed(b))
        else:
            pre = first(embed(a)) + second(embed(b)) - second.bias
    keys = {
        "embedding": "embed.weight",
        "input": "first.weight",
        "output": "out.weight",
        "b_in": "first.bias",
    }
    state = {
        "embed.weight": embed.weight,
        "first.weight": first.weight,
        "first.bias": first.bias,
        "out.weight": out.weight,
    }
    if form == "one per token":
        keys["input_b"], state["second.weight"] = "second.weight", second.weight
    curves = curves_from_parameters(state, modulus=P, keys=keys)
    rebuilt = (
        curves["W_a"][:, a.numpy()] + curves["W_b"][:, b.numpy()] + curves["b_in"][:, None]
    )  # (H, pairs)
    np.testing.assert_allclose(rebuilt.T, pre.numpy(), atol=1e-5)
    np.testing.assert_array_equal(curves["W_out"], out.weight.detach().numpy().T)


def _deeper_models(p=13):
    nn = torch.nn
    torch.manual_seed(0)
    seq = nn.Sequential(
        nn.Linear(2 * p, 20), nn.ReLU(), nn.Linear(20, 20), nn.ReLU(), nn.Linear(20, p)
    )
    narrowing = nn.Sequential(
        nn.Linear(2 * p, 30), nn.ReLU(), nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, p)
    )
    layers = {  # a differential-privacy grokking study's naming, saved as {epoch: state_dict}
        f"layers.{i}.{k}": v
        for i, module in enumerate((seq[0], seq[2], seq[4]))
        for k, v in module.state_dict().items()
    }
    normed = {
        **nn.Sequential(nn.Linear(2 * p, 20), nn.ReLU(), nn.Linear(20, p)).state_dict(),
        "norm.weight": torch.ones(20),
        "norm.bias": torch.zeros(20),
    }
    embedded = {  # embedding MLP with two hidden layers l1, l2
        "embed.weight": torch.randn(p, 8),
        "l1.weight": torch.randn(20, 16),
        "l1.bias": torch.randn(20),
        "l2.weight": torch.randn(20, 20),
        "l2.bias": torch.randn(20),
        "unembed.weight": torch.randn(p, 20),
    }
    return {
        "sequential": (seq.state_dict(), {}),
        "narrowing": (narrowing.state_dict(), {}),
        "layers.N": (layers, {}),
        "layers.N with the bias named": (layers, {"b_in": "layers.0.bias"}),
        "layer norm": (normed, {}),
        "embedding l1, l2": (
            embedded,
            {"embedding": "embed.weight", "input": "l1.weight", "output": "unembed.weight"},
        ),
    }


@pytest.mark.parametrize("case", list(_deeper_models()))
def test_mlps_that_are_not_one_hidden_layer_are_refused_never_misread(case):
    parameters, keys = _deeper_models()[case]
    with pytest.raises(LayoutError, match="as a one-hidden-layer MLP would drop layers") as info:
        curves_from_parameters(parameters, None if case != "embedding l1, l2" else 13, keys)
    assert "found" in str(info.value)


def test_transformers_are_named_as_what_they_are():
    z = np.zeros
    nanda = {
        "embed.W_E": z((128, 114)),
        "pos_embed.W_pos": z((3, 128)),
        "blocks.0.attn.W_Q": z((4, 32, 128)),
        "blocks.0.mlp.W_in": z((512, 128)),
        "blocks.0.mlp.W_out": z((128, 512)),
        "unembed.W_U": z((128, 114)),
    }
    with pytest.raises(
        LayoutError, match=r"this is a transformer \(pos_embed.W_pos, blocks.0.attn.W_Q"
    ):
        curves_from_parameters(nanda)


def test_a_stack_is_read_only_when_its_names_give_the_order_it_runs_in():
    """The state dict lists layers as they were registered; same-shaped hidden layers chain in
    any order, so a stack is read only when its names number its layers in order (and an
    embedding, linear with no activation after it, is not a hidden layer)."""
    from mechgrok.ingest.layouts import mlp_stack

    def state(names, sizes):
        rng = np.random.default_rng(0)
        out = {}
        for name, (rows, cols) in zip(names, sizes):
            out[f"{name}.weight"] = rng.standard_normal((rows, cols)).astype(np.float32)
            out[f"{name}.bias"] = rng.standard_normal(rows).astype(np.float32)
        return out

    sizes = [(16, 14), (16, 16), (16, 16), (7, 16)]
    assert list(mlp_stack(state(["fc1", "fc2", "fc3", "out"], sizes))) == [
        f"{n}.{k}" for n in ("fc1", "fc2", "fc3", "out") for k in ("weight", "bias")
    ]
    assert mlp_stack(state(["0", "2", "4", "6"], sizes)) is not None
    assert mlp_stack(state(["fc1", "fc3", "fc2", "out"], sizes)) is None  # registered out of order
    assert mlp_stack(state(["a", "b", "c", "out"], sizes)) is None  # names do not say
    assert mlp_stack(state(["embed", "fc1", "out"], [(8, 14), (16, 8), (7, 16)])) is None
    assert mlp_stack(state(["fc1", "out"], [(16, 14), (7, 16)])) is None  # one hidden layer
