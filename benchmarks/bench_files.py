"""File costs of the reliability rules, measured as ratios in one invocation.

  python benchmarks/bench_files.py [--steps 1000] [--every 10] [--repeats 3]

1. Recording with `--compress` (deflate + shuffle on the weights) against without: time and
   file size, runs alternated (medians).
2. The analysis file: deflate + shuffle (what mechgrok writes) against uncompressed.
3. Reading every weight of a trajectory through a Python file object (how mechgrok opens
   files, so HDF5 never shares a stale view) against HDF5's own file driver.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import xarray as xr

import mechgrok
from mechgrok.analysis.pipeline import COMPRESSION
from mechgrok.config import RunConfig


def record_seconds(config: RunConfig, out: Path, compression: bool) -> float:
    started = time.perf_counter()
    mechgrok.record(config, out=out, compression=compression)
    return time.perf_counter() - started


def read_seconds(path: Path, through_file_object: bool) -> float:
    started = time.perf_counter()
    if through_file_object:
        with open(path, "rb") as handle, h5py.File(handle, "r") as f:
            arrays = [f[name][:] for name in ("W_a", "W_b", "W_out")]
    else:
        with h5py.File(path, "r", locking=False) as f:
            arrays = [f[name][:] for name in ("W_a", "W_b", "W_out")]
    assert all(np.isfinite(a).all() for a in arrays)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = RunConfig(train_frac=0.5, steps=args.steps, every=args.every, stop_val_acc=1.0)
    folder = Path(tempfile.mkdtemp(prefix="bench_files_"))

    plain, packed = [], []
    for repeat in range(args.repeats):
        for compression, times in ((False, plain), (True, packed)):
            out = folder / f"run_{compression}_{repeat}.h5"
            times.append(record_seconds(config, out, compression))
    size_plain = (folder / "run_False_0.h5").stat().st_size
    size_packed = (folder / "run_True_0.h5").stat().st_size
    n_snapshots = mechgrok.open_trajectory(folder / "run_False_0.h5").sizes["step"]
    print(
        f"recording p = {config.modulus}, width {config.width}, {args.steps} steps, every {args.every} "
        f"({n_snapshots} snapshots), {args.repeats} repeats alternated:"
    )
    print(f"  uncompressed {statistics.median(plain):.2f} s, {size_plain / 1e6:.1f} MB")
    print(f"  --compress   {statistics.median(packed):.2f} s, {size_packed / 1e6:.1f} MB")
    print(
        f"  time ratio {statistics.median(packed) / statistics.median(plain):.3f}x, size {size_packed / size_plain:.1%}"
    )

    result = mechgrok.analyze(folder / "run_False_0.h5")
    loaded = result.load().drop_encoding()
    loaded.to_netcdf(folder / "plain.analysis.h5", engine="h5netcdf")
    loaded.to_netcdf(
        folder / "packed.analysis.h5",
        engine="h5netcdf",
        encoding={name: COMPRESSION for name in loaded.data_vars},
    )
    a, b = (
        (folder / "plain.analysis.h5").stat().st_size,
        (folder / "packed.analysis.h5").stat().st_size,
    )
    print(
        f"analysis file: uncompressed {a / 1e6:.2f} MB, deflate + shuffle {b / 1e6:.2f} MB ({1 - b / a:.0%} smaller)"
    )
    with xr.open_dataset(folder / "packed.analysis.h5", engine="h5netcdf") as back:
        assert back.equals(xr.open_dataset(folder / "plain.analysis.h5", engine="h5netcdf"))

    path = folder / "run_False_0.h5"
    through_driver, through_object = [], []
    for _ in range(args.repeats):
        through_driver.append(read_seconds(path, False))
        through_object.append(read_seconds(path, True))
    print(
        f"reading all weights ({size_plain / 1e6:.1f} MB): HDF5 driver {statistics.median(through_driver) * 1e3:.0f} ms, "
        f"file object {statistics.median(through_object) * 1e3:.0f} ms "
        f"({statistics.median(through_object) / statistics.median(through_driver):.2f}x)"
    )


if __name__ == "__main__":
    main()
