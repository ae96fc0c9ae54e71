"""The paper's MLP in batched (ensemble) form: every tensor carries a leading model
dimension M, so one run is an ensemble of one. Forward and the activations' derivatives;
training lives in train.py.

Neuron i of model m reads W_a[m, a, i] + W_b[m, b, i] + b_in[m, 0, i] (the two-hot input
realised as two rows of one table summed per pair), applies the activation (ReLU in the
paper; config.ACTIVATIONS, defined as in activations.py) and writes logits h @ W_out[m] + b_out[m].
Shapes: W_a, W_b (M, p, H); b_in (M, 1, H); W_out (M, H, p); b_out (M, 1, p).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

PARAM_NAMES = ("W_a", "W_b", "b_in", "W_out", "b_out")


@dataclass
class MLPParams:
    """Stacked parameters of M models (see module docstring for shapes). Without biases,
    b_in and b_out are zero tensors that training never changes."""

    W_a: torch.Tensor
    W_b: torch.Tensor
    b_in: torch.Tensor
    W_out: torch.Tensor
    b_out: torch.Tensor

    def tensors(self) -> list[torch.Tensor]:
        return [getattr(self, name) for name in PARAM_NAMES]

    @property
    def n_models(self) -> int:
        return self.W_a.shape[0]

    def flat(self) -> torch.Tensor:
        """All parameters of each model in one row: (M, P), PARAM_NAMES order, C order."""
        return torch.cat([t.reshape(t.shape[0], -1) for t in self.tensors()], 1)

    @staticmethod
    def from_flat(flat: torch.Tensor, modulus: int, width: int) -> MLPParams:
        """Views into an (M, P) buffer laid out as `flat()` writes it (no copy)."""
        p, H = modulus, width
        shapes = [(p, H), (p, H), (1, H), (H, p), (1, p)]
        views, offset = [], 0
        for shape in shapes:
            size = shape[0] * shape[1]
            views.append(flat[:, offset : offset + size].view(flat.shape[0], *shape))
            offset += size
        return MLPParams(*views)


def init_params(modulus: int, width: int, seed: int, bias: bool = True) -> MLPParams:
    """One model initialised as PyTorch's default nn.Linear does for the paper's layers:
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases, fan_in = 2p for the first
    layer (two-hot input) and H for the output layer. Drawn from a generator seeded by `seed`
    in the order W_in, b_in, W_out, b_out, so a model does not depend on its ensemble."""
    gen = torch.Generator().manual_seed(seed)
    p, H = modulus, width
    bound_in, bound_out = 1.0 / math.sqrt(2 * p), 1.0 / math.sqrt(H)

    def uniform(shape: tuple[int, ...], bound: float) -> torch.Tensor:
        return (torch.rand(shape, generator=gen, dtype=torch.float32) * 2 - 1) * bound

    W_in = uniform((2 * p, H), bound_in)  # rows 0..p-1: token a, rows p..2p-1: token b
    b_in = uniform((1, H), bound_in)
    W_out = uniform((H, p), bound_out)
    b_out = uniform((1, p), bound_out)
    if not bias:
        b_in, b_out = torch.zeros_like(b_in), torch.zeros_like(b_out)
    return MLPParams(W_in[:p][None], W_in[p:][None], b_in[None], W_out[None], b_out[None])


def pair_rows(a: torch.Tensor, b: torch.Tensor, modulus: int) -> torch.Tensor:
    """(M, N) residues a and b -> (M*N, 2) row indices into the (M*2p, H) input table that
    `input_table` builds: model m's rows for token a at m*2p + a, for token b at m*2p + p + b."""
    offsets = torch.arange(a.shape[0], device=a.device)[:, None] * (2 * modulus)
    return torch.stack([a + offsets, b + offsets + modulus], -1).reshape(-1, 2)


def input_table(params: MLPParams) -> torch.Tensor:
    """(M*2p, H): each model's W_a rows with b_in added (one small add instead of one over
    all pairs), then its W_b rows; the rows `pair_rows` indexes."""
    M, p, H = params.W_a.shape
    return torch.cat([params.W_a + params.b_in, params.W_b], 1).reshape(M * 2 * p, H)


def hidden_preactivation(params: MLPParams, rows: torch.Tensor) -> torch.Tensor:
    """W_a[a] + W_b[b] + b_in as (M, N, H), for `pair_rows` indices: each pair's two rows
    summed by one embedding_bag pass (bit-identical to two gathers and an add, 30% faster)."""
    M, _, H = params.W_a.shape
    return torch.nn.functional.embedding_bag(rows, input_table(params), mode="sum").view(M, -1, H)


def logits_from_hidden(params: MLPParams, hidden: torch.Tensor) -> torch.Tensor:
    """(M, N, H) hidden outputs -> (M, N, p) logits."""
    return torch.bmm(hidden, params.W_out).add_(params.b_out)


def activate(name: str, pre: torch.Tensor) -> torch.Tensor:
    """The hidden layer's output for pre-activations `pre`. ReLU works in place (the
    pre-activations are not needed again: its derivative reads the output); the others
    return a new tensor and leave `pre` for `activation_backward`."""
    if name == "relu":
        return pre.clamp_min_(0)
    if name == "gelu":
        return torch.nn.functional.gelu(pre)
    if name == "silu":
        return torch.nn.functional.silu(pre)
    if name == "quadratic":
        return pre * pre
    if name == "identity":
        return pre
    raise ValueError(f"unknown activation {name!r}")


def activation_backward(
    name: str, d_hidden: torch.Tensor, pre: torch.Tensor, hidden: torch.Tensor
) -> torch.Tensor:
    """d loss / d pre from d loss / d hidden, written over d_hidden where the activation
    allows. For ReLU `pre` is the same tensor as `hidden` (activated in place): hidden > 0
    exactly where pre > 0. In place matters: a fresh (N, H) result costs twice the masking."""
    if name == "relu":
        return torch.ops.aten.threshold_backward.grad_input(
            d_hidden, hidden, 0, grad_input=d_hidden
        )
    if name == "gelu":  # x Phi(x): Phi(x) + x phi(x)
        cdf = 0.5 * (1 + torch.erf(pre * (1 / math.sqrt(2))))
        pdf = torch.exp(-0.5 * pre * pre) * (1 / math.sqrt(2 * math.pi))
        return d_hidden.mul_(cdf.add_(pre * pdf))
    if name == "silu":  # x s(x): s(x) (1 + x (1 - s(x)))
        sigmoid = torch.sigmoid(pre)
        return d_hidden.mul_(sigmoid * (1 + pre * (1 - sigmoid)))
    if name == "quadratic":
        return d_hidden.mul_(2 * pre)
    if name == "identity":
        return d_hidden
    raise ValueError(f"unknown activation {name!r}")


def forward(params: MLPParams, rows: torch.Tensor, activation: str = "relu") -> torch.Tensor:
    """Logits (M, N, p) for pair indices from `pair_rows`."""
    return logits_from_hidden(params, activate(activation, hidden_preactivation(params, rows)))
