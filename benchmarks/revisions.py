"""Benchmarks that compare this checkout with an earlier git revision: the revision is
checked out into a temporary worktree and the two are timed alternately, each in a fresh
process, so that load drifts on a shared machine hit both alike."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

THIS_CHECKOUT = Path(__file__).resolve().parents[1]


def alternated_outputs(
    before: str, folder: Path, repeats: int, script: str, *args: str
) -> dict[str, list[list[str]]]:
    """Run `python -c script ROOT *args` `repeats` times for ROOT = a worktree of `before`
    and ROOT = this checkout, alternating; the script puts ROOT first on sys.path. Returns
    each version's ("before", "after") runs as whitespace-split stdout."""
    worktree = folder / "before"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(worktree), before],
        check=True,
        capture_output=True,
    )
    try:
        versions = {"before": str(worktree), "after": str(THIS_CHECKOUT)}
        outputs: dict[str, list[list[str]]] = {name: [] for name in versions}
        for _ in range(repeats):
            for name, root in versions.items():
                run = subprocess.run(
                    [sys.executable, "-c", script, root, *args],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                outputs[name].append(run.stdout.split())
        return outputs
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(worktree)],
            check=False,
            capture_output=True,
        )
