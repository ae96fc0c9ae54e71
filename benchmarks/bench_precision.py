"""Mixed precision (issue: fast on a shared machine) and the paper's 19-level noise grid.

  speed     matrix-product peak of this device in fp32 and bf16 (GFLOP/s), then training
            steps/s at the paper's setting (p 97, width 256, 30% split) for one run and for a
            19-run ensemble, fp32 and bf16, with the training GEMMs' GFLOP/s, all in one process
  science   the paper's default run and the README demo run (--train-frac 0.5), each recorded
            in fp32 and in bf16 and analyzed: grok, structure and saturation steps, final
            Sq->Cos, Sq->Sq, Cos->Cos and r' side by side (a table, and JSON with --json)

Usage: python benchmarks/bench_precision.py speed|science [--device cpu|cuda] [--steps N]
       [--folder DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch

import mechgrok
from mechgrok.config import RunConfig
from mechgrok.operations import operands
from mechgrok.recording.threads import choose_threads, torch_threads, training_flop_per_step
from mechgrok.recording.train import train_ensemble
from mechgrok.task import train_pairs_per_class

PAPER_NOISE_LEVELS = 19


def matmul_peak(device: str, dtype: torch.dtype, size: int, repeats: int = 10) -> float:
    """GFLOP/s of a size^3 matrix product on random data (mean of `repeats` after 3 warm-ups)."""
    x = torch.randn(size, size, device=device).to(dtype)
    for _ in range(3):
        x @ x
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        x @ x
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def training_rate(config: RunConfig, n_models: int, steps: int) -> float:
    """Steps/s of an ensemble of `n_models` copies of `config` (seeds 0..n-1) over `steps`
    steps after 20 warm-up steps, snapshots only at the first and last step."""
    configs = [
        dataclasses.replace(
            config, seed=seed, steps=steps + 20, every=steps + 20, stop_val_acc=None
        )
        for seed in range(n_models)
    ]
    started = None
    for snapshot in train_ensemble(configs):
        if snapshot.step == 0 and snapshot.run == n_models - 1:
            _sync(config.device)
            started = time.perf_counter()
    _sync(config.device)
    return steps / (time.perf_counter() - started)


def bench_speed(device: str, steps: int) -> dict:
    size = 8192 if device.startswith("cuda") else 1024
    result = {
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "matmul_size": size,
        "peak_fp32_gflops": matmul_peak(device, torch.float32, size),
        "peak_bf16_gflops": matmul_peak(
            device, torch.bfloat16, size, repeats=10 if device != "cpu" else 2
        ),
    }
    paper = RunConfig(device=device)
    n_train = (
        train_pairs_per_class(paper.modulus, paper.train_frac, paper.operation)
        * operands(paper.operation, paper.modulus).size
    )
    gemm_flop = (
        3 * 2 * n_train * paper.width * paper.modulus
    )  # forward logits, grad W_out, grad hidden
    for n_models in (1, PAPER_NOISE_LEVELS):
        threads = choose_threads(
            training_flop_per_step(paper.modulus, paper.width, n_train, n_models), None
        )
        with torch_threads(threads):
            for precision in ("fp32", "bf16"):
                rate = training_rate(
                    dataclasses.replace(paper, precision=precision), n_models, steps
                )
                result[f"{precision}_x{n_models}_steps_per_s"] = rate
                result[f"{precision}_x{n_models}_gemm_gflops"] = rate * n_models * gemm_flop / 1e9
    return result


def bench_science(device: str, folder: Path) -> dict:
    runs = {
        "paper default": {},
        "demo (--train-frac 0.5)": {"train_frac": 0.5, "stop_val_acc": 0.99},
    }
    table = {}
    for name, options in runs.items():
        for precision in ("fp32", "bf16"):
            config = RunConfig(device=device, precision=precision, **options)
            out = folder / f"{name.split()[0]}_{precision}.h5"
            start = time.perf_counter()
            mechgrok.record(config, out=out)
            seconds = time.perf_counter() - start
            head = mechgrok.analyze(out).mechgrok.headline()
            table[f"{name}, {precision}"] = {
                "record_s": seconds,
                "final_step": head["final_step"],
                "grok_step": head["grok_step"],
                "structure_step": head["structure_step"],
                "saturation_step": head["saturation_step"],
                **{
                    key: head.get(f"{key}_final")
                    for key in (
                        "val_acc",
                        "ideal_acc",
                        "ideal_acc_sq_sq",
                        "ideal_acc_cos_cos",
                        "r_structured",
                        "ideal_acc_shuffled",
                    )
                },
            }
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("which", choices=["speed", "science"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=200, help="speed: timed steps per measurement")
    parser.add_argument(
        "--folder",
        type=Path,
        default=None,
        help="science: where the trajectories go (default: a temporary folder)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if args.which == "speed":
        result = bench_speed(args.device, args.steps)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            folder = args.folder or Path(tmp)
            folder.mkdir(parents=True, exist_ok=True)
            result = bench_science(args.device, folder)
    text = json.dumps(result, indent=1, default=float)
    print(text)
    if args.json is not None:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
