"""Nanda et al. (2023)'s one-layer transformer for (a op b) mod p, in torch, for training.

Input [a, b, =] with '=' as token p; learned token and position embeddings (d_model); one
attention layer (`heads` heads of width d_model / heads, causal, scores / sqrt(d_head)); a ReLU
MLP of d_mlp neurons with biases; no LayerNorm; an untied unembedding to the p answers; no
biases outside the MLP. The loss reads the last position only.

Parameters are named and laid out as TransformerLens's HookedTransformer stores them
(PARAM_SHAPES), without its zero attention biases; `models.tables` holds the numpy forward
that analysis uses, and `reference_logits` the plain per-position forward of the original
code, which tests and benchmarks compare against.

The training forward (`forward`, the registry's contract) computes the answer position only. Its query reads
the '=' token at position 2, the same for every pair; keys and values depend on (token,
position) only, so each head's attention to a, b and '=' and each token's output through a
head, projected onto the MLP's input, are tables of p rows computed once per step. A pair
then costs a softmax over three scores and a sum of 3 x heads rows of d_mlp, instead of
the three positions' full attention, MLP and unembedding (benchmarks/README.md).
"""

from __future__ import annotations

import math

import torch

from mechgrok.models.layout import PARAM_NAMES, param_shapes

WARMUP_STEPS = 10  # the original code's linear learning-rate warm-up


def init_params(
    modulus: int, d_model: int, heads: int, d_mlp: int, seed: int
) -> dict[str, torch.Tensor]:
    """Initialised as the original code does: every matrix N(0, 1) / sqrt(d_model) (the
    unembedding / sqrt(vocabulary)), MLP biases zero; drawn in PARAM_NAMES order from a
    generator seeded by `seed`."""
    gen = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in param_shapes(modulus, d_model, heads, d_mlp).items():
        if name.endswith(("b_in", "b_out")):
            params[name] = torch.zeros(shape)
            continue
        scale = math.sqrt(modulus + 1) if name == "unembed.W_U" else math.sqrt(d_model)
        params[name] = torch.randn(shape, generator=gen) / scale
    return params


def flatten(params: dict[str, torch.Tensor]) -> torch.Tensor:
    """All parameters in one float32 vector, PARAM_NAMES order, C order."""
    return torch.cat([params[name].reshape(-1) for name in PARAM_NAMES])


def unflatten(flat: torch.Tensor, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Views into `flat` laid out as `flatten` writes it (no copy)."""
    views, offset = {}, 0
    for name in PARAM_NAMES:
        size = math.prod(shapes[name])
        views[name] = flat[offset : offset + size].view(shapes[name])
        offset += size
    return views


def forward(params: dict[str, torch.Tensor], a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, p) logits at the answer position for pairs (a, b): the model's exact function,
    computed through per-token tables (module docstring). Differentiable."""
    W_E, W_pos = params["embed.W_E"], params["pos_embed.W_pos"]
    W_Q, W_K, W_V, W_O = (params[f"blocks.0.attn.{n}"] for n in ("W_Q", "W_K", "W_V", "W_O"))
    W_in, b_in = params["blocks.0.mlp.W_in"], params["blocks.0.mlp.b_in"]
    W_out, b_out, W_U = (
        params["blocks.0.mlp.W_out"],
        params["blocks.0.mlp.b_out"],
        params["unembed.W_U"],
    )
    p = W_U.shape[1]
    d_head = W_Q.shape[2]
    resid = (W_E[:p, None, :] + W_pos[None, :2, :], W_E[p] + W_pos[2])  # (p, 2, d), (d,)
    query = torch.einsum("d,hdk->hk", resid[1], W_Q)
    # scores of the '=' query against a (position 0) and b (position 1): (p, 2, h); against '=': (h,)
    keys = torch.einsum("tid,hdk->tihk", resid[0], W_K)
    scores = torch.einsum("tihk,hk->tih", keys, query) / math.sqrt(d_head)
    self_score = torch.einsum("d,hdk,hk->h", resid[1], W_K, query) / math.sqrt(d_head)
    # each head's output for each (token, position), written to the residual stream: (p, 2, h, d)
    outputs = torch.einsum("tid,hdk,hke->tihe", resid[0], W_V, W_O)
    self_output = torch.einsum("d,hdk,hke->he", resid[1], W_V, W_O)
    weights = torch.softmax(
        torch.stack(
            [
                scores[:, 0].index_select(0, a),
                scores[:, 1].index_select(0, b),
                self_score.expand(a.shape[0], -1),
            ],
            -1,
        ),  # (N, h, 3)
        -1,
    )
    # the residual stream at '=' after attention, (N, d), and the MLP's pre-activations
    # (a broadcast product and a sum: einsum would make N tiny matrix products; index_select,
    # whose backward is index_add, not advanced indexing, whose backward accumulates in an order
    # that varies from run to run with more than one thread)
    mixed = (
        (weights[..., 0, None] * outputs[:, 0].index_select(0, a)).sum(1)
        + (weights[..., 1, None] * outputs[:, 1].index_select(0, b)).sum(1)
        + weights[..., 2] @ self_output
        + resid[1]
    )
    hidden = torch.relu(mixed @ W_in + b_in)
    return (mixed + hidden @ W_out + b_out) @ W_U


def reference_logits(params: dict[str, torch.Tensor], tokens: torch.Tensor) -> torch.Tensor:
    """(N, n_ctx, p) logits at every position of token sequences (N, n_ctx), computed as the
    original code's modules do (einsums over the whole sequence, a causal mask, the MLP and
    unembedding at each position), which `forward` is checked and timed against."""
    W_Q, W_K, W_V, W_O = (params[f"blocks.0.attn.{n}"] for n in ("W_Q", "W_K", "W_V", "W_O"))
    n_ctx = tokens.shape[1]
    x = params["embed.W_E"][tokens] + params["pos_embed.W_pos"][:n_ctx]
    q = torch.einsum("npd,hdk->nhpk", x, W_Q)
    k = torch.einsum("npd,hdk->nhpk", x, W_K)
    v = torch.einsum("npd,hdk->nhpk", x, W_V)
    scores = torch.einsum("nhqk,nhsk->nhqs", q, k) / math.sqrt(W_Q.shape[2])
    mask = torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool))
    pattern = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)
    z = torch.einsum("nhqs,nhsk->nhqk", pattern, v)
    x = x + torch.einsum("nhqk,hke->nqe", z, W_O)
    hidden = torch.relu(x @ params["blocks.0.mlp.W_in"] + params["blocks.0.mlp.b_in"])
    x = x + hidden @ params["blocks.0.mlp.W_out"] + params["blocks.0.mlp.b_out"]
    return x @ params["unembed.W_U"]
