"""The transformer: its fast forward, the numpy activation tables, effective curves, and the
2D frequency measure, on random and planted weights where the answer is known."""

import numpy as np
import pytest
import torch
from planted import planted_algorithm

from mechgrok.analysis.pipeline import neuron_structure
from mechgrok.models.layout import param_shapes
from mechgrok.models.tables import (
    additive_part,
    frequency_2d,
    transformer_curves,
    transformer_logits,
    transformer_tables,
)
from mechgrok.models.transformer import forward, init_params, reference_logits

P = 13


def _pairs(p=P):
    a, b = torch.cartesian_prod(torch.arange(p), torch.arange(p)).T
    return a, b


def _numpy(params):
    return {name: value.detach().numpy().astype(np.float64) for name, value in params.items()}


def test_the_answer_position_forward_equals_the_plain_per_position_forward():
    params = init_params(P, 32, 4, 48, seed=3)
    a, b = _pairs()
    tokens = torch.stack([a, b, torch.full_like(a, P)], 1)
    plain = reference_logits(params, tokens)[:, -1]
    fast = forward(params, a, b)
    assert fast.shape == (P * P, P)
    np.testing.assert_allclose(fast.detach().numpy(), plain.detach().numpy(), atol=1e-5)
    # the numpy forward that analysis uses, on the same weights
    numpy_logits = transformer_logits(_numpy(params), transformer_tables(_numpy(params)))
    np.testing.assert_allclose(numpy_logits.reshape(P * P, P), plain.detach().numpy(), atol=1e-5)


def test_gradients_of_the_two_forwards_agree():
    params = init_params(P, 16, 2, 24, seed=1)
    a, b = _pairs()
    tokens = torch.stack([a, b, torch.full_like(a, P)], 1)
    grads = []
    for logits_of in (lambda q: forward(q, a, b), lambda q: reference_logits(q, tokens)[:, -1]):
        leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        torch.nn.functional.cross_entropy(logits_of(leaves), (a + b) % P).backward()
        grads.append({k: v.grad for k, v in leaves.items()})
    for name in params:
        np.testing.assert_allclose(grads[0][name], grads[1][name], atol=1e-6, err_msg=name)


def test_with_no_attention_scores_the_curves_are_exactly_w_in_on_the_embeddings():
    """W_Q = 0: every head attends 1/3 to a, b and '=', so the pre-activation table is additive
    and the effective curves are W_in applied to each token's (value, output) row."""
    params = _numpy(init_params(P, 16, 2, 24, seed=5))
    params["blocks.0.attn.W_Q"][:] = 0
    W_E, W_pos, W_V, W_O, W_in = (
        params[k]
        for k in (
            "embed.W_E",
            "pos_embed.W_pos",
            "blocks.0.attn.W_V",
            "blocks.0.attn.W_O",
            "blocks.0.mlp.W_in",
        )
    )
    OV = np.einsum("hdk,hke->de", W_V, W_O)
    expected = {}
    for name, position in (("W_a", 0), ("W_b", 1)):
        rows = (W_E[:P] + W_pos[position]) @ OV / 3 @ W_in  # (token, neuron)
        expected[name] = (rows - rows.mean(0)).T
    curves = transformer_curves(params)
    for name in ("W_a", "W_b"):
        np.testing.assert_allclose(curves[name], expected[name], atol=1e-5)
    np.testing.assert_allclose(curves["additivity"], 1, atol=1e-5)
    np.testing.assert_allclose(curves["attention_a"], 1 / 3, atol=1e-7)
    np.testing.assert_allclose(
        curves["W_out"], params["blocks.0.mlp.W_out"] @ params["unembed.W_U"], atol=1e-5
    )


def _frequency_transformer(p, freqs):
    """One head with no attention scores whose value/output path copies the embedding; token
    t is embedded as cos and sin of 2 pi k t / p for each k in freqs (a and b apart), and
    neuron i reads cos(k_i a) + cos(k_i b) (times 3: attention averages over 3 tokens)."""
    d = 4 * len(freqs)
    shapes = param_shapes(p, d, 1, len(freqs))
    params = {name: np.zeros(shape) for name, shape in shapes.items()}
    t = np.arange(p)
    for i, k in enumerate(freqs):
        params["embed.W_E"][:p, 4 * i] = np.cos(2 * np.pi * k * t / p)
        params["embed.W_E"][:p, 4 * i + 1] = np.sin(2 * np.pi * k * t / p)
        params["blocks.0.mlp.W_in"][4 * i, i] = 3.0
        params["unembed.W_U"][4 * i, :] = np.cos(2 * np.pi * k * t / p)
        params["blocks.0.mlp.W_out"][i, 4 * i] = 1.0
    params["blocks.0.attn.W_V"][0] = np.eye(d)
    params["blocks.0.attn.W_O"][0] = np.eye(d)
    return params


def test_a_transformer_built_from_chosen_frequencies_is_read_back():
    p, freqs = 23, (2, 5, 9)
    curves = transformer_curves(_frequency_transformer(p, freqs))
    np.testing.assert_allclose(curves["additivity"], 1, atol=1e-6)
    structure = neuron_structure(curves["W_a"], curves["W_b"], curves["W_out"], 2.0, 1.0)
    assert list(structure["freq_a"]) == list(freqs) and list(structure["freq_b"]) == list(freqs)
    assert list(structure["freq_out"]) == list(freqs)
    np.testing.assert_allclose(structure["phase_a"], 0, atol=1e-6)
    assert list(curves["neuron_freq_2d"]) == list(freqs)
    assert (curves["neuron_freq_share"] > 0.9).all()  # ReLU of a sum of two cosines: mostly k


def test_frequency_2d_on_a_pure_product_of_waves_and_on_a_constant():
    p = 17
    t = np.arange(p)
    table = np.cos(2 * np.pi * 3 * t / p)[:, None] * np.sin(2 * np.pi * 3 * t / p)[None, :]
    noise = np.random.default_rng(0).standard_normal((p, p))
    tables = np.stack([table, np.full((p, p), 2.0), noise], -1)
    freq, share = frequency_2d(tables)
    assert freq[0] == 3 and share[0] == pytest.approx(1.0)
    assert freq[1] == 0 and share[1] == 0  # no variance: no frequency
    assert share[2] < 0.3  # noise spreads over the (p - 1) // 2 blocks


def test_the_mlp_table_is_additive_and_its_curves_give_the_same_measures():
    """On the two-hot MLP the table route returns W_a and W_b less their means (the constant
    moves to b_in): every measure that does not depend on how the constant is split is equal."""
    planted = planted_algorithm(p=23, freqs=(1, 4, 9), noise=0.05)
    rng = np.random.default_rng(1)
    W_a = planted["W_a"] + rng.normal(0, 0.3, (planted["W_a"].shape[0], 1))
    W_b = planted["W_b"] + 0.2
    b_in = rng.normal(0, 0.1, W_a.shape[0])
    table = W_a.T[:, None, :] + W_b.T[None, :, :] + b_in
    f, g, c, additivity = additive_part(table)
    np.testing.assert_allclose(additivity, 1, atol=1e-12)
    np.testing.assert_allclose(f.T, W_a - W_a.mean(1, keepdims=True), atol=1e-12)
    np.testing.assert_allclose(c, W_a.mean(1) + W_b.mean(1) + b_in, atol=1e-12)
    direct = neuron_structure(W_a, W_b, planted["W_out"], 2.0, 1.0)
    tabled = neuron_structure(f.T, g.T, planted["W_out"], 2.0, 1.0)
    split_free = [
        k
        for k in direct
        if not k.startswith(("square_dist", "cosine_dist", "binarization", "boundary_frac"))
    ]
    for name in split_free:
        np.testing.assert_allclose(tabled[name], direct[name], atol=1e-9, err_msg=name)
    # the waveform distances fit levels to each row: they are offset-free as well
    for name in ("square_dist_a", "cosine_dist_a", "binarization_a", "boundary_frac_a"):
        np.testing.assert_allclose(tabled[name], direct[name], atol=1e-9, err_msg=name)
