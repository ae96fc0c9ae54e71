"""Transformer training speed (issue: transformers): mechgrok's step (answer position only,
per-token tables, autograd, flat AdamW) against a plain PyTorch loop of the same model (the
original code's per-position einsum forward, models.transformer.reference_logits, loss on the
last position, autograd, torch.optim.AdamW), same weights, split and steps; then the snapshot
cost (effective curves from the activation table, and the write) at the same size.

Runs alternate A/B `--repeats` times and report medians (steps/s), in one process.
Usage: python benchmarks/bench_transformer.py [--modulus 113] [--steps 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from mechgrok.models.layout import param_shapes
from mechgrok.models.tables import transformer_curves
from mechgrok.models.transformer import (
    flatten,
    forward,
    init_params,
    reference_logits,
    unflatten,
)
from mechgrok.recording.train import adamw_step
from mechgrok.task import make_task


def mechgrok_steps_per_second(flat, shapes, a, b, labels, steps: int) -> float:
    flat = flat.clone().requires_grad_(True)
    m, v = torch.zeros_like(flat), torch.zeros_like(flat)
    start = time.perf_counter()
    for t in range(1, steps + 1):
        loss = torch.nn.functional.cross_entropy(forward(unflatten(flat, shapes), a, b), labels)
        (grad,) = torch.autograd.grad(loss, flat)
        with torch.no_grad():
            adamw_step(
                flat,
                m,
                v,
                grad,
                1e-3 / (1 - 0.9**t),
                (1 - 0.98**t) ** 0.5,
                1 - 1e-3,
                0.1,
                0.98,
                0.02,
            )
    return steps / (time.perf_counter() - start)


def plain_steps_per_second(flat, shapes, a, b, labels, steps: int) -> float:
    params = {k: v.clone().requires_grad_(True) for k, v in unflatten(flat, shapes).items()}
    optimizer = torch.optim.AdamW(params.values(), lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98))
    p = params["unembed.W_U"].shape[1]
    tokens = torch.stack([a, b, torch.full_like(a, p)], 1)
    start = time.perf_counter()
    for _ in range(steps):
        logits = reference_logits(params, tokens)[:, -1]
        loss = torch.nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--modulus", type=int, default=113)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    p = args.modulus
    shapes = param_shapes(p, 128, 4, 512)
    flat = flatten(init_params(p, 128, 4, 512, seed=0))
    task = make_task(p, 0.3, 0.0, 0)
    a, b, labels = (torch.as_tensor(x) for x in (task.train_a, task.train_b, task.train_label))
    # the two forwards compute the same function
    tokens = torch.stack([a, b, torch.full_like(a, p)], 1)
    params = unflatten(flat, shapes)
    diff = (forward(params, a, b) - reference_logits(params, tokens)[:, -1]).abs().max()
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; p = {p}, {a.numel()} training pairs; "
        f"max |logit difference| {float(diff):.2e}"
    )
    ours, plain = [], []
    for _ in range(args.repeats):
        ours.append(mechgrok_steps_per_second(flat, shapes, a, b, labels, args.steps))
        plain.append(plain_steps_per_second(flat, shapes, a, b, labels, args.steps))
    o, r = statistics.median(ours), statistics.median(plain)
    print(
        f"steps/s: mechgrok {o:.1f}, plain PyTorch loop {r:.1f}, ratio {o / r:.2f}x "
        f"(medians of {args.repeats} x {args.steps} steps)"
    )
    weights = {k: v.numpy() for k, v in params.items()}
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        transformer_curves(weights)
        times.append(time.perf_counter() - start)
    print(
        f"effective curves + table measures per snapshot: {statistics.median(times) * 1e3:.0f} ms "
        f"({np.mean([o]) * statistics.median(times):.1f} steps' time)"
    )


if __name__ == "__main__":
    main()
