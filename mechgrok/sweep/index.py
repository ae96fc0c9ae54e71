"""The sweep index (index.json): which trajectory files a sweep folder holds and with which
options. Reading it needs no torch, so analyze and report stay light."""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path

from mechgrok.config import RunConfig
from mechgrok.errors import InputNotFoundError, MechgrokWarning, SweepIndexError
from mechgrok.store.outputs import same_file, write_text

INDEX_NAME = "index.json"


def _index_entry(config: RunConfig, path: Path) -> dict:
    return {
        "path": path.name,
        "config": {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(config).items()
        },
    }


def write_index(folder: Path, configs: list[RunConfig], paths: list[Path]) -> Path:
    """Write `folder`/index.json listing these runs, merged into an index already there (its
    other runs are kept; a run recorded again keeps one entry). Refuses a file at that name
    that is not a mechgrok sweep index."""
    path = folder / INDEX_NAME
    runs = {}
    if path.exists():
        runs = {run["path"]: run for run in _read_index(path)}
    for config, run_path in zip(configs, paths):
        runs[run_path.name] = _index_entry(config, run_path)
    index = {"format": "mechgrok-sweep", "version": 1, "runs": list(runs.values())}
    return write_text(path, json.dumps(index, indent=1), "sweep index", replace_role=True)


def _read_index(index: Path) -> list[dict]:
    """The runs of a sweep index; SweepIndexError for a file that is not one, an index with
    no runs, or a run path that leaves the index's folder."""
    try:
        data = json.loads(index.read_text())
        if data.get("format") != "mechgrok-sweep":
            raise ValueError("format is not 'mechgrok-sweep'")
        runs = list(data["runs"])
        names = [run["path"] for run in runs]
        if not all(isinstance(name, str) for name in names):
            raise ValueError("a run's path is not a string")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
        raise SweepIndexError(f"{index}: not a mechgrok sweep index ({err})") from None
    if not runs:
        raise SweepIndexError(f"{index}: the sweep index lists no runs")
    folder = index.parent.resolve()
    for name in names:
        if Path(name).is_absolute() or (folder / name).resolve().parent != folder:
            raise SweepIndexError(
                f"{index}: run path {name!r} is not a file inside the sweep folder"
            )
    return runs


def resolve_trajectories(paths: list[str | os.PathLike]) -> list[Path]:
    """Expand sweep folders and index files into their trajectory files; other paths pass.
    A file named twice (by two paths, links, or a folder and one of its runs) is kept once,
    with a MechgrokWarning."""
    out: list[Path] = []
    for given in map(Path, paths):
        index = given / INDEX_NAME if given.is_dir() else given
        if index.suffix == ".json" or given.is_dir():
            if not index.exists():
                raise InputNotFoundError(f"{given}: no sweep index ({INDEX_NAME}) found")
            out += [index.parent / run["path"] for run in _read_index(index)]
        else:
            out.append(given)
    unique: list[Path] = []
    for path in out:
        if not any(same_file(path, kept) for kept in unique):
            unique.append(path)
    if len(unique) < len(out):
        warnings.warn(
            f"{len(out) - len(unique)} of {len(out)} inputs name a file given already; each run counts once",
            MechgrokWarning,
            stacklevel=2,
        )
    return unique
