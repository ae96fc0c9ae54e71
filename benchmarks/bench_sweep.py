"""Sweep benchmark (issue: noise and seed sweeps): 8 runs recorded as one batched ensemble
vs the same 8 runs recorded one after another, same configs, written to disk.

Usage: python benchmarks/bench_sweep.py [--runs 8] [--steps 300] [--modulus 97] [--width 256] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from mechgrok.config import RunConfig
from mechgrok.recording.runs import record
from mechgrok.sweep.grid import record_sweep


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--modulus", type=int, default=97)
    parser.add_argument("--width", type=int, default=256)
    args = parser.parse_args()
    noise = [0.0, 0.05, 0.1, 0.2]
    configs = [
        RunConfig(
            modulus=args.modulus,
            width=args.width,
            steps=args.steps,
            stop_val_acc=1.0,
            seed=i // len(noise),
            noise=noise[i % len(noise)],
            device=args.device,
        )
        for i in range(args.runs)
    ]
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        for i, config in enumerate(configs):
            record(config, out=folder / "alone" / f"{i}.h5")
        sequential = time.perf_counter() - start
        start = time.perf_counter()
        _, errors = record_sweep(configs, folder / "together")
        ensemble = time.perf_counter() - start
        assert not errors, errors
    print(
        f"device {args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else f'CPU, {torch.get_num_threads()} threads'}), "
        f"p={args.modulus}, width {args.width}, 30% split, {args.runs} runs x {args.steps} steps, default log snapshot schedule"
    )
    print(
        f"one after another: {sequential:.1f} s; one batched ensemble: {ensemble:.1f} s; "
        f"ensemble/sequential = {ensemble / sequential:.2f} (speed-up {sequential / ensemble:.2f}x)"
    )


if __name__ == "__main__":
    main()
