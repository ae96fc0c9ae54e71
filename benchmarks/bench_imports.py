"""Start-up costs: `import mechgrok.analysis.pipeline` (must not load torch) and `mechgrok --help`,
each in fresh interpreters, medians of --repeats.

  python benchmarks/bench_imports.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

IMPORT_ANALYSIS = (
    "import time, sys; t = time.perf_counter(); import mechgrok.analysis.pipeline; "
    "print(time.perf_counter() - t, 'torch' in sys.modules)"
)
HELP = (
    "import time, sys; t = time.perf_counter(); sys.argv = ['mechgrok', '--help']\n"
    "from mechgrok.cli import main\n"
    "try:\n    main()\nexcept SystemExit:\n    pass\n"
    "print(time.perf_counter() - t, 'xarray' in sys.modules, 'torch' in sys.modules, file=sys.stderr)"
)


def fresh(code: str, stream: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return getattr(proc, stream).strip().splitlines()[-1].split()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    imports = [fresh(IMPORT_ANALYSIS, "stdout") for _ in range(args.repeats)]
    helps = [fresh(HELP, "stderr") for _ in range(args.repeats)]
    print(
        f"import mechgrok.analysis.pipeline: {statistics.median(float(r[0]) for r in imports):.2f} s, "
        f"torch imported: {imports[0][1]}"
    )
    print(
        f"mechgrok --help: {statistics.median(float(r[0]) for r in helps):.2f} s, "
        f"xarray imported: {helps[0][1]}, torch imported: {helps[0][2]}"
    )


if __name__ == "__main__":
    main()
