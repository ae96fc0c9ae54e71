"""`mechgrok import` throughput and memory, measured in fresh processes.

  python benchmarks/bench_import.py [--megabytes 700] [--modulus 97] [--width 256]

Saves one checkpoint-list file (TransformerLens-demo layout: `checkpoints` + `checkpoint_epochs`)
of about --megabytes of two-hot MLP state_dicts, then imports it and a tiny one in fresh
processes, reporting snapshots/s, MB/s and the peak resident memory (VmHWM) of each.
Goal (issue 10): extra memory over the tiny import at most 25% of the file size.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

IMPORT = """
import sys, threading, time
from mechgrok.ingest.checkpoints import import_checkpoints

peak_anonymous = [0]
def sample():  # anonymous memory (heap), apart from the file-backed pages of the mmap (page cache)
    while True:
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                peak_anonymous[0] = max(peak_anonymous[0], int(line.split()[1]) * 1024)
        time.sleep(0.005)
threading.Thread(target=sample, daemon=True).start()
started = time.perf_counter()
import_checkpoints(sys.argv[1], sys.argv[2])
seconds = time.perf_counter() - started
time.sleep(0.02)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent
hwm = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(seconds, hwm, peak_anonymous[0])
"""


def save_list_file(path: Path, n: int, p: int, H: int) -> None:
    generator = torch.Generator().manual_seed(0)
    states = [
        {
            "0.weight": torch.randn(H, 2 * p, generator=generator),
            "0.bias": torch.randn(H, generator=generator),
            "2.weight": torch.randn(p, H, generator=generator),
            "2.bias": torch.randn(p, generator=generator),
        }
        for _ in range(n)
    ]
    torch.save({"checkpoints": states, "checkpoint_epochs": list(range(0, 10 * n, 10))}, path)


def import_in_fresh_process(source: Path, out: Path) -> tuple[float, int, int]:
    """(seconds, peak RSS, peak anonymous RSS) of importing `source` in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORT, str(source), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    seconds, peak, anonymous = result.stdout.split()
    return float(seconds), int(peak), int(anonymous)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--megabytes", type=float, default=700)
    parser.add_argument("--modulus", type=int, default=97)
    parser.add_argument("--width", type=int, default=256)
    args = parser.parse_args()
    p, H = args.modulus, args.width
    per_checkpoint = 4 * (3 * p * H + H + p)
    n = max(2, int(args.megabytes * 1e6 / per_checkpoint))
    folder = Path(tempfile.mkdtemp(prefix="bench_import_"))
    big, tiny = folder / "big.pt", folder / "tiny.pt"
    save_list_file(big, n, p, H)
    save_list_file(tiny, 2, p, H)
    size = big.stat().st_size
    _, tiny_peak, tiny_anonymous = import_in_fresh_process(tiny, folder / "tiny.h5")
    seconds, peak, anonymous = import_in_fresh_process(big, folder / "big.h5")
    extra = peak - tiny_peak
    print(f"list file: {n} checkpoints (p = {p}, width {H}), {size / 1e6:.0f} MB")
    print(
        f"import: {seconds:.1f} s, {n / seconds:.0f} snapshots/s, {size / 1e6 / seconds:.0f} MB/s"
    )
    print(
        f"peak RSS {peak / 1e6:.0f} MB vs {tiny_peak / 1e6:.0f} MB for a 2-checkpoint file: "
        f"extra {extra / 1e6:.0f} MB = {extra / size:.0%} of the file (goal <= 25%)"
    )
    print(
        f"of which anonymous (heap) memory: {(anonymous - tiny_anonymous) / 1e6:.0f} MB = "
        f"{(anonymous - tiny_anonymous) / size:.0%} of the file; the rest is the mmap's file-backed pages, "
        "which the kernel can drop"
    )


if __name__ == "__main__":
    main()
