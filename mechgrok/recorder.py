"""Recording: train runs and stream their snapshots into trajectory files (train -> file)."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path

from .errors import TrajectoryError
from .task import make_task
from .config import RunConfig
from .train import ProgressCallback, initial_state, train_ensemble
from .trajectory import TrajectoryWriter, is_complete, read_config

DEFAULT_TRAJECTORY_DIR = Path("trajectories")
# Options that only decide when to stop or what to keep: a resumed run may change them.
RESUMABLE_CHANGES = ("steps", "stop_val_acc", "patience")
# Optimizer state is written with a snapshot at most this often (and always with the first,
# saturation and final ones): a resume retrains at most this long, dense schedules stay cheap.
CHECKPOINT_SECONDS = 2.0


def default_trajectory_name(config: RunConfig) -> str:
    """File name from the config: modulus, width, split, noise and seed, plus a short hash of
    every other training option that differs from the default (so distinct runs get distinct
    names; the step cap and stopping rule are left out so a resumed run finds its file)."""
    name = f"p{config.modulus}_w{config.width}_tf{config.train_frac:g}_noise{config.noise:g}_seed{config.seed}"
    named = {"modulus", "width", "train_frac", "noise", "seed", *RESUMABLE_CHANGES}
    default = RunConfig(device=config.device)
    extra = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
             if f.name not in named and f.name != "device" and getattr(config, f.name) != getattr(default, f.name)}
    if extra:
        name += "_" + hashlib.sha1(repr(sorted(extra.items())).encode()).hexdigest()[:8]
    return name + ".h5"


def config_differences(recorded: RunConfig, requested: RunConfig) -> list[str]:
    """Fields (other than RESUMABLE_CHANGES and device) on which two configs disagree."""
    return [f"{f.name} {getattr(recorded, f.name)!r} on file, {getattr(requested, f.name)!r} asked"
            for f in dataclasses.fields(RunConfig)
            if f.name not in RESUMABLE_CHANGES + ("device",) and getattr(recorded, f.name) != getattr(requested, f.name)]


def record_runs(configs: list[RunConfig], outs: list[Path], resume: bool = False, force: bool = False,
                on_step: ProgressCallback | None = None) -> list[Path]:
    """Record runs that can share one batched ensemble into `outs` (one file each).

    resume: continue files that exist (an unfinished one from its latest checkpoint; a
    complete one is left as it is) and start the others. force: overwrite existing files. Neither:
    an existing file is an error and nothing is touched."""
    outs = [Path(out) for out in outs]
    writers, states, active_configs = [], [], []
    try:
        for config, out in zip(configs, outs):
            if resume and out.exists():
                differences = config_differences(read_config(out), config)
                if differences:
                    raise TrajectoryError(f"{out}: cannot resume with a different config ({'; '.join(differences)})")
                if is_complete(out, config):
                    continue
                writer, state = TrajectoryWriter.reopen(out)
                writer.update_config(config)
            else:
                writer = TrajectoryWriter.create(out, config, make_task(config.modulus, config.train_frac, config.noise, config.seed), force=force)
                state = None
            writers.append(writer)
            states.append(state)
            active_configs.append(config)
        if writers:
            start = [s if s is not None else initial_state(c) for s, c in zip(states, active_configs)]
            last_checkpoint = [-float("inf")] * len(writers)
            for snapshot in train_ensemble(active_configs, start, on_step=on_step):
                now = time.monotonic()
                checkpoint = (snapshot.is_saturation or snapshot.is_final
                              or now - last_checkpoint[snapshot.run] >= CHECKPOINT_SECONDS)
                if checkpoint:
                    last_checkpoint[snapshot.run] = now
                writers[snapshot.run].append(snapshot, checkpoint=checkpoint)
    finally:
        for writer in writers:
            writer.close()
    return outs


def record(config: RunConfig | None = None, out: str | os.PathLike | None = None, resume: bool = False,
           force: bool = False, on_step: ProgressCallback | None = None, **options) -> Path:
    """Train one run and write its trajectory; returns the file's path.

    `config` or keyword options (RunConfig fields, e.g. modulus=31, noise=0.1) give the run;
    `out` defaults to trajectories/<default_trajectory_name>."""
    config = config if config is not None else RunConfig(**options)
    path = Path(out) if out is not None else DEFAULT_TRAJECTORY_DIR / default_trajectory_name(config)
    return record_runs([config], [path], resume=resume, force=force, on_step=on_step)[0]
