import os
import subprocess
import sys
from pathlib import Path

import pytest

from mechgrok.config import RunConfig

TINY = dict(modulus=11, width=16, train_frac=0.5, steps=60, every=5)
# groks (validation accuracy > 0.95) in under 1,000 steps, about a second
GROKKING = dict(modulus=23, width=128, train_frac=0.8, lr=1e-2, eval_every=10)


@pytest.fixture
def tiny_config() -> RunConfig:
    return RunConfig(**TINY)


def run_cli(*args: str, cwd: Path | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """Run the real `mechgrok` CLI in a subprocess."""
    env = dict(os.environ, COLUMNS="200")
    proc = subprocess.run([sys.executable, "-m", "mechgrok.cli", *args], capture_output=True, text=True, cwd=cwd, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"mechgrok {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("Error")]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
