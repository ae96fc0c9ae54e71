"""Analysis benchmarks (issue: mechgrok analyze).

  demo      record the quick-start demo run, then analyze it: analysis time / recording time
  loop      vectorized analysis vs a per-snapshot, per-neuron numpy loop on the same snapshots
  memory    peak memory of analyzing a synthetic trajectory of --gigabytes (default 2) GB
  compare   analysis time per snapshot of this checkout against --before REV (a git revision,
            checked out into a temporary worktree), alternated in fresh processes on the same
            trajectory (--trajectory, or a 3,000-step run at the paper's setting), --repeats each

Usage: python benchmarks/bench_analyze.py demo|loop|memory|compare [--trajectory PATH] [--gigabytes 2]
       [--before REV] [--repeats 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from revisions import alternated_outputs

import mechgrok
from mechgrok.analysis.idealize import square
from mechgrok.analysis.pipeline import AnalysisParams, analyze_arrays, neuron_structure
from mechgrok.operations import law_labels


def bench_demo(folder: Path) -> None:
    path = folder / "demo.h5"
    start = time.perf_counter()
    mechgrok.record(train_frac=0.5, stop_val_acc=0.99, out=path)
    recording = time.perf_counter() - start
    start = time.perf_counter()
    result = mechgrok.analyze(path, save=False)
    analysis = time.perf_counter() - start
    print(
        f"demo (record --train-frac 0.5 --stop-val-acc 0.99): {result.sizes['step']} snapshots, final step {int(result.step[-1])}"
    )
    print(
        f"recording {recording:.1f} s, analysis {analysis:.1f} s: analysis/recording = {analysis / recording:.2f}"
    )


def _loop_reference(W_a, W_b, W_out, params: AnalysisParams) -> dict:
    """The straightforward implementation: one snapshot, one neuron at a time; idealized
    models accumulated neuron by neuron."""
    p = W_a.shape[-1]
    labels = law_labels(p)
    out = {"ideal_acc": []}
    for s in range(W_a.shape[0]):
        rows = []
        for i in range(W_a.shape[1]):
            rows.append(
                neuron_structure(
                    W_a[s, i][None],
                    W_b[s, i][None],
                    W_out[s, i][None],
                    params.threshold,
                    params.threshold_low,
                )
            )
        logits = np.zeros((p * p, p))
        x = np.arange(p)
        for r in rows:
            k = int(r["freq_a"][0])
            if k == 0:
                continue
            sa = square(2 * np.pi * k * x / p - r["phase_a"][0])
            sb = square(2 * np.pi * k * x / p - r["phase_b"][0])
            h = np.maximum(sa[:, None] + sb[None, :], 0).reshape(-1)
            logits += h[:, None] * np.cos(2 * np.pi * k * x / p - r["phase_out"][0])[None, :]
        out["ideal_acc"].append(float((logits.argmax(-1) == labels).mean()))
    return out


def bench_loop(trajectory: Path | None, folder: Path) -> None:
    if trajectory is None:
        trajectory = mechgrok.record(steps=300, stop_val_acc=1.0, out=folder / "loop.h5")
    ds = mechgrok.open_trajectory(trajectory).isel(step=slice(-8, None))
    W = [ds[name].values.astype(np.float64) for name in ("W_a", "W_b", "W_out")]
    params = AnalysisParams().resolved(ds.sizes["token"])
    analyze_arrays(
        *W, params, real_accuracy=False, steps=ds.step.values
    )  # warm-up: allocations, FFT plans
    start = time.perf_counter()
    fast = analyze_arrays(*W, params, real_accuracy=False, steps=ds.step.values)
    vectorized = time.perf_counter() - start
    start = time.perf_counter()
    slow = _loop_reference(*W, params)
    loop = time.perf_counter() - start
    assert np.allclose(fast["ideal_acc"], slow["ideal_acc"], atol=1e-3), (
        fast["ideal_acc"],
        slow["ideal_acc"],
    )
    n = W[0].shape[0]
    print(
        f"{n} snapshots of p={ds.sizes['token']}, {ds.sizes['neuron']} neurons (same results, checked)"
    )
    print(
        f"vectorized {vectorized / n * 1e3:.0f} ms/snapshot, per-neuron loop {loop / n * 1e3:.0f} ms/snapshot: {loop / vectorized:.1f}x"
    )


def bench_memory(gigabytes: float, folder: Path) -> None:
    """Write a synthetic trajectory of random weights, then analyze it in a child process and
    read that process's peak resident memory."""
    from mechgrok.config import RunConfig
    from mechgrok.recording.train import Snapshot, append_snapshot, initial_state
    from mechgrok.store.writer import TrajectoryWriter
    from mechgrok.task import make_task

    config = RunConfig(steps=10**7, every=1, stop_val_acc=1.0)
    path = folder / "big.h5"
    per_snapshot = 3 * config.width * config.modulus * 4
    n = int(gigabytes * 1e9 / per_snapshot) + 1
    state = initial_state(config)
    rng = np.random.default_rng(0)
    with TrajectoryWriter.create(
        path, config, make_task(config.modulus, config.train_frac, 0, 0)
    ) as writer:
        for step in range(n):
            weights = {
                name: rng.standard_normal(t[0].shape).astype(np.float32) * 0.1
                for name, t in zip(("W_a", "W_b", "b_in", "W_out", "b_out"), state.params.tensors())
            }
            metrics = dict(
                train_loss=1.0, train_acc=0.5, train_acc_true=0.5, val_loss=1.0, val_acc=0.1
            )
            append_snapshot(
                writer, Snapshot(0, step, weights, metrics, state), checkpoint=step == 0
            )
    size = path.stat().st_size
    code = (
        "import resource, time, mechgrok; t = time.perf_counter(); "
        f"mechgrok.analyze({str(path)!r}).close(); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    seconds, peak_kb = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    peak = int(peak_kb) * 1024
    print(
        f"trajectory {size / 1e9:.2f} GB ({n} snapshots); analysis {float(seconds):.0f} s, "
        f"peak RSS {peak / 1e6:.0f} MB = {peak / size:.1%} of the file"
    )


ANALYZE_ONCE = (
    "import sys, time; sys.path.insert(0, sys.argv[1]); import mechgrok; t = time.perf_counter(); "
    "r = mechgrok.analyze(sys.argv[2], save=False); print(time.perf_counter() - t, r.sizes['step'])"
)


def bench_compare(trajectory: Path | None, before: str, repeats: int, folder: Path) -> None:
    """Time `analyze(save=False)` of one trajectory with this checkout and with `before`,
    alternating the two in fresh processes so that load drifts hit both alike."""
    if trajectory is None:
        trajectory = mechgrok.record(steps=3000, stop_val_acc=1.0, out=folder / "compare.h5")
    outputs = alternated_outputs(before, folder, repeats, ANALYZE_ONCE, str(trajectory))
    times = {name: [float(out[0]) for out in runs] for name, runs in outputs.items()}
    n = int(outputs["after"][0][1])
    medians = {name: float(np.median(values)) for name, values in times.items()}
    print(f"{trajectory.name}: {n} snapshots; {repeats} alternated repeats, fresh processes")
    for name, values in times.items():
        print(
            f"  {name:6s} ({before if name == 'before' else 'this checkout'}): median {medians[name]:.2f} s = "
            f"{medians[name] / n * 1e3:.1f} ms/snapshot (runs: {', '.join(f'{v:.2f}' for v in values)})"
        )
    print(f"after / before = {medians['after'] / medians['before']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("which", choices=["demo", "loop", "memory", "compare"])
    parser.add_argument("--trajectory", type=Path, default=None)
    parser.add_argument("--gigabytes", type=float, default=2.0)
    parser.add_argument(
        "--before", default="HEAD~1", help="compare: the git revision to measure against"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        {
            "demo": lambda: bench_demo(Path(tmp)),
            "loop": lambda: bench_loop(args.trajectory, Path(tmp)),
            "memory": lambda: bench_memory(args.gigabytes, Path(tmp)),
            "compare": lambda: bench_compare(
                args.trajectory, args.before, args.repeats, Path(tmp).resolve()
            ),
        }[args.which]()


if __name__ == "__main__":
    main()
