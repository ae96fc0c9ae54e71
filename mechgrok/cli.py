"""The `mechgrok` command line: parse, validate, call the API, print with rich."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import shlex
import signal
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mechgrok.config import (
    ACTIVATIONS,
    ANALYSIS_DEFAULTS,
    MODELS,
    OPERATIONS,
    PRECISIONS,
    TRANSFORMER_DEFAULTS,
    RunConfig,
)
from mechgrok.paper import NOISE_LEVELS as PAPER_NOISE_LEVELS

console = Console(stderr=True)
DEFAULTS = RunConfig()


def one_line_errors(command):
    """Turn mechgrok's errors (MechgrokError: bad input, files, resources) and the operating
    system's (OSError: permissions, full disks) into click's one-line 'Error: ...' and exit
    status 1, with options spelled as flags: the one place where exceptions become messages.
    Anything else is a bug in mechgrok and keeps its traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from mechgrok.errors import MechgrokError

        # SIGTERM unwinds like Ctrl-C, so outputs written aside are removed (record and
        # import set their own handlers, which say what they kept)
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            raise Interrupted("interrupted; nothing half-written was kept") from None
        except (MechgrokError, OSError) as err:
            from mechgrok.store.outputs import is_write_failure

            if is_write_failure(
                err
            ):  # the process ends with this message: keep h5py's teardown quiet
                sys.unraisablehook = _quiet_after_write_failures
            text = err.render(cli=True) if isinstance(err, MechgrokError) else str(err)
            raise click.ClickException(
                text.splitlines()[0] if text else type(err).__name__
            ) from None
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapper


class OptionValue(click.ParamType):
    """One value of a RunConfig option, checked against config.OPTION_LIMITS (finite floats,
    integers within what a run can use), so click names the option in its one-line error."""

    def __init__(self, option: str, kind: type):
        self.option, self.kind = option, kind
        self.name = kind.__name__

    def convert(self, value, param, ctx):
        from mechgrok.config import OPTION_LIMITS

        try:
            number = (
                self.kind(value)
                if self.kind is float or not isinstance(value, str)
                else int(value.strip())
            )
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a valid {self.name}", param, ctx)
        limit = OPTION_LIMITS[self.option]
        if not limit.admits(number):
            self.fail(
                f"{value!r} is not {limit.describe()}"
                + (" (a finite number)" if self.kind is float else ""),
                param,
                ctx,
            )
        return number


class WordList(click.ParamType):
    """One of `choices`, or a comma-separated list of them (a sweep: --operation add,sub)."""

    def __init__(self, choices: tuple[str, ...]):
        self.choices = choices
        self.name = f"{'|'.join(choices)}[,...]"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        parts = [part.strip() for part in str(value).split(",")]
        unknown = [part for part in parts if part not in self.choices]
        if unknown:
            self.fail(f"{unknown[0]!r} is not one of {', '.join(self.choices)}", param, ctx)
        if len(set(parts)) != len(parts):
            self.fail(f"{value!r} lists a value twice", param, ctx)
        return parts if len(parts) > 1 else parts[0]


class NumberList(click.ParamType):
    """A number, or a comma-separated list of them (a sweep), each checked by `inner`.
    `aliases` maps a word to a list (--noise paper). Empty items and repeated values are refused."""

    def __init__(
        self,
        inner: click.ParamType,
        aliases: dict[str, list] | None = None,
        words: dict[str, object] | None = None,
    ):
        self.inner = inner
        self.aliases = aliases or {}
        self.words = words or {}  # items that stand for a value (--stop-val-acc off)
        self.name = f"{'|'.join([inner.name, *self.words])}[,...]"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        if isinstance(value, str) and value.strip() in self.aliases:
            return list(self.aliases[value.strip()])
        parts = [part.strip() for part in str(value).split(",")]
        if not all(parts):
            self.fail(
                f"expected a number or a comma-separated list without empty items, got {value!r}",
                param,
                ctx,
            )
        values = [
            self.words[part] if part in self.words else self.inner.convert(part, param, ctx)
            for part in parts
        ]
        if len(set(values)) != len(values):
            self.fail(f"{value!r} lists a value twice", param, ctx)
        return values if len(values) > 1 else values[0]


def parse_betas(ctx, param, value: str) -> tuple[float, float]:
    from mechgrok.config import BETA_LIMIT

    try:
        betas = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected two numbers like 0.9,0.98, got {value!r}") from None
    if len(betas) != 2 or not all(BETA_LIMIT.admits(b) for b in betas):
        raise click.BadParameter(
            f"expected two numbers {BETA_LIMIT.describe()} like 0.9,0.98, got {value!r}"
        )
    return betas


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="mechgrok")
def main() -> None:
    """Record, analyze and report how the Fourier algorithm forms in grokking ReLU MLPs."""
    warnings.showwarning = _show_notes


def _show_notes(
    message, category, filename, lineno, file=None, line=None, default=warnings.showwarning
):
    """mechgrok's own warnings as one 'note:' line each; other libraries' as Python shows them."""
    from mechgrok.errors import MechgrokWarning

    if issubclass(category, MechgrokWarning):
        console.print(f"note: {message}", markup=False, highlight=False, soft_wrap=True)
    else:
        default(message, category, filename, lineno, file, line)


def _quiet_after_write_failures(unraisable, default=sys.unraisablehook) -> None:
    """After a failed write has been reported in one line, h5py objects of that file raise
    again as they are freed ("Can't decrement id ref count (file write failed ...)"): not news."""
    from mechgrok.store.outputs import is_write_failure

    if unraisable.exc_value is not None and is_write_failure(unraisable.exc_value):
        return
    default(unraisable)


@main.command()
@click.option(
    "--modulus",
    type=NumberList(OptionValue("modulus", int)),
    default=DEFAULTS.modulus,
    help="p: the task is (a o b) mod p.",
)
@click.option(
    "--operation",
    type=WordList(OPERATIONS),
    default=DEFAULTS.operation,
    help="a + b, a - b, a * b or a / b = a * b^-1 mod p (mul and div: prime p, residues 1..p-1).",
)
@click.option(
    "--width",
    type=NumberList(OptionValue("width", int)),
    default=DEFAULTS.width,
    help="Hidden neurons of the MLP (the transformer's: --d-mlp).",
)
@click.option(
    "--model",
    type=click.Choice(MODELS),
    default=DEFAULTS.model,
    help="mlp: the paper's two-hot MLP. transformer: Nanda et al. (2023)'s one-layer transformer "
    "(defaults p = 113, d_model 128, 4 heads, 512 ReLU MLP neurons, 10-step lr warm-up).",
)
@click.option(
    "--d-model",
    type=NumberList(OptionValue("d_model", int)),
    default=None,
    help=f"Transformer: width of the residual stream [default: {DEFAULTS.d_model}].",
)
@click.option(
    "--heads",
    type=NumberList(OptionValue("heads", int)),
    default=None,
    help=f"Transformer: attention heads, sharing d_model [default: {DEFAULTS.heads}].",
)
@click.option(
    "--d-mlp",
    type=NumberList(OptionValue("width", int)),
    default=None,
    help=f"Transformer: ReLU neurons of its MLP [default: {TRANSFORMER_DEFAULTS['width']}].",
)
@click.option(
    "--activation",
    type=WordList(ACTIVATIONS),
    default=DEFAULTS.activation,
    help="Hidden nonlinearity (the paper's: relu).",
)
@click.option(
    "--precision",
    type=WordList(PRECISIONS),
    default=DEFAULTS.precision,
    help="Operands of the training GEMMs: fp32 (the paper's) or bf16 (float32 master weights, softmax and "
    "AdamW state). For the paper's model bf16 was not faster on any device measured, and 13x slower on "
    "CPUs without bf16 units (benchmarks/README.md).",
)
@click.option(
    "--train-frac",
    type=NumberList(OptionValue("train_frac", float)),
    default=DEFAULTS.train_frac,
    help="Share of the p^2 pairs used for training, stratified by the answer.",
)
@click.option(
    "--noise",
    type=NumberList(OptionValue("noise", float), {"paper": list(PAPER_NOISE_LEVELS)}),
    default=DEFAULTS.noise,
    help="Share of training labels replaced by a uniformly drawn wrong class; "
    "'paper' for the paper's 19 levels.",
)
@click.option(
    "--lr",
    type=NumberList(OptionValue("lr", float)),
    default=DEFAULTS.lr,
    help="AdamW learning rate.",
)
@click.option(
    "--weight-decay",
    type=NumberList(OptionValue("weight_decay", float)),
    default=DEFAULTS.weight_decay,
    help="AdamW decoupled weight decay.",
)
@click.option(
    "--betas",
    callback=parse_betas,
    default=",".join(f"{b:g}" for b in DEFAULTS.betas),
    help="AdamW betas, two comma-separated numbers.",
)
@click.option(
    "--seed",
    type=NumberList(OptionValue("seed", int)),
    default=DEFAULTS.seed,
    help="Seeds the split, the label noise and the init.",
)
@click.option(
    "--steps",
    type=NumberList(OptionValue("steps", int)),
    default=DEFAULTS.steps,
    help="Hard cap on optimizer steps.",
)
@click.option("--bias/--no-bias", default=DEFAULTS.bias, help="First-layer and output biases.")
@click.option(
    "--stop-val-acc",
    type=NumberList(OptionValue("stop_val_acc", float), words={"off": None}),
    default=DEFAULTS.stop_val_acc,
    help="Stop once validation accuracy reaches this; 'off' trains exactly --steps (no accuracy or patience stop).",
)
@click.option(
    "--patience",
    type=NumberList(OptionValue("patience", int)),
    default=DEFAULTS.patience,
    help="Stop after this many steps without a 1e-4 gain in best validation accuracy.",
)
@click.option(
    "--eval-every",
    type=NumberList(OptionValue("eval_every", int)),
    default=DEFAULTS.eval_every,
    help="Steps between validation checks of the stopping rule.",
)
@click.option(
    "--every",
    type=NumberList(click.IntRange(min=1, max=10**9)),
    default=None,
    help="Snapshot every N steps instead of the log schedule.",
)
@click.option(
    "--per-decade",
    type=NumberList(OptionValue("per_decade", int)),
    default=DEFAULTS.per_decade,
    help="Log schedule: snapshots per decade of steps (every step while denser).",
)
@click.option("--device", default=DEFAULTS.device, help="torch device: cpu, cuda or cuda:N.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Trajectory file [default: trajectories/<name from the config>.h5]; for a sweep, a folder.",
)
@click.option(
    "--scheduler",
    default=None,
    help="Sweeps: dask.distributed scheduler address, or 'local' for a LocalCluster.",
)
@click.option(
    "--max-ensemble",
    type=click.IntRange(min=1),
    default=None,
    help="Sweeps: at most this many runs per batched ensemble.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue unfinished trajectories from their last checkpoint; skip complete ones.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace existing trajectories (each new file takes the old one's place once its first snapshot is on disk).",
)
@click.option(
    "--compress",
    is_flag=True,
    help="Deflate + shuffle the weights on file (smaller, slower snapshots; see benchmarks).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1, max=4096),
    default=None,
    help="torch threads for training [default: 1 for small steps, else the cores other processes leave free; "
    "1 per dask worker].",
)
@click.option(
    "--skip-space-check",
    is_flag=True,
    help="Start even if the trajectories, run to the step cap, would not fit on the disk "
    "(for runs you know will stop early).",
)
@click.option(
    "--finish",
    is_flag=True,
    help="With --resume: close an interrupted run as final at its last snapshot, stop reason "
    "'closed by the user', instead of training on.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
@one_line_errors
def record(
    out: Path | None,
    resume: bool,
    finish: bool,
    force: bool,
    compress: bool,
    threads: int | None,
    skip_space_check: bool,
    quiet: bool,
    every,
    scheduler: str | None,
    max_ensemble: int | None,
    **options,
) -> None:
    """Train the paper's MLP (or, with --model transformer, Nanda et al.'s one-layer
    transformer) and stream weight snapshots and metrics into an HDF5 trajectory.

    With no options this is the paper's experiment: p = 97, 256 neurons, 30% stratified
    split, AdamW (lr 1e-3, weight decay 1), stopping at validation accuracy 0.999.
    --operation sub|mul|div and --activation gelu|silu|quadratic|identity train the
    variants. Comma lists on options (--noise 0,0.1 --seed 0,1 --operation add,sub) record
    the grid as batched ensembles into a folder with an index.json that analyze and report
    accept."""
    if resume and force:
        raise click.UsageError("--resume and --force exclude each other")
    _model_options(options, _given_options(click.get_current_context()))
    if finish and not resume:
        raise click.UsageError("--finish closes an interrupted run: give it with --resume")
    given = _given_options(click.get_current_context())
    if every is not None and "per_decade" in given:
        raise click.UsageError(
            "--every and --per-decade exclude each other (--every replaces the log schedule)"
        )
    if "patience" in given and options["stop_val_acc"] is None:
        raise click.UsageError(
            "--patience has no effect with --stop-val-acc off (only --steps stops the run)"
        )
    from mechgrok.recording.runs import DEFAULT_TRAJECTORY_DIR, default_trajectory_name, record_runs
    from mechgrok.store.reader import read_config
    from mechgrok.sweep.grid import expand_grid

    grid = expand_grid(dict(options, every=every if every is not None else 0))
    if finish and (len(grid) > 1 or scheduler is not None):
        raise click.UsageError("--finish closes one run: give one run's options, not a sweep")
    if len(grid) > 1 or scheduler is not None:
        with interruptible(resume_hint, polled=scheduler is None) as stop_if_interrupted:
            _record_sweep(
                grid,
                out,
                resume,
                force,
                compress,
                quiet,
                scheduler,
                max_ensemble,
                threads,
                stop_if_interrupted,
                space_check=not skip_space_check,
            )
        return
    config = grid[0]
    out = out if out is not None else DEFAULT_TRAJECTORY_DIR / default_trajectory_name(config)
    if finish:
        from mechgrok.recording.runs import finish_run

        step = finish_run(out)
        if not quiet:
            console.print(f"closed {out} at step {step:,} (stop reason: closed by the user)")
        return
    if resume and out.exists():
        # options not given on the command line come from the file, not from the defaults
        ctx = click.get_current_context()
        explicit = {
            name: value
            for name, value in dict(options, every=every if every is not None else 0).items()
            if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT
        }
        if ctx.get_parameter_source("d_mlp") != click.core.ParameterSource.DEFAULT:
            explicit["width"] = options["width"]  # the transformer's neurons
        config = dataclasses.replace(read_config(out), **explicit)
    started = time.perf_counter()
    with interruptible(resume_hint) as stop_if_interrupted:
        if quiet:
            record_runs(
                [config],
                [out],
                resume=resume,
                force=force,
                compression=compress,
                threads=threads,
                on_step=stop_if_interrupted,
                space_check=not skip_space_check,
            )
        else:
            with RecordProgress(config.steps, stop_if_interrupted, config.stop_val_acc) as progress:
                record_runs(
                    [config],
                    [out],
                    resume=resume,
                    force=force,
                    on_step=progress.on_step,
                    compression=compress,
                    threads=threads,
                    space_check=not skip_space_check,
                )
    if not quiet:
        _print_summary(out, time.perf_counter() - started)


def _model_options(options: dict, given: set[str]) -> None:
    """Fold the transformer's options into RunConfig's (its MLP neurons are `width`), with
    its defaults where they differ from the MLP's; options of the other model refused."""
    d_mlp = options.pop("d_mlp")
    if options["model"] == "mlp":
        stray = [
            f"--{name.replace('_', '-')}" for name in ("d_model", "heads", "d_mlp") if name in given
        ]
        if stray:
            raise click.UsageError(
                f"{', '.join(stray)} {'size' if len(stray) > 1 else 'sizes'} the transformer: "
                "add --model transformer "
                "(the MLP's neurons are --width)"
            )
        del options["d_model"], options["heads"]
        return
    if "width" in given:
        raise click.UsageError(
            "--width sizes the MLP model; the transformer's MLP neurons are --d-mlp "
            "(its residual stream --d-model)"
        )
    options["width"] = d_mlp if d_mlp is not None else TRANSFORMER_DEFAULTS["width"]
    for name in ("modulus", "per_decade"):
        if name not in given:
            options[name] = TRANSFORMER_DEFAULTS[name]
    for name in ("d_model", "heads"):
        if options[name] is None:
            options[name] = getattr(DEFAULTS, name)


def _given_options(ctx: click.Context) -> set[str]:
    """The options given on the command line (not left at their defaults)."""
    return {
        name
        for name in ctx.params
        if ctx.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None)
    }


class Interrupted(click.ClickException):
    """Ctrl-C or SIGTERM during a recording or an import: one line saying what was kept."""

    exit_code = 130


@contextlib.contextmanager
def interruptible(message: Callable[[], str], polled: bool = True, unit: str = "step"):
    """Turn Ctrl-C and SIGTERM into the one-line `message()` (exit status 130).
    Yields `stop_if_interrupted`, the loop's per-step callback. With `polled` (a loop in this
    process that calls it), a signal only leaves a mark that the next call turns into
    KeyboardInterrupt, from the first signal on, even before the loop's first step: raised
    from the handler instead, it could land inside a finalizer (h5py's weak references, as
    a snapshot is written), where Python prints it as "Exception ignored", drops it, and the
    run goes on. A second signal stops at once. Without `polled` (waiting on a dask
    scheduler, where nothing polls), the handler raises at once."""
    state = {"requested": False}

    def interrupt(signum, frame):
        if state["requested"] or not polled:
            raise KeyboardInterrupt
        state["requested"] = True
        sys.stderr.write(f"stopping after this {unit} (Ctrl-C again stops at once)\n")

    def stop_if_interrupted(*_) -> None:
        if state["requested"]:
            raise KeyboardInterrupt

    previous = {
        signum: signal.signal(signum, interrupt) for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield stop_if_interrupted
    except KeyboardInterrupt:
        raise Interrupted(message()) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def resume_hint() -> str:
    """What an interrupted recording says: its snapshots are kept (TrajectoryWriter), and
    the same command with --resume continues it."""
    args = [arg for arg in sys.argv[1:] if arg not in ("--force", "--resume")]
    command = " ".join(["mechgrok", *map(shlex.quote, args), "--resume"])
    return f"interrupted; every snapshot written so far is kept: `{command}` continues"


def _record_sweep(
    grid: list[RunConfig],
    out: Path | None,
    resume: bool,
    force: bool,
    compress: bool,
    quiet: bool,
    scheduler: str | None,
    max_ensemble: int | None,
    threads: int | None,
    stop_if_interrupted: Callable[..., None],
    space_check: bool = True,
) -> None:
    from mechgrok.recording.stopping import is_complete
    from mechgrok.store.reader import recorded_progress
    from mechgrok.sweep.grid import default_sweep_folder, ensemble_groups, record_sweep
    from mechgrok.sweep.index import INDEX_NAME

    folder = out if out is not None else default_sweep_folder(grid)
    if folder.exists() and not folder.is_dir():
        raise click.UsageError(f"--out {folder}: a sweep needs a folder, and this is a file")
    started = time.perf_counter()
    n_groups = len(ensemble_groups(grid, max_ensemble))
    if not quiet:
        how = (
            "transformers, trained one after another"
            if all(c.model == "transformer" for c in grid)
            else f"in {n_groups} batched ensemble(s)"
        )
        console.print(
            f"sweep: {len(grid)} runs, {how} -> {folder}"
            + (f" on dask scheduler {scheduler}" if scheduler else "")
        )
    if quiet or scheduler is not None:
        paths, errors = record_sweep(
            grid,
            folder,
            resume,
            force,
            scheduler,
            max_ensemble,
            compression=compress,
            threads=threads,
            on_step=None if scheduler is not None else stop_if_interrupted,
            space_check=space_check,
        )
    else:
        with RecordProgress(max(c.steps for c in grid), stop_if_interrupted) as progress:
            paths, errors = record_sweep(
                grid,
                folder,
                resume,
                force,
                None,
                max_ensemble,
                on_step=progress.on_step,
                compression=compress,
                threads=threads,
                space_check=space_check,
            )
    for error in errors:
        console.print(f"[red]failed[/red] {error}")
    if not quiet:
        done = sum(path.is_file() and is_complete(recorded_progress(path)) for path in paths)
        console.print(
            f"[green]wrote[/green] {done} of {len(paths)} trajectories and {folder / INDEX_NAME} "
            f"({time.perf_counter() - started:.0f} s)"
        )
    if errors:
        raise click.ClickException(
            f"{len(errors)} ensemble(s) failed; the other runs' files are complete (rerun with --resume)"
        )


@contextlib.contextmanager
def snapshot_progress(label: str, enabled: bool = True):
    """A progress bar over snapshots for a long computation (analyze, report), fed by the
    yielded on_progress(done, total); None (no bar) with --quiet or when stderr is not a
    terminal. It appears with the first report, so work refused before it prints no bar."""
    if not (enabled and console.is_terminal):
        yield None
        return
    progress = Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(bar_width=20),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} snapshots"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    bar: list[TaskID] = []

    def on_progress(done: int, total: int) -> None:
        if not bar:
            progress.start()
            bar.append(progress.add_task(label, total=total))
        progress.update(bar[0], completed=done, total=total)

    try:
        yield on_progress
    finally:
        progress.stop()


def _duration(seconds: float) -> str:
    """12 s, 3:04 (minutes), 1:02:03 (hours), or '?' before a rate is known."""
    if not seconds < 10**7:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return (
        f"{hours}:{minutes:02d}:{secs:02d}"
        if hours
        else f"{minutes}:{secs:02d}"
        if minutes
        else f"{secs} s"
    )


STOP_TREND_SECONDS = 30.0  # how far back the time to a stopping threshold is extrapolated


class RecordProgress:
    """A rich progress bar fed by train_ensemble's on_step callback (at most 5 redraws/s),
    with the time left: to the step cap at the current rate, or, when validation accuracy is
    rising towards `stop_val_acc` fast enough to get there first, to that threshold (marked
    "to val ..."), extrapolated from the last STOP_TREND_SECONDS. It appears with the first
    step, so a run refused before training prints no bar."""

    def __init__(
        self,
        total_steps: int,
        stop_if_interrupted: Callable[..., None],
        stop_val_acc: float | None = None,
    ):
        columns = [
            TextColumn("[bold]record"),
            BarColumn(bar_width=10),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
            TextColumn("{task.fields[status]}"),
        ]
        self._progress = Progress(*columns, console=console)
        self._total = total_steps
        self._bar: TaskID | None = None
        self._last_draw = 0.0
        self._first: tuple[float, int] | None = None
        self._stop_if_interrupted = stop_if_interrupted
        self._stop_val_acc = stop_val_acc
        self._trend: list[tuple[float, float]] = []  # (time, validation accuracy)

    def on_step(self, steps: dict[int, int], latest: dict[int, dict[str, float]]) -> None:
        self._stop_if_interrupted()
        now = time.perf_counter()
        if self._bar is None:
            self._progress.start()
            self._bar = self._progress.add_task("record", total=self._total, status="")
        if now - self._last_draw < 0.2:
            return
        self._last_draw = now
        step = min(steps.values())
        if self._first is None:
            self._first = (now, step)
        rate = (step - self._first[1]) / max(now - self._first[0], 1e-9)
        first = min(steps)
        m = latest.get(first, {})
        run = (
            f"run {first} of {len(steps)}: " if len(steps) > 1 else ""
        )  # an ensemble: its first run's metrics
        left = (self._total - step) / rate if rate > 0 else float("inf")
        goal = "left"
        val = m.get("val_acc", float("nan"))
        if self._stop_val_acc is not None and val == val:
            self._trend = [(t, v) for t, v in self._trend if now - t <= STOP_TREND_SECONDS]
            self._trend.append((now, val))
            (t0, v0), (t1, v1) = self._trend[0], self._trend[-1]
            if t1 - t0 > 1 and v1 > v0:  # rising: when does it reach the threshold?
                to_threshold = max(self._stop_val_acc - v1, 0) * (t1 - t0) / (v1 - v0)
                if to_threshold < left:
                    left, goal = to_threshold, f"to val {self._stop_val_acc:g}"
        status = (  # fits 80 columns with the bar and the step count
            f"{run}loss {m.get('train_loss', float('nan')):.2g} train {m.get('train_acc', float('nan')):.3f} "
            f"val {val:.3f} {rate:,.0f}/s {_duration(left)} {goal}"
        )
        self._progress.update(self._bar, completed=step, status=status)

    def __enter__(self) -> RecordProgress:
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._progress.stop()


def _print_summary(path: Path, seconds: float) -> None:
    from mechgrok.store.reader import open_trajectory

    with open_trajectory(path) as ds:
        n, final, saturation = (
            ds.sizes["step"],
            int(ds.attrs["final_step"]),
            int(ds.attrs["saturation_step"]),
        )
        val_acc = float(ds.val_acc[-1]) if n else float("nan")
        reason = ds.attrs["stop_reason"]
    from mechgrok.analysis.accessor import format_number

    console.print(
        f"[green]wrote[/green] {path}: {n} snapshots, final step {final:,}, val acc {format_number(val_acc, 4)}, "
        f"saturation step {saturation if saturation >= 0 else 'not reached'}, stopped: {reason} ({seconds:.0f} s)"
    )


@main.command()
@click.argument("trajectories", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Analysis file [default: next to the trajectory, <name>.analysis.h5]; one trajectory only.",
)
@click.option(
    "--threshold",
    type=OptionValue("threshold", float),
    default=None,
    help="Structured: W_a periodicity above this [default: 12 (p-1)/96, the paper's 12 at p = 97].",
)
@click.option(
    "--threshold-low",
    type=OptionValue("threshold_low", float),
    default=None,
    help="Unstructured: periodicity below this [default: 5 (p-1)/96].",
)
@click.option(
    "--grok-acc",
    type=OptionValue("grok_acc", float),
    default=ANALYSIS_DEFAULTS["grok_acc"],
    help="Grok step: first validation accuracy >= this.",
)
@click.option(
    "--structure-acc",
    type=OptionValue("structure_acc", float),
    default=ANALYSIS_DEFAULTS["structure_acc"],
    help="Structure step: first Sq->Cos accuracy >= this.",
)
@click.option(
    "--chunk-steps",
    type=OptionValue("chunk_steps", int),
    default=ANALYSIS_DEFAULTS["chunk_steps"],
    help="Snapshots analyzed at a time (bounds memory).",
)
@click.option(
    "--shuffle-draws",
    type=OptionValue("shuffle_draws", int),
    default=ANALYSIS_DEFAULTS["shuffle_draws"],
    help="Permutations behind the shuffled control's mean and 95th percentile (each costs ~2 ms per snapshot at p = 97).",
)
@click.option(
    "--scheduler",
    default=None,
    help="dask.distributed scheduler address for the chunks, or 'local'.",
)
@click.option("--force", is_flag=True, help="Recompute even if a current analysis exists.")
@click.option("--quiet", "-q", is_flag=True, help="No summary table.")
@one_line_errors
def analyze(
    trajectories: tuple[Path, ...],
    out: Path | None,
    threshold: float | None,
    threshold_low: float | None,
    grok_acc: float,
    structure_acc: float,
    chunk_steps: int,
    shuffle_draws: int,
    scheduler: str | None,
    force: bool,
    quiet: bool,
) -> None:
    """Per-neuron Fourier structure and idealized-model accuracy over trajectories.

    TRAJECTORIES are files, sweep folders or sweep index.json files. Writes
    <trajectory>.analysis.h5 (dims step, neuron) beside each and prints a summary; a
    current analysis is reused unless --force."""
    from mechgrok.analysis.pipeline import analyze as run_analysis
    from mechgrok.analysis.pipeline import default_analysis_path
    from mechgrok.config import modulus_caveat
    from mechgrok.operations import recorded_operation
    from mechgrok.store.reader import attr_int, run_state
    from mechgrok.sweep.index import resolve_trajectories

    paths = resolve_trajectories(list(trajectories))
    if out is not None and len(paths) > 1:
        raise click.UsageError("--out names one analysis file; give one trajectory with it")
    for trajectory in paths:
        started = time.perf_counter()
        with snapshot_progress(f"analyze {trajectory.name}", enabled=not quiet) as on_progress:
            result = run_analysis(
                trajectory,
                threshold=threshold,
                threshold_low=threshold_low,
                out=out,
                force=force,
                grok_acc=grok_acc,
                structure_acc=structure_acc,
                chunk_steps=chunk_steps,
                shuffle_draws=shuffle_draws,
                scheduler=scheduler,
                on_progress=on_progress,
            )
        caveat = modulus_caveat(attr_int(result.attrs["modulus"]), recorded_operation(result.attrs))
        if caveat:
            console.print(f"note: {caveat}")
        state = run_state(trajectory) if trajectory.is_file() else "finished"
        if state != "finished":
            console.print(
                f"note: {trajectory} {STATE_NOTES[state]} (analyzed its {result.sizes['step']} snapshots)"
            )
        if not quiet:
            console.print(summary_table(result, title=f"{trajectory}"))
            console.print(
                f"analysis: {out or default_analysis_path(trajectory)} ({time.perf_counter() - started:.1f} s)"
            )


DEGENERATE_NOTE = (
    " Restricted loss is degenerate here: every frequency is a key frequency, so it keeps the "
    "whole hidden layer and says nothing about the algorithm."
)
STATE_NOTES = {
    "recording": "is still recording: another process writes it",
    "interrupted": "was interrupted before its end: `mechgrok record --resume` continues it, "
    "`--resume --finish` closes it at its last snapshot",
}


def summary_table(result, title: str):
    """A rich table of an analysis's headline numbers."""
    from rich.table import Table

    from mechgrok.analysis.accessor import (
        CONVENTION_NOTE,
        format_final_step,
        format_grok_step,
        format_lead,
        format_number,
        format_waveform,
        headline_rows,
    )
    from mechgrok.analysis.accessor import (
        format_step as step,
    )
    from mechgrok.analysis.variables import law_sign

    head = result.mechgrok.headline()

    def number(key, digits=3):
        return format_number(head.get(key), digits)

    table = Table(title=title, show_header=True)
    table.add_column("")
    table.add_column("at saturation", justify="right")
    table.add_column(f"at the end ({format_final_step(head)})", justify="right")
    for label, name, digits in headline_rows(law_sign(result.attrs)):
        table.add_row(label, number(f"{name}_saturation", digits), number(f"{name}_final", digits))
    table.caption = (
        f"operation {head['operation']}; W_a waveform at the end: {format_waveform(head)}; "
        f"saturation step {step(head['saturation_step'])}, grok step {format_grok_step(head)}; "
        f"structure step {step(head['structure_step'])} (own frequencies: {step(head['structure_step_own'])}), "
        f"lead grok - structure {format_lead(head['lead_steps'])} (own: {format_lead(head['lead_steps_own'])}); "
        f"shuffled control over {head['shuffle_draws']} draws; structured: periodicity > {head['threshold']:.2f}. "
        + CONVENTION_NOTE
        + (DEGENERATE_NOTE if head["restricted_loss_degenerate"] else "")
    )
    return table


@main.command()
@click.argument("trajectories", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--html",
    "as_html",
    is_flag=True,
    help="Write the self-contained HTML report (else print summaries).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Report file, or a folder to put it in [default: reports/<trajectory name>.html].",
)
@click.option(
    "--png-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also write each figure as a PNG here.",
)
@click.option("--force", is_flag=True, help="Replace an existing report.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@one_line_errors
def report(
    trajectories: tuple[Path, ...],
    as_html: bool,
    out: Path | None,
    png_dir: Path | None,
    force: bool,
    quiet: bool,
) -> None:
    """Show how structure emerges before grokking, for one run or a sweep.

    TRAJECTORIES are files, sweep folders or sweep index.json files; each is analyzed
    unless a current analysis sits beside it."""
    from mechgrok.sweep.index import resolve_trajectories

    given = _given_options(click.get_current_context())
    if not as_html and given & {"out", "png_dir"}:
        raise click.UsageError("--out and --png-dir name the HTML page's files: add --html")

    paths = resolve_trajectories(list(trajectories))
    if not as_html:
        from mechgrok.analysis.pipeline import analyze as run_analysis

        for path in paths:
            console.print(summary_table(run_analysis(path), title=str(path)))
        return
    from mechgrok.reporting import report as write_report

    started = time.perf_counter()
    with snapshot_progress("report: analyze", enabled=not quiet) as on_progress:
        path = write_report(paths, out=out, png_dir=png_dir, force=force, on_progress=on_progress)
    console.print(f"[green]wrote[/green] {path} ({time.perf_counter() - started:.1f} s)")


@main.command("import")
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Trajectory file to write.",
)
@click.option(
    "--modulus",
    type=OptionValue("modulus", int),
    default=None,
    help="p, where the checkpoints' shapes (or a config.json beside them) do not tell.",
)
@click.option(
    "--key",
    "keys",
    multiple=True,
    metavar="ROLE=NAME",
    help="Which parameter plays a role (input, output, b_in, b_out) where shapes are ambiguous; repeatable.",
)
@click.option(
    "--operation",
    type=click.Choice(OPERATIONS),
    default="add",
    help="The task the run was trained on.",
)
@click.option(
    "--activation",
    type=click.Choice(ACTIVATIONS),
    default="relu",
    help="The imported model's hidden nonlinearity (scores its real weights on all pairs).",
)
@click.option(
    "--trust-pickle",
    is_flag=True,
    help="Load checkpoints that hold Python objects (runs their code: trusted sources only).",
)
@click.option("--force", is_flag=True, help="Replace an existing trajectory at --out.")
@click.option(
    "--skip-space-check",
    is_flag=True,
    help="Start even if the trajectory would not fit on the disk.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
@one_line_errors
def import_run(
    source: Path,
    out: Path,
    modulus: int | None,
    keys: tuple[str, ...],
    operation: str,
    activation: str,
    trust_pickle: bool,
    force: bool,
    skip_space_check: bool,
    quiet: bool,
) -> None:
    """Convert checkpoints saved by another codebase into a mechgrok trajectory.

    SOURCE is a folder of per-step .pt/.pth or .safetensors files (optionally with a
    checkpoints.json manifest of steps and sha256 sums), or one file holding a list of
    state_dicts with their steps or a {step: state_dict} dict. Two-hot MLP layouts are
    found from parameter shapes, Nanda et al.'s and TransformerLens's one-layer transformers
    and plain stacks of linear layers from their names (read through their activation
    tables); analyze and report then work on --out unchanged."""
    roles = {}
    for item in keys:
        role, sep, name = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected ROLE=NAME, got {item!r}", param_hint="--key")
        roles[role.strip()] = name.strip()
    started = time.perf_counter()
    interrupted = interruptible(
        lambda: (
            "interrupted; nothing was written (an import keeps its file only once complete): run it again"
        ),
        unit="checkpoint",
    )
    with interrupted as stop_if_interrupted:
        _import(
            source,
            out,
            quiet,
            stop_if_interrupted,
            modulus=modulus,
            keys=roles,
            force=force,
            trust_pickle=trust_pickle,
            activation=activation,
            operation=operation,
            space_check=not skip_space_check,
        )
    if not quiet:
        _print_summary(out, time.perf_counter() - started)


def _import(source: Path, out: Path, quiet: bool, stop_if_interrupted, **options) -> None:
    """import_checkpoints with a progress bar (unless quiet) that also polls for Ctrl-C."""
    from mechgrok.ingest.checkpoints import import_checkpoints

    if quiet:
        import_checkpoints(source, out, on_snapshot=lambda *_: stop_if_interrupted(), **options)
        return
    with Progress(
        TextColumn("[bold]import"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} checkpoints"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task("import", total=None)

        def advance(done: int, total: int) -> None:
            stop_if_interrupted()
            progress.update(bar, completed=done, total=total)

        import_checkpoints(source, out, on_snapshot=advance, **options)


if __name__ == "__main__":
    main()
