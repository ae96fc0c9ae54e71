"""Recording under contention: the same recording quiet and beside a CPU-bound competitor
process, with torch's default threads (one per core) and with mechgrok's choice
(mechgrok.recording.threads), each in a fresh process, in one invocation.

  python benchmarks/bench_threads.py [--modulus 23 --width 32 --steps 300] [--repeats 3]

Check `uptime` first: the 'quiet' rows assume nothing else runs.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time

RECORD = """
import sys, time, torch, mechgrok
threads = sys.argv[5]
t = time.perf_counter()
mechgrok.record(modulus=int(sys.argv[1]), width=int(sys.argv[2]), train_frac=0.5, steps=int(sys.argv[3]),
                stop_val_acc=None, per_decade=20, out=sys.argv[4], force=True,
                threads=torch.get_num_threads() if threads == "default" else None)
print(time.perf_counter() - t)
"""


def _spin(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def _timed(args, folder: str, threads: str) -> float:
    out = os.path.join(folder, f"run_{threads}.h5")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            RECORD,
            str(args.modulus),
            str(args.width),
            str(args.steps),
            out,
            threads,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(proc.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modulus", type=int, default=23)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; p = {args.modulus}, width {args.width}, {args.steps} steps"
    )
    results: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for condition in ("quiet", "beside a busy process"):
            stop = multiprocessing.Event()
            competitor = None
            if condition != "quiet":
                competitor = multiprocessing.Process(target=_spin, args=(stop,))
                competitor.start()
                time.sleep(1.0)
            try:
                for _ in range(args.repeats):
                    for threads in ("default", "chosen"):
                        results.setdefault((condition, threads), []).append(
                            _timed(args, folder, threads)
                        )
            finally:
                if competitor is not None:
                    stop.set()
                    competitor.join()
    for (condition, threads), values in results.items():
        label = "torch default threads" if threads == "default" else "mechgrok's choice"
        print(
            f"{condition:22s} {label:22s} median {statistics.median(values):6.2f} s  (runs: {', '.join(f'{v:.2f}' for v in values)})"
        )
    for threads in ("default", "chosen"):
        ratio = statistics.median(results[("beside a busy process", threads)]) / statistics.median(
            results[("quiet", threads)]
        )
        print(f"slowdown beside a busy process, {threads}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
