"""Recording benchmarks (issue: mechgrok record).

1. Training speed: mechgrok's trainer vs a reference loop written the way public grokking code
   does it (one-hot inputs through nn.Linear with biases, autograd, full-batch torch AdamW),
   same model, split and steps; FLOP efficiency against torch.mm peak measured in this run.
2. Share of step time spent on the validation evaluations that stopping and snapshots need.
3. Recording overhead: snapshots every 10 steps vs only the mandatory ones, written to disk.

4. With `--before REV`, instead: the trainer of this checkout against that git revision's,
   alternated in fresh processes (benchmarks/revisions.py), at the paper's setting, one run
   or (`--models N`) an ensemble of N runs with noise 0, 0.05, ...

Runs alternate A/B `--repeats` times and report medians, so machine noise hits both sides.
Usage: python benchmarks/bench_record.py [--steps 1000] [--repeats 3] [--device cpu] [--before REV [--models N]]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from revisions import alternated_outputs

import mechgrok.recording.train as train_module
from mechgrok import record
from mechgrok.config import RunConfig
from mechgrok.recording.train import train_ensemble
from mechgrok.task import make_task


def reference_loop_seconds(config: RunConfig) -> float:
    """Public-code style: one-hot (N, 2p) inputs, nn.Linear layers, autograd, torch AdamW;
    validation accuracy every eval_every steps like mechgrok's stopping rule."""
    p, H, device = config.modulus, config.width, torch.device(config.device)
    task = make_task(p, config.train_frac, config.noise, config.seed)

    def two_hot(a, b):
        x = torch.zeros(len(a), 2 * p, device=device)
        x[torch.arange(len(a)), torch.as_tensor(a)] = 1
        x[torch.arange(len(a)), p + torch.as_tensor(b)] = 1
        return x

    torch.manual_seed(config.seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(2 * p, H), torch.nn.ReLU(), torch.nn.Linear(H, p)
    ).to(device)
    opt = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=config.betas
    )
    x_train, y_train = (
        two_hot(task.train_a, task.train_b),
        torch.as_tensor(task.train_label, device=device),
    )
    x_val, y_val = two_hot(task.val_a, task.val_b), torch.as_tensor(task.val_label, device=device)
    _sync(device)
    start = time.perf_counter()
    for step in range(config.steps):
        loss = torch.nn.functional.cross_entropy(model(x_train), y_train)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % config.eval_every == 0:
            with torch.no_grad():
                (model(x_val).argmax(-1) == y_val).float().mean().item()
    _sync(device)
    return time.perf_counter() - start


def mechgrok_seconds(config: RunConfig) -> tuple[float, float]:
    """Wall time of train_ensemble (snapshots made in memory, not written) and the part of it
    spent in validation evaluation."""
    spent = [0.0]
    original = train_module.evaluate

    def timed_evaluate(*args, **kwargs):
        t0 = time.perf_counter()
        out = original(*args, **kwargs)
        _sync(torch.device(config.device))
        spent[0] += time.perf_counter() - t0
        return out

    train_module.evaluate = timed_evaluate
    try:
        start = time.perf_counter()
        for _ in train_ensemble([config]):
            pass
        return time.perf_counter() - start, spent[0]
    finally:
        train_module.evaluate = original


def recording_seconds(config: RunConfig, folder: Path, name: str) -> float:
    start = time.perf_counter()
    record(config, out=folder / name, force=True)
    return time.perf_counter() - start


# argv: root, steps, device, threads, models (seeds 0.., noise 0, 0.05, ... like a noise sweep), folder
TRAIN_ONCE = (
    "import sys, time; sys.path.insert(0, sys.argv[1]); from pathlib import Path; "
    "from mechgrok.config import RunConfig\n"
    "try: from mechgrok.recording.runs import record_runs\n"
    "except ImportError: from mechgrok.recorder import record_runs  # before 0.2.0\n"
    "configs = [RunConfig(steps=int(sys.argv[2]), every=int(sys.argv[2]), stop_val_acc=1.0, device=sys.argv[3], "
    "seed=m, noise=0.05 * m) for m in range(int(sys.argv[5]))]; "
    "outs = [Path(sys.argv[6]) / f'run{m}.h5' for m in range(len(configs))]; t = time.perf_counter(); "
    "record_runs(configs, outs, force=True, threads=int(sys.argv[4])); print(time.perf_counter() - t)"
)


def compare_trainers(
    before: str, steps: int, models: int, repeats: int, device: str, folder: Path
) -> None:
    """Model-steps/s of recording at the paper's setting (an ensemble of `models` runs, as a
    sweep records them, snapshots at the ends only), this checkout against `before`."""
    threads = str(torch.get_num_threads())
    outputs = alternated_outputs(
        before, folder, repeats, TRAIN_ONCE, str(steps), device, threads, str(models), str(folder)
    )
    rates = {
        name: [steps * models / float(out[0]) for out in runs] for name, runs in outputs.items()
    }
    print(
        f"paper setting, {models} model(s), {steps} steps, {threads} threads, device {device}; "
        f"{repeats} alternated repeats, fresh processes"
    )
    for name, values in rates.items():
        print(
            f"  {name:6s} ({before if name == 'before' else 'this checkout'}): median {statistics.median(values):.1f} "
            f"model-steps/s (runs: {', '.join(f'{v:.1f}' for v in values)})"
        )
    print(
        f"after / before speed = {statistics.median(rates['after']) / statistics.median(rates['before']):.3f}"
    )


def mm_peak_gflops(device: torch.device, n: int = 2048) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    _sync(device)
    reps = 10
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--before", default=None, help="compare the trainer with this git revision's instead"
    )
    parser.add_argument("--models", type=int, default=1, help="with --before: runs in the ensemble")
    args = parser.parse_args()
    if args.before is not None:
        with tempfile.TemporaryDirectory() as tmp:
            compare_trainers(
                args.before, args.steps, args.models, args.repeats, args.device, Path(tmp)
            )
        return
    base = RunConfig(
        steps=args.steps, every=args.steps, stop_val_acc=1.0, device=args.device
    )  # paper's setting
    device = torch.device(args.device)
    n_train = make_task(base.modulus, base.train_frac, 0.0, 0).train_a.size
    flop_per_step = 6 * n_train * base.width * base.modulus

    ref, ours, eval_share, dense, sparse = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for _ in range(args.repeats):
            ref.append(reference_loop_seconds(base))
            seconds, in_eval = mechgrok_seconds(base)
            ours.append(seconds)
            eval_share.append(in_eval / seconds)
            sparse.append(recording_seconds(base, folder, "mandatory.h5"))
            dense.append(
                recording_seconds(RunConfig(**{**base.__dict__, "every": 10}), folder, "every10.h5")
            )
    peak = mm_peak_gflops(device)
    ref_rate, our_rate = args.steps / statistics.median(ref), args.steps / statistics.median(ours)
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, device {args.device}, torch {torch.__version__}"
    )
    print(
        f"paper setting: p={base.modulus}, width={base.width}, {n_train} training pairs, {args.steps} steps, medians of {args.repeats}"
    )
    print(f"reference loop (one-hot nn.Linear, autograd, torch AdamW): {ref_rate:7.1f} steps/s")
    print(
        f"mechgrok trainer (eval every {base.eval_every}, in-memory snapshots): {our_rate:7.1f} steps/s  ({our_rate / ref_rate:.2f}x reference)"
    )
    print(f"validation evaluation share of trainer time: {statistics.median(eval_share):.1%}")
    print(
        f"FLOP efficiency: {flop_per_step * our_rate / 1e9:.1f} GFLOP/s of {peak:.1f} GFLOP/s torch.mm peak "
        f"({flop_per_step * our_rate / 1e9 / peak:.0%}); reference {flop_per_step * ref_rate / 1e9 / peak:.0%}"
    )
    print(
        f"recording to disk, mandatory snapshots only: {args.steps / statistics.median(sparse):7.1f} steps/s"
    )
    print(
        f"recording to disk, every 10 steps:          {args.steps / statistics.median(dense):7.1f} steps/s "
        f"(overhead {statistics.median(dense) / statistics.median(sparse):.3f}x)"
    )


if __name__ == "__main__":
    main()
