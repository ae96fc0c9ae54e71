"""Transformers built the way the grokking codebases build them, for import tests: Nanda et
al.'s progress-measures modules (transformers.py: same parameter names, shapes, init and
forward einsums; einops.rearrange written as permute + reshape), their loss on the last
position without the '=' class, and the same weights in TransformerLens's layout."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Embed(nn.Module):
    def __init__(self, d_vocab, d_model):
        super().__init__()
        self.W_E = nn.Parameter(torch.randn(d_model, d_vocab) / np.sqrt(d_model))

    def forward(self, x):
        return torch.einsum("dbp -> bpd", self.W_E[:, x])


class Unembed(nn.Module):
    def __init__(self, d_vocab, d_model):
        super().__init__()
        self.W_U = nn.Parameter(torch.randn(d_model, d_vocab) / np.sqrt(d_vocab))

    def forward(self, x):
        return x @ self.W_U


class PosEmbed(nn.Module):
    def __init__(self, max_ctx, d_model):
        super().__init__()
        self.W_pos = nn.Parameter(torch.randn(max_ctx, d_model) / np.sqrt(d_model))

    def forward(self, x):
        return x + self.W_pos[: x.shape[-2]]


class Attention(nn.Module):
    def __init__(self, d_model, num_heads, d_head, n_ctx):
        super().__init__()
        self.W_K = nn.Parameter(torch.randn(num_heads, d_head, d_model) / np.sqrt(d_model))
        self.W_Q = nn.Parameter(torch.randn(num_heads, d_head, d_model) / np.sqrt(d_model))
        self.W_V = nn.Parameter(torch.randn(num_heads, d_head, d_model) / np.sqrt(d_model))
        self.W_O = nn.Parameter(torch.randn(d_model, d_head * num_heads) / np.sqrt(d_model))
        self.register_buffer("mask", torch.tril(torch.ones((n_ctx, n_ctx))))
        self.d_head = d_head

    def forward(self, x):
        k = torch.einsum("ihd,bpd->biph", self.W_K, x)
        q = torch.einsum("ihd,bpd->biph", self.W_Q, x)
        v = torch.einsum("ihd,bpd->biph", self.W_V, x)
        attn_scores_pre = torch.einsum("biph,biqh->biqp", k, q)
        n = x.shape[-2]
        attn_scores_masked = torch.tril(attn_scores_pre) - 1e10 * (1 - self.mask[:n, :n])
        attn_matrix = torch.softmax(attn_scores_masked / np.sqrt(self.d_head), dim=-1)
        z = torch.einsum("biph,biqp->biqh", v, attn_matrix)
        z_flat = z.permute(0, 2, 1, 3).reshape(z.shape[0], z.shape[2], -1)  # b i q h -> b q (i h)
        return torch.einsum("df,bqf->bqd", self.W_O, z_flat)


class MLP(nn.Module):
    def __init__(self, d_model, d_mlp):
        super().__init__()
        self.W_in = nn.Parameter(torch.randn(d_mlp, d_model) / np.sqrt(d_model))
        self.b_in = nn.Parameter(torch.zeros(d_mlp))
        self.W_out = nn.Parameter(torch.randn(d_model, d_mlp) / np.sqrt(d_model))
        self.b_out = nn.Parameter(torch.zeros(d_model))

    def forward(self, x):
        x = torch.relu(torch.einsum("md,bpd->bpm", self.W_in, x) + self.b_in)
        return torch.einsum("dm,bpm->bpd", self.W_out, x) + self.b_out


class TransformerBlock(nn.Module):
    def __init__(self, d_model, d_mlp, d_head, num_heads, n_ctx):
        super().__init__()
        self.attn = Attention(d_model, num_heads, d_head, n_ctx)
        self.mlp = MLP(d_model, d_mlp)

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.mlp(x)


class Transformer(nn.Module):
    def __init__(self, p, d_model=16, num_heads=2, d_mlp=24, num_layers=1, n_ctx=3):
        super().__init__()
        self.embed = Embed(p + 1, d_model)
        self.pos_embed = PosEmbed(n_ctx, d_model)
        self.blocks = nn.ModuleList(
            [
                TransformerBlock(d_model, d_mlp, d_model // num_heads, num_heads, n_ctx)
                for _ in range(num_layers)
            ]
        )
        self.unembed = Unembed(p + 1, d_model)

    def forward(self, x):
        x = self.pos_embed(self.embed(x))
        for block in self.blocks:
            x = block(x)
        return self.unembed(x)


def all_pairs(p):
    return torch.tensor([(i, j, p) for i in range(p) for j in range(p)])


def their_logits(model, p):
    """The model's logits over the p answers for every pair (a, b) in a * p + b order, as
    their loss reads them (last position, '=' class dropped)."""
    with torch.no_grad():
        return model(all_pairs(p))[:, -1, :-1]


def train(p, epochs, seed=0, save_every=5, **sizes):
    """Train with their loop (full batch AdamW, lr 1e-3, wd 1, betas (0.9, 0.98), linear
    warm-up) on 30% of the pairs; returns the model, {epoch: state_dict copy}, the losses and
    the training data as their code keeps it (a list of (a, b, p) triples)."""
    torch.manual_seed(seed)
    model = Transformer(p, **sizes)
    pairs = [(i, j, p) for i in range(p) for j in range(p)]
    order = np.random.default_rng(seed).permutation(len(pairs))
    train_data = [pairs[i] for i in order[: int(0.3 * len(pairs))]]
    test_data = [pairs[i] for i in order[int(0.3 * len(pairs)) :]]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(step / 10, 1))

    def loss_of(data):
        x = torch.tensor(data)
        logits = model(x)[:, -1, :-1]
        return torch.nn.functional.cross_entropy(logits, (x[:, 0] + x[:, 1]) % p)

    states, train_losses, test_losses = {}, [], []
    for epoch in range(epochs):
        train_loss, test_loss = loss_of(train_data), loss_of(test_data)
        train_losses.append(train_loss.item())
        test_losses.append(test_loss.item())
        if epoch % save_every == 0:
            states[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
        train_loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return model, states, train_losses, test_losses, train_data


def to_transformerlens(state):
    """The same weights as TransformerLens's HookedTransformer state_dict holds them."""
    heads, d_head, d_model = state["blocks.0.attn.W_Q"].shape
    vocab = state["embed.W_E"].shape[1]
    out = {
        "embed.W_E": state["embed.W_E"].T.contiguous(),
        "pos_embed.W_pos": state["pos_embed.W_pos"],
        "unembed.W_U": state["unembed.W_U"][:, : vocab - 1].contiguous(),
        "unembed.b_U": torch.zeros(vocab - 1),
        "blocks.0.attn.W_O": state["blocks.0.attn.W_O"].T.reshape(heads, d_head, d_model),
        "blocks.0.attn.b_O": torch.zeros(d_model),
        "blocks.0.attn.mask": torch.tril(torch.ones(3, 3, dtype=torch.bool)),
        "blocks.0.attn.IGNORE": torch.tensor(-1e5),
        "blocks.0.mlp.W_in": state["blocks.0.mlp.W_in"].T.contiguous(),
        "blocks.0.mlp.b_in": state["blocks.0.mlp.b_in"],
        "blocks.0.mlp.W_out": state["blocks.0.mlp.W_out"].T.contiguous(),
        "blocks.0.mlp.b_out": state["blocks.0.mlp.b_out"],
    }
    for name in ("W_Q", "W_K", "W_V"):
        out[f"blocks.0.attn.{name}"] = state[f"blocks.0.attn.{name}"].transpose(1, 2).contiguous()
        out[f"blocks.0.attn.b_{name[-1]}"] = torch.zeros(heads, d_head)
    return out
