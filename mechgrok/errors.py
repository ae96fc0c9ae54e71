"""mechgrok's errors: one base, MechgrokError, and a subclass per kind that also inherits the
matching builtin (so `except ValueError` and `except FileExistsError` keep working).

A MechgrokError is about the user's input, files or machine, never a bug in mechgrok: the
CLI prints it as one line, while any other exception shows its traceback. Its `remedy`
names options as `{option}` placeholders; `str(err)` spells them as Python keywords
(`resume=True`) and the CLI as flags (`--resume`), so one message serves both."""

from __future__ import annotations

# option -> (as the CLI spells it, as the Python API spells it)
OPTION_SPELLINGS: dict[str, tuple[str, str]] = {
    "resume": ("--resume", "resume=True"),
    "force": ("--force", "force=True"),
    "out": ("another --out", "another output path"),
    "steps": ("--steps", "steps"),
    "stop_val_acc": ("--stop-val-acc", "stop_val_acc"),
    "patience": ("--patience", "patience"),
    "modulus": ("--modulus", "modulus"),
    "width": ("--width", "width"),
    "train_frac": ("--train-frac", "train_frac"),
    "max_ensemble": ("--max-ensemble", "a smaller ensemble"),
    "trust_pickle": ("--trust-pickle", "trust_pickle=True"),
    "every": ("--every", "every"),
    "per_decade": ("--per-decade", "per_decade"),
    "skip_space_check": ("--skip-space-check", "space_check=False"),
    "key": ("--key ROLE=NAME", "keys={ROLE: NAME}"),
}


class MechgrokError(Exception):
    """Base of every error about input, files or resources. `message` names the file or
    option and what was expected; `remedy` (optional) says what to do. Both may name options as
    `{option}` placeholders of OPTION_SPELLINGS."""

    def __init__(self, message: str, remedy: str | None = None):
        super().__init__(message)
        self.message = message
        self.remedy = remedy

    def render(self, cli: bool = False) -> str:
        """The one-line message, with options spelled for the CLI or for Python."""
        text = self.message + (f"; {self.remedy}" if self.remedy else "")
        for name, spellings in OPTION_SPELLINGS.items():  # not str.format: paths may hold braces
            text = text.replace("{" + name + "}", spellings[0 if cli else 1])
        return text

    def __str__(self) -> str:
        return self.render(cli=False)


class InvalidOptionError(MechgrokError, ValueError):
    """An option's value is out of range or contradicts another (names the option)."""


class ResourceError(MechgrokError, ValueError):
    """A run or analysis would not fit in this machine's memory or disk (gives both figures)."""


class TrajectoryError(MechgrokError, ValueError):
    """A file is not a readable mechgrok trajectory or analysis (names the file and the problem)."""


class ResumeError(MechgrokError, ValueError):
    """A recording cannot be resumed with the options asked for; the file is unchanged."""


class FileBusyError(MechgrokError, RuntimeError):
    """Another process is writing the file (names it and, where known, its pid)."""


class InputNotFoundError(MechgrokError, FileNotFoundError):
    """An input file or folder does not exist or cannot be read."""


class SelectionError(MechgrokError, KeyError):
    """A neuron, step or variable asked of a Dataset that it does not hold (names the range)."""


class OutputExistsError(MechgrokError, FileExistsError):
    """The output path exists and neither resume nor force was asked for."""


class OutputWriteError(MechgrokError, OSError):
    """An output could not be written (disk full, file-size limit, I/O error); names the file."""


class CheckpointImportError(MechgrokError, ValueError):
    """A checkpoint cannot be imported as a model mechgrok reads (names what was found)."""


class SweepIndexError(MechgrokError, ValueError):
    """A sweep folder's index is missing, malformed or names runs that are not there."""


class SchedulerError(MechgrokError, ConnectionError):
    """No dask scheduler answers at the address given."""


class MechgrokWarning(UserWarning):
    """Something the user should know that changes no result's meaning (e.g. an input given
    twice was counted once); the CLI prints it as one 'note:' line."""
