"""Opening and lazily reading mechgrok's files: its reader (mechgrok/store/netcdf_reader.py, h5py
straight into xarray) against xarray's h5netcdf engine, alternated in one process.

  python benchmarks/bench_open.py TRAJECTORY [--repeats 20]

For the trajectory and its analysis (made next to it if missing): the time to open, and to
open and read one snapshot's W_a (one lazy read), medians of the repeats, and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import xarray as xr

import mechgrok
from mechgrok.analysis.pipeline import default_analysis_path
from mechgrok.store.netcdf_reader import open_netcdf


def _seconds(action, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("trajectory", type=Path)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    analysis = default_analysis_path(args.trajectory)
    if not analysis.exists():
        mechgrok.analyze(args.trajectory)
    readers = {
        "mechgrok": open_netcdf,
        "h5netcdf": lambda path: xr.open_dataset(path, engine="h5netcdf"),
    }

    def open_only(reader, path):
        reader(path).close()

    def open_and_read(reader, path, name):
        with reader(path) as ds:
            _ = ds[name].isel(step=ds.sizes["step"] // 2).values

    for label, path, name in (
        ("trajectory", args.trajectory, "W_a"),
        ("analysis", analysis, "phase_a"),
    ):
        print(f"{label} {path.name}:")
        for task, action in (
            ("open", open_only),
            (
                f"open + read one snapshot of {name}",
                lambda r, p, name=name: open_and_read(r, p, name),
            ),
        ):
            times = {}
            for _ in range(2):  # alternated: load drifts hit both readers alike
                for reader_name, reader in readers.items():
                    times.setdefault(reader_name, []).append(
                        _seconds(lambda a=action, r=reader, p=path: a(r, p), args.repeats // 2)
                    )
            ours, theirs = (statistics.median(times[k]) for k in ("mechgrok", "h5netcdf"))
            print(
                f"  {task:40s} mechgrok {ours * 1e3:6.1f} ms, h5netcdf engine {theirs * 1e3:6.1f} ms: {theirs / ours:.1f}x faster"
            )


if __name__ == "__main__":
    main()
