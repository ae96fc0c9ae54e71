"""Typed errors. The CLI turns these (and other ValueError/OSError) into one-line messages."""


class TrajectoryError(ValueError):
    """A file is not a readable mechgrok trajectory or analysis (names the file and the problem)."""


class OutputExistsError(FileExistsError):
    """The output path exists and neither resume nor force was asked for."""


class OutputWriteError(OSError):
    """An output could not be written (disk full, file-size limit, I/O error); names the file."""
