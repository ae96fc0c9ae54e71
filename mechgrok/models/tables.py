"""Activation tables: every hidden neuron's pre-activation over all p^2 input pairs, and what
mechgrok reads from them, in numpy (no torch: the store and analysis use it).

For a model that is not the paper's two-hot MLP (the transformer), a neuron is read through
its table T[a, b]: its *effective curves* are the additive part of the table,
T ~ f(a) + g(b) + c (row and column means, the least-squares fit), stored as W_a = f,
W_b = g and b_in = c, and its direct effect on the answer logits as W_out; `additivity` is the
share of the table's variance over pairs that f(a) + g(b) explains (1 for the two-hot MLP,
whose table is exactly additive). Every measure of the MLP's curves then runs on them
unchanged. `frequency_2d` is Nanda et al.'s per-neuron measure on the post-activation table.
"""

from __future__ import annotations

import math

import numpy as np

from mechgrok.models.activations import activate
from mechgrok.operations import operate


def transformer_tables(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The transformer's (models.transformer) tables over all pairs at the answer position,
    in float64: `pre` (p, p, m) MLP pre-activations, `resid` (p, p, d) the residual stream
    entering the MLP, `attention` (p, p, h, 3) each head's attention to a, b and '='."""
    P = {name: np.asarray(value, np.float64) for name, value in params.items()}
    W_E, W_pos, W_U = P["embed.W_E"], P["pos_embed.W_pos"], P["unembed.W_U"]
    W_Q, W_K, W_V, W_O = (P[f"blocks.0.attn.{n}"] for n in ("W_Q", "W_K", "W_V", "W_O"))
    p = W_U.shape[1]
    scale = 1 / math.sqrt(W_Q.shape[2])
    operand = W_E[:p, None, :] + W_pos[None, :2, :]  # (p, 2, d): token at position 0 or 1
    equals = W_E[p] + W_pos[2]
    query = np.einsum("d,hdk->hk", equals, W_Q, optimize=True)
    scores = np.einsum("tid,hdk,hk->tih", operand, W_K, query, optimize=True) * scale  # (p, 2, h)
    self_score = np.einsum("d,hdk,hk->h", equals, W_K, query, optimize=True) * scale
    outputs = np.einsum("tid,hdk,hke->tihe", operand, W_V, W_O, optimize=True)  # (p, 2, h, d)
    self_output = np.einsum("d,hdk,hke->he", equals, W_V, W_O, optimize=True)
    h = W_Q.shape[0]
    logits = np.empty((p, p, h, 3))
    logits[..., 0] = scores[:, None, 0, :]
    logits[..., 1] = scores[None, :, 1, :]
    logits[..., 2] = self_score
    logits -= logits.max(-1, keepdims=True)
    attention = np.exp(logits)
    attention /= attention.sum(-1, keepdims=True)
    resid = (
        np.einsum("abh,ahe->abe", attention[..., 0], outputs[:, 0], optimize=True)
        + np.einsum("abh,bhe->abe", attention[..., 1], outputs[:, 1], optimize=True)
        + attention[..., 2] @ self_output
        + equals
    )
    pre = resid @ P["blocks.0.mlp.W_in"] + P["blocks.0.mlp.b_in"]
    return {"pre": pre, "resid": resid, "attention": attention}


def transformer_logits(params: dict[str, np.ndarray], tables: dict[str, np.ndarray]) -> np.ndarray:
    """(p, p, p) answer logits of every pair from `transformer_tables`' output."""
    hidden = np.maximum(tables["pre"], 0)
    W_out, b_out = params["blocks.0.mlp.W_out"], params["blocks.0.mlp.b_out"]
    return (tables["resid"] + hidden @ W_out + b_out) @ params["unembed.W_U"]


def additive_part(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(f, g, c, additivity) of tables (p, p, m): f (p, m) and g (p, m) the row and column
    means less the grand mean c (m,), each summing to zero over tokens, and the share of each
    neuron's variance over pairs they explain (1 where a neuron is constant)."""
    c = table.mean((0, 1))
    f = table.mean(1) - c
    g = table.mean(0) - c
    total = ((table - c) ** 2).mean((0, 1))
    residual = ((table - f[:, None] - g[None] - c) ** 2).mean((0, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        additivity = np.where(total > 0, 1 - residual / np.where(total > 0, total, 1), 1.0)
    return f, g, c, additivity


def transformer_curves(
    params: dict[str, np.ndarray], order: np.ndarray | None = None, operation: str = "add"
) -> dict[str, np.ndarray]:
    """The transformer's effective curves in trajectory layout (float32): W_a, W_b (m, p) and
    b_in (m,) from the additive part of the pre-activation table; W_out (m, p) each neuron's
    direct effect on the logits (W_out then W_U); b_out (p,) the MLP bias's effect plus the
    mean over pairs of the path that bypasses the MLP. Also `additivity` (m,), the
    post-activation table's `neuron_freq_2d`/`neuron_freq_share` (m,) and each head's mean
    attention from '=' to a and to b, `attention_a`/`attention_b` (h,), and `all_acc`, the
    whole model's accuracy on all pairs of `operation` (ties credited 1/t). `order`: the
    tokens' order in the operation's group, which the 2D frequency is read in (mul, div)."""
    tables = transformer_tables(params)
    W_U = np.asarray(params["unembed.W_U"], np.float64)
    W_out = np.asarray(params["blocks.0.mlp.W_out"], np.float64) @ W_U
    b_out = np.asarray(params["blocks.0.mlp.b_out"], np.float64) @ W_U + (
        tables["resid"].mean((0, 1)) @ W_U
    )
    out = table_curves(
        tables["pre"],
        np.maximum(tables["pre"], 0),
        W_out,
        b_out,
        transformer_logits(params, tables),
        order,
        operation,
    )
    mean_attention = tables["attention"].mean((0, 1))  # (h, 3)
    out["attention_a"] = mean_attention[:, 0].astype(np.float32)
    out["attention_b"] = mean_attention[:, 1].astype(np.float32)
    return out


def table_curves(
    pre: np.ndarray,
    post: np.ndarray,
    W_out: np.ndarray,
    b_out: np.ndarray,
    logits: np.ndarray,
    order: np.ndarray | None,
    operation: str,
) -> dict[str, np.ndarray]:
    """What a trajectory stores of a model read through its activation tables: from the
    hidden neurons' pre- and post-activation tables (p, p, m), their direct effect on the
    logits W_out (m, p) and the constant b_out (p,), and the model's logits (p, p, p) over all
    pairs: the effective curves, additivity, the 2D frequency and share, and all_acc."""
    f, g, c, additivity = additive_part(pre)
    freq, share = frequency_2d(post, order)
    out = {
        "W_a": f.T,
        "W_b": g.T,
        "b_in": c,
        "W_out": W_out,
        "b_out": b_out,
        "additivity": additivity,
        "neuron_freq_share": share,
    }
    out = {name: np.asarray(value).astype(np.float32) for name, value in out.items()}
    out["neuron_freq_2d"] = freq
    out["all_acc"] = np.float64(_accuracy(logits, operation))
    return out


def mlp_stack_curves(
    layers: list[tuple[np.ndarray, np.ndarray]],
    activation: str = "relu",
    order: np.ndarray | None = None,
    operation: str = "add",
) -> dict[str, np.ndarray]:
    """A two-hot MLP with several hidden layers, read at its last hidden layer: `layers` are
    (weight [out, in], bias [out]) as nn.Linear keeps them, the first on the two-hot input
    [one_hot(a), one_hot(b)] (in = 2p), the last the readout (out = p). Its last hidden
    layer's pre-activation tables give the effective curves (table_curves); W_out is the
    readout's weight, transposed."""
    W = [np.asarray(w, np.float64) for w, _ in layers]
    b = [np.asarray(bias, np.float64) for _, bias in layers]
    p = W[-1].shape[0]
    x = W[0][:, :p].T[:, None, :] + W[0][:, p:].T[None, :, :] + b[0]  # (a, b, neuron)
    for weight, bias in zip(W[1:-1], b[1:-1]):
        x = activate(activation, x) @ weight.T + bias
    post = activate(activation, x.copy())
    logits = post @ W[-1].T + b[-1]
    return table_curves(x, post, W[-1].T, b[-1], logits, order, operation)


def _accuracy(logits: np.ndarray, operation: str) -> float:
    """Accuracy of (p, p, p) logits on every pair the operation defines (mul, div: nonzero
    operands), a tie among t top classes credited 1/t as in training."""
    p = logits.shape[0]
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    defined = np.ones((p, p), bool) if operation in ("add", "sub") else (a > 0) & (b > 0)
    labels = operate(operation, a[defined], b[defined], p)
    rows = logits[defined]
    top = rows == rows.max(-1, keepdims=True)
    return float((top[np.arange(labels.size), labels] / top.sum(-1)).mean())


def fourier_basis(n: int) -> np.ndarray:
    """(n, n) orthonormal real Fourier basis as rows: the constant, then cos and sin of
    2 pi k x / n for k = 1..(n-1)//2, then (n even) the alternation (-1)^x."""
    x = np.arange(n)
    rows = [np.full(n, 1 / math.sqrt(n))]
    for k in range(1, (n - 1) // 2 + 1):
        rows.append(np.cos(2 * np.pi * k * x / n) * math.sqrt(2 / n))
        rows.append(np.sin(2 * np.pi * k * x / n) * math.sqrt(2 / n))
    if n % 2 == 0:
        rows.append(np.cos(np.pi * x) / math.sqrt(n))
    return np.stack(rows)


def frequency_2d(
    post: np.ndarray, order: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Nanda et al.'s per-neuron frequency of post-activation tables (p, p, m): the k whose
    {1, cos, sin}(k a) x {1, cos, sin}(k b) block of the 2D Fourier transform (less the
    constant) holds the largest share of the neuron's variance over pairs, and that share.
    `order`: the tokens' order in the operation's group (mul, div). Neurons with no variance
    (beyond rounding: dead ReLUs, constant tables) get frequency 0 and share 0. Frequencies are 1..(n-1)//2 (n even: n/2 left out)."""
    if order is not None:
        post = post[np.ix_(order, order)]
    n, m = post.shape[0], post.shape[2]
    basis = fourier_basis(n).astype(post.dtype)
    n_freqs = (n - 1) // 2
    # only each frequency's own 3 x 3 block of the 2D transform is needed: transform a, then
    # contract b with that block's three basis rows (n^3 m / 2 instead of 2 n^3 m); the total
    # variance comes from Parseval (the table's squares less its constant's)
    rows = np.tensordot(basis, post, axes=(1, 0))  # (basis row over a, b, neuron)
    blocks = np.array([[0, 2 * k - 1, 2 * k] for k in range(1, n_freqs + 1)])
    coefficients = np.einsum("kibm,kjb->kijm", rows[blocks], basis[blocks], optimize=True).astype(
        np.float64
    )  # (frequency, 3, 3, neuron)
    energy = coefficients**2
    constant = energy[0, 0, 0].copy()
    energy[:, 0, 0] = 0.0
    shares = energy.sum((1, 2))  # (frequency, neuron)
    total = np.square(post, dtype=np.float64).sum((0, 1)) - constant
    # a constant table's variance is rounding: relative to its size, ~1e-7 in float32
    live = total > (1e-6 if post.dtype == np.float32 else 1e-12) * (total + constant)
    best = shares.argmax(0)
    share = np.where(live, shares[best, np.arange(m)] / np.where(live, total, 1), 0.0)
    return np.where(live, best + 1, 0).astype(np.int64), share
