import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ["COLUMNS"] = "200"  # before rich's console reads it: summaries on one line each
# tiny models: one thread each, so that pytest-xdist's workers do not spin-wait on each other's cores
os.environ.setdefault("OMP_NUM_THREADS", "1")

from click.testing import CliRunner  # noqa: E402

from mechgrok.cli import main  # noqa: E402
from mechgrok.config import RunConfig  # noqa: E402

TINY = dict(modulus=11, width=16, train_frac=0.5, steps=60, every=5)
# groks (validation accuracy > 0.95) in under 1,000 steps, about a second
GROKKING = dict(modulus=23, width=128, train_frac=0.8, lr=1e-2, eval_every=10, per_decade=25)


@pytest.fixture
def tiny_config() -> RunConfig:
    return RunConfig(**TINY)


@contextmanager
def chdir(folder):
    """contextlib.chdir for Python 3.10."""
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


@dataclass
class CliResult:
    """What a command left: exit status and its two streams (like subprocess.CompletedProcess)."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, cwd: Path | None = None, check: bool = False) -> CliResult:
    """Run the `mechgrok` CLI in this process (click's CliRunner), from `cwd`."""
    with chdir(cwd or os.getcwd()):
        result = CliRunner().invoke(main, list(args), catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback the user would have seen: fail loudly
    proc = CliResult(result.exit_code, result.stdout, result.stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"mechgrok {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_cli_process(*args: str, cwd: Path | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """Run the real `mechgrok` CLI in a subprocess: for tests that kill it, limit it, or race it."""
    proc = subprocess.run([sys.executable, "-m", "mechgrok.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=dict(os.environ, COLUMNS="200"))
    if check and proc.returncode != 0:
        raise AssertionError(f"mechgrok {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def assert_one_line_error(proc: CliResult | subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("Error")]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
