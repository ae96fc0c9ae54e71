"""Sweeps: grids of runs, grouped into batched ensembles, recorded in-process or on a
dask.distributed cluster, with a small JSON index that analyze and report accept.

A sweep folder holds one trajectory per run (named by `default_trajectory_name`) and
`index.json`: {"format": "mechgrok-sweep", "version": 1, "runs": [{"path": <file name>,
"config": {RunConfig fields}}, ...]} (mechgrok.sweep.index).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import traceback
from pathlib import Path

from mechgrok.config import RunConfig, check_fits_in_memory
from mechgrok.errors import InvalidOptionError, MechgrokError, OutputExistsError
from mechgrok.operations import operands
from mechgrok.recording.runs import check_room_for_runs, default_trajectory_name, record_runs
from mechgrok.recording.stopping import is_complete
from mechgrok.recording.train import ProgressCallback
from mechgrok.store.outputs import check_output
from mechgrok.store.reader import recorded_progress
from mechgrok.sweep.index import write_index
from mechgrok.task import train_pairs_per_class


def expand_grid(options: dict[str, object]) -> list[RunConfig]:
    """One RunConfig per combination of the list-valued options (others, tuples such as
    betas included, are shared), in the order given, the last option varying fastest."""
    names = list(options)
    values = [v if isinstance(v, list) else [v] for v in options.values()]
    return [RunConfig(**dict(zip(names, combo))) for combo in itertools.product(*values)]


def ensemble_key(config: RunConfig) -> tuple:
    """Runs with equal keys train together as one batched ensemble: same tensor shapes (the
    number of training pairs included) and the same activation and precision."""
    n_classes = operands(config.operation, config.modulus).size
    n_train = train_pairs_per_class(config.modulus, config.train_frac, config.operation) * n_classes
    return (
        config.modulus,
        config.width,
        config.bias,
        config.device,
        n_train,
        config.activation,
        config.precision,
        config.model,
        config.d_model,
        config.heads,
    )


def ensemble_groups(configs: list[RunConfig], max_size: int | None = None) -> list[list[int]]:
    """Indices of `configs` grouped by ensemble_key (first appearance order), split into
    groups of at most `max_size`."""
    groups: dict[tuple, list[int]] = {}
    for index, config in enumerate(configs):
        groups.setdefault(ensemble_key(config), []).append(index)
    out = []
    for members in groups.values():
        size = max_size or len(members)
        out += [members[i : i + size] for i in range(0, len(members), size)]
    return out


def check_distinct_names(configs: list[RunConfig], paths: list[Path]) -> None:
    """Raise ValueError when two runs of a grid would share a file: the same options twice,
    or values so close that the file name (which prints them with 6 significant digits)
    cannot tell them apart."""
    seen: dict[Path, RunConfig] = {}
    for config, path in zip(configs, paths):
        if path in seen:
            other = seen[path]
            if other == config:
                raise InvalidOptionError("the grid has duplicate runs (same options twice)")
            differing = [
                f"{f.name} {getattr(other, f.name)!r} and {getattr(config, f.name)!r}"
                for f in dataclasses.fields(config)
                if getattr(other, f.name) != getattr(config, f.name)
            ]
            raise InvalidOptionError(
                f"runs with {'; '.join(differing)} would share the file {path.name}; "
                "use values that differ in their first 6 significant digits"
            )
        seen[path] = config


def default_sweep_folder(configs: list[RunConfig]) -> Path:
    """trajectories/sweep_<runs>runs_<hash of the grid>."""
    import hashlib

    digest = hashlib.sha1(repr([dataclasses.astuple(c) for c in configs]).encode()).hexdigest()[:8]
    return Path("trajectories") / f"sweep_{len(configs)}runs_{digest}"


def _record_group(
    configs: list[RunConfig],
    outs: list[Path],
    resume: bool,
    force: bool,
    compression: bool = False,
    threads: int | None = None,
    on_step: ProgressCallback | None = None,
) -> str | None:
    """Record one ensemble; returns None, or a one-line error (so one failing group never
    stops the others, locally or on a dask worker)."""
    try:
        record_runs(
            configs,
            outs,
            resume=resume,
            force=force,
            on_step=on_step,
            compression=compression,
            threads=threads,
            space_check=False,  # the sweep checked the room for all its runs together
        )
        return None
    except (MechgrokError, OSError) as err:
        text = err.render(cli=True) if isinstance(err, MechgrokError) else str(err)
        return text.splitlines()[0]
    except Exception as err:  # noqa: BLE001 - a worker-side bug: keep the sweep going, report it with its place
        return f"{type(err).__name__}: {err} ({traceback.format_exc(limit=1).splitlines()[-1]})"


def record_sweep(
    configs: list[RunConfig],
    folder: str | os.PathLike,
    resume: bool = False,
    force: bool = False,
    scheduler: str | None = None,
    max_ensemble: int | None = None,
    on_step: ProgressCallback | None = None,
    compression: bool = False,
    threads: int | None = None,
    space_check: bool = True,
) -> tuple[list[Path], list[str]]:
    """Record every config into `folder` (one file each, plus the index), as batched
    ensembles. With `scheduler` (an address or "local") each ensemble is a task on a dask
    cluster whose workers must see `folder`, training with one thread each unless `threads`
    says otherwise (workers share their node's cores). Returns (paths, errors): errors name
    the runs of any ensemble that failed; the other runs' files are complete. `space_check`:
    refuse a sweep whose trajectories together would not fit on the disk (record_runs)."""
    folder = Path(folder)
    paths = [folder / default_trajectory_name(c) for c in configs]
    check_distinct_names(configs, paths)
    if not (resume or force):
        existing = [p for p in paths if p.exists()]
        if existing:
            raise OutputExistsError(
                f"{existing[0]} exists ({len(existing)} of the sweep's files do)",
                remedy="pass {resume} to continue or skip them, or {force} to overwrite",
            )
    if folder.exists() and not folder.is_dir():
        raise OutputExistsError(f"{folder}: a sweep needs a folder, and this is a file")
    for path in paths:  # nothing is written unless every run may be
        if not (resume and path.exists()):
            check_output(path, "trajectory", force=force)
    groups = ensemble_groups(configs, max_ensemble)
    for group in groups:
        check_fits_in_memory(configs[group[0]], len(group))
    if space_check:
        # files that cannot be read are left to their ensemble's error; counted as new here
        progress = {i: recorded_progress(p) for i, p in enumerate(paths) if resume and _readable(p)}
        todo = [
            i
            for i in range(len(configs))
            if not (i in progress and is_complete(progress[i], configs[i]))
        ]
        check_room_for_runs(
            [configs[i] for i in todo],
            [paths[i] for i in todo],
            [progress[i].last_step if i in progress else -1 for i in todo],
        )
    write_index(folder, configs, paths)
    if scheduler is not None and threads is None:
        threads = 1
    arguments = [
        ([configs[i] for i in g], [paths[i] for i in g], resume, force, compression, threads)
        for g in groups
    ]
    if scheduler is None:
        results = [_record_group(*args, on_step=on_step) for args in arguments]
    else:
        from mechgrok.distributed import map_on_cluster

        results = list(map_on_cluster(scheduler, _record_group, arguments))
    errors = []
    for group, error in zip(groups, results):
        if error is not None:
            errors.append(f"runs {', '.join(paths[i].name for i in group)}: {error}")
    return paths, errors


def _readable(path: Path) -> bool:
    """An existing trajectory whose progress can be read (a resume continues it)."""
    try:
        recorded_progress(path)
    except (MechgrokError, OSError):
        return False
    return True
