"""Recording: train runs and stream their snapshots into trajectory files (train -> file)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from mechgrok.config import TRANSFORMER_DEFAULTS, RunConfig, check_fits_in_memory
from mechgrok.errors import ResumeError
from mechgrok.operations import operands
from mechgrok.recording.allocator import keep_freed_memory
from mechgrok.recording.schedule import SnapshotSchedule
from mechgrok.recording.stopping import earliest_stop_on_file, is_complete
from mechgrok.recording.threads import choose_threads, torch_threads, training_flop_per_step
from mechgrok.recording.train import (
    ProgressCallback,
    Snapshot,
    append_snapshot,
    initial_state,
    state_from_saved,
    train_ensemble,
)
from mechgrok.recording.transformer import (
    append_transformer_snapshot,
    initial_transformer_state,
    train_transformer,
    transformer_state_from_saved,
)
from mechgrok.store.outputs import check_output, check_room
from mechgrok.store.reader import read_config, recorded_progress, run_state
from mechgrok.store.writer import TrajectoryWriter, config_model_floats, trajectory_bytes
from mechgrok.task import make_task, train_pairs_per_class

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
    if config.operation != "add" or config.activation != "relu":  # named when not the paper's
        name = f"{config.operation}_{config.activation}_{name}"
    if config.precision != "fp32":
        name += f"_{config.precision}"
    if config.model != "mlp":
        name = f"{config.model}_{name}"
    named = {
        "modulus",
        "width",
        "train_frac",
        "noise",
        "seed",
        "operation",
        "activation",
        "precision",
        "model",
        *RESUMABLE_CHANGES,
    }
    model_defaults: dict = TRANSFORMER_DEFAULTS if config.model == "transformer" else {}
    default = RunConfig(device=config.device, model=config.model, **model_defaults)
    extra = {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if f.name not in named
        and f.name != "device"
        and getattr(config, f.name) != getattr(default, f.name)
    }
    if extra:
        name += "_" + hashlib.sha1(repr(sorted(extra.items())).encode()).hexdigest()[:8]
    return name + ".h5"


def config_differences(recorded: RunConfig, requested: RunConfig) -> list[str]:
    """Fields (other than RESUMABLE_CHANGES and device) on which two configs disagree."""
    return [
        f"{f.name} {getattr(recorded, f.name)!r} on file, {getattr(requested, f.name)!r} asked"
        for f in dataclasses.fields(RunConfig)
        if f.name not in RESUMABLE_CHANGES + ("device",)
        and getattr(recorded, f.name) != getattr(requested, f.name)
    ]


def check_resume_options(path: Path, recorded: RunConfig, requested: RunConfig) -> None:
    """Refuse (ResumeError, file untouched) to resume `path` with options that differ in
    anything but the step cap and stopping rule, or whose stopping rule would have ended the
    run before the last snapshot on file (stopping.earliest_stop_on_file). Other earlier
    stops show up when the resume retrains from its checkpoint; `record_runs` refuses those too."""
    differences = config_differences(recorded, requested)
    if differences:
        raise ResumeError(
            f"{path}: cannot resume with a different config ({'; '.join(differences)})",
            remedy="use {force} to re-record it, or give {out}",
        )
    progress = recorded_progress(path)
    stop = earliest_stop_on_file(requested, progress)
    if stop is not None:
        step, option = stop
        value, last = getattr(requested, option), progress.last_step
        consequence = (
            f"is below the last step on file ({last:,})"
            if option == "steps"
            else f"would have stopped the run at step {step:,}, before the last step on file ({last:,})"
        )
        raise ResumeError(
            f"{path}: {{{option}}} {value:g} {consequence}; the file is unchanged",
            remedy="use {force} to re-record it",
        )


def projected_trajectory_bytes(config: RunConfig, last_step: int = -1) -> tuple[int, int]:
    """(bytes, snapshots) a run's trajectory grows by from `last_step` on (-1: a new file) if
    it runs to its step cap: its schedule's snapshots after `last_step` plus the saturation one."""
    n = SnapshotSchedule(config).count_after(last_step) + 1
    n_train = (
        train_pairs_per_class(config.modulus, config.train_frac, config.operation)
        * operands(config.operation, config.modulus).size
    )
    fresh = last_step < 0
    size = trajectory_bytes(
        config.modulus,
        config.width,
        n,
        n_train if fresh else 0,
        resumable=fresh,
        model_floats=config_model_floats(config),
    )
    return size, n


def check_room_for_runs(
    configs: list[RunConfig], outs: list[Path], last_steps: list[int] | None = None
) -> None:
    """Refuse, before any file is touched, runs whose trajectories would not fit on the disk
    of their folder (or under the file-size limit) if each ran to its step cap; a resumed run
    counts only what it would still add (`last_steps`: the last step on file, -1 for new)."""
    if not configs:
        return
    projections = [
        projected_trajectory_bytes(config, last)
        for config, last in zip(configs, last_steps or [-1] * len(configs))
    ]
    total = sum(size for size, _ in projections)
    most = max(n for _, n in projections)
    cap = max(c.steps for c in configs)
    what = (
        f"{len(configs)} runs (up to {most:,} snapshots each, to step {cap:,})"
        if len(configs) > 1
        else f"the run (up to {most:,} snapshots, to its step cap {cap:,})"
    )
    check_room(outs[0].parent, total, max(size for size, _ in projections), what)


def record_runs(
    configs: list[RunConfig],
    outs: list[Path],
    resume: bool = False,
    force: bool = False,
    on_step: ProgressCallback | None = None,
    compression: bool = False,
    threads: int | None = None,
    space_check: bool = True,
) -> list[Path]:
    """Record runs that can share one batched ensemble into `outs` (one file each).

    resume: continue files that exist (an unfinished one from its latest checkpoint; a
    complete one is left as it is) and start the others. force: replace existing
    trajectories (each new file replaces its old one once its first snapshot is on disk).
    Neither: an existing file is an error. Every option and output is checked before any
    file is touched. `compression`: deflate the weights of new files. `threads`: torch threads
    for training (default: threads.choose_threads from the step's size and the free cores).
    `space_check`: refuse runs whose trajectories, if they ran to their step cap, would not
    fit on the disk (check_room_for_runs). Training keeps freed memory for reuse for the
    rest of the process (allocator.py)."""
    outs = [Path(out) for out in outs]
    if configs:
        check_fits_in_memory(configs[0], len(configs))
    plans = []
    for config, out in zip(configs, outs):
        if resume and out.exists():
            check_resume_options(out, read_config(out), config)
            plans.append("skip" if is_complete(recorded_progress(out), config) else "resume")
        else:
            check_output(out, "trajectory", force=force)
            plans.append("create")
    if space_check:
        todo = [i for i, plan in enumerate(plans) if plan != "skip"]
        check_room_for_runs(
            [configs[i] for i in todo],
            [outs[i] for i in todo],
            [recorded_progress(outs[i]).last_step if plans[i] == "resume" else -1 for i in todo],
        )
    writers, states, active_configs = [], [], []
    try:
        for config, out, plan in zip(configs, outs, plans):
            if plan == "skip":
                continue
            if plan == "resume":
                writer, saved = TrajectoryWriter.reopen(out)
                state = None if saved is None else _state_from_saved(saved, config)
                writer.update_config(config)
            else:
                task = make_task(
                    config.modulus, config.train_frac, config.noise, config.seed, config.operation
                )
                writer = TrajectoryWriter.create(
                    out, config, task, force=force, compression=compression
                )
                state = None
            writers.append(writer)
            states.append(state)
            active_configs.append(config)
        if writers:
            start = [
                s if s is not None else _initial_state(c) for s, c in zip(states, active_configs)
            ]
            last_checkpoint = [-float("inf")] * len(writers)
            first = active_configs[0]
            n_train = (
                train_pairs_per_class(first.modulus, first.train_frac, first.operation)
                * operands(first.operation, first.modulus).size
            )
            count = choose_threads(
                training_flop_per_step(first.modulus, first.width, n_train, len(writers)), threads
            )
            keep_freed_memory()
            with torch_threads(count):
                _train_into(writers, active_configs, start, last_checkpoint, on_step)
    finally:
        errors = []
        for writer in writers:
            try:
                writer.close()
            except OSError as err:
                errors.append(err)
        if errors and sys.exc_info()[0] is None:
            raise errors[0]
    return outs


def _train_into(
    writers: list,
    configs: list[RunConfig],
    start: list,
    last_checkpoint: list[float],
    on_step: ProgressCallback | None,
) -> None:
    """Train the ensemble and append each snapshot to its run's writer (checkpoints at the
    saturation and final snapshots and at most every CHECKPOINT_SECONDS)."""
    transformer = configs[0].model == "transformer"
    for snapshot in _snapshots(configs, start, on_step):
        writer = writers[snapshot.run]
        if (
            snapshot.step <= writer.last_step
        ):  # regenerated after resuming from an earlier checkpoint
            if snapshot.is_final:
                _end_resumed_run(writer, snapshot)
            continue
        now = time.monotonic()
        checkpoint = (
            snapshot.is_saturation
            or snapshot.is_final
            or now - last_checkpoint[snapshot.run] >= CHECKPOINT_SECONDS
        )
        if checkpoint:
            last_checkpoint[snapshot.run] = now
        (append_transformer_snapshot if transformer else append_snapshot)(
            writer, snapshot, checkpoint
        )


def _initial_state(config: RunConfig):
    return (
        initial_transformer_state(config)
        if config.model == "transformer"
        else initial_state(config)
    )


def _state_from_saved(saved, config: RunConfig):
    if config.model == "transformer":
        return transformer_state_from_saved(saved, config)
    return state_from_saved(saved, config)


def _snapshots(
    configs: list[RunConfig], start: list, on_step: ProgressCallback | None
) -> Iterator[Snapshot]:
    """The runs' snapshots: MLPs as one batched ensemble; transformers one after another
    (run indices as in `configs`)."""
    if configs[0].model != "transformer":
        yield from train_ensemble(configs, start, on_step=on_step)
        return
    for run, (config, state) in enumerate(zip(configs, start)):

        def report(steps, latest, run=run):
            if on_step is not None:
                on_step({run: steps[0]}, {run: latest[0]} if latest else {})

        for snapshot in train_transformer(config, state, on_step=report):
            yield dataclasses.replace(snapshot, run=run)


def _end_resumed_run(writer: TrajectoryWriter, snapshot: Snapshot) -> None:
    """A resumed run's new stopping rule ends it at a step already on file: true only at the
    last one; earlier would leave snapshots past the final step, so it is refused."""
    if snapshot.step == writer.last_step:
        writer.end_at_last_snapshot(snapshot.step, snapshot.stop_reason)
        return
    raise ResumeError(
        f"{writer.path}: with these options the run stops at step {snapshot.step:,} "
        f"({snapshot.stop_reason}), before the last step on file ({writer.last_step:,}); "
        "the file is unchanged",
        remedy="use {force} to re-record it",
    )


def record(
    config: RunConfig | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    force: bool = False,
    on_step: ProgressCallback | None = None,
    compression: bool = False,
    threads: int | None = None,
    space_check: bool = True,
    **options,
) -> Path:
    """Train one run and write its trajectory; returns the file's path.

    `config` or keyword options (RunConfig fields, e.g. modulus=31, noise=0.1) give the run;
    `out` defaults to trajectories/<default_trajectory_name>; `threads` as in record_runs."""
    config = config if config is not None else RunConfig(**options)
    path = (
        Path(out) if out is not None else DEFAULT_TRAJECTORY_DIR / default_trajectory_name(config)
    )
    return record_runs(
        [config],
        [path],
        resume=resume,
        force=force,
        on_step=on_step,
        compression=compression,
        threads=threads,
        space_check=space_check,
    )[0]


def finish_run(path: str | os.PathLike) -> int:
    """Close an interrupted recording as final at its last committed snapshot, with the stop
    reason "closed by the user" (what a run that was stopped on purpose says). Returns that
    step. Refused in one line for a finished run or one another process is recording."""
    path = Path(path)
    state = run_state(path)
    if state == "finished":
        raise ResumeError(f"{path}: already finished ({recorded_progress(path).final_step:,})")
    writer, _ = TrajectoryWriter.reopen(path)  # FileBusyError while another process records
    try:
        if writer.n_snapshots == 0:
            raise ResumeError(
                f"{path}: no snapshot to close the run at", remedy="use {force} to re-record it"
            )
        writer.finish(f"closed by the user at step {writer.last_step:,}")
        return writer.last_step
    finally:
        writer.close()
