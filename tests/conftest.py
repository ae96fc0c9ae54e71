import os
import resource
import signal
import sys
import tempfile
import time
import traceback
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ["COLUMNS"] = "200"  # before rich's console reads it: summaries on one line each
# tiny models: one thread each, so that pytest-xdist's workers do not spin-wait on each other's cores
os.environ.setdefault("OMP_NUM_THREADS", "1")

from click.testing import CliRunner

from mechgrok.cli import main
from mechgrok.config import RunConfig

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


class ForkedCli:
    """The real `mechgrok` CLI in a forked copy of this test process: its own process (pid,
    signals, kill -9 and resource limits are real) that skips a fresh interpreter's imports
    (~1.5 s of torch and xarray each). For tests that kill it, limit it, or race it. Its two
    streams go to files, read once it has ended (`stdout`, `stderr`); like subprocess.Popen,
    `returncode` is None while it runs and -N when signal N ended it."""

    def __init__(self, *args: str, limit_bytes: int | None = None):
        self._streams = (tempfile.TemporaryFile(), tempfile.TemporaryFile())
        self.returncode: int | None = None
        self.stdout = self.stderr = ""
        with warnings.catch_warnings():
            # Python >= 3.12 warns on forking a process with threads (pytest-xdist's I/O
            # threads here): the child only runs the CLI on its own streams and leaves by _exit
            warnings.simplefilter("ignore", DeprecationWarning)
            self.pid = os.fork()
        if self.pid == 0:
            self._run_in_child([str(a) for a in args], limit_bytes)

    def _run_in_child(self, args: list[str], limit_bytes: int | None) -> None:
        code = 1
        try:
            for fd, stream in zip((1, 2), self._streams):
                os.dup2(stream.fileno(), fd)
            sys.stdout, sys.stderr = (
                open(1, "w", closefd=False),
                open(2, "w", closefd=False),
            )  # not pytest's capture
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            import dask.threaded  # its thread pools' threads stayed in the parent: make new ones

            dask.threaded.default_pool = None
            dask.threaded.pools.clear()
            if (
                limit_bytes is not None
            ):  # files may not grow past it: writes fail with EFBIG, as on a full disk
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
            main(args, prog_name="mechgrok")
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        except BaseException:  # noqa: BLE001 - a traceback the user would see: keep it for the test
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                self.stdout, self.stderr = (self._read(stream) for stream in self._streams)
        return self.returncode

    @staticmethod
    def _read(stream) -> str:
        stream.seek(0)
        text = stream.read().decode(errors="replace")
        stream.close()
        return text

    def wait(self, timeout: float = 120) -> "ForkedCli":
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                self.wait()
                raise AssertionError(f"the CLI ran past {timeout} s and was killed:\n{self.stderr}")
            time.sleep(0.01)
        return self

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def run_forked(*args: str, limit_bytes: int | None = None) -> ForkedCli:
    """The CLI in a forked process, to its end (see ForkedCli)."""
    return ForkedCli(*args, limit_bytes=limit_bytes).wait()


def assert_one_line_error(proc: CliResult | ForkedCli, *fragments: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("Error")]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def pytest_collection_finish(session):
    """Fail loudly if --dist loadgroup stopped grouping (as with pytest 9.2 and pytest-xdist
    3.8): grouped tests would rebuild their shared fixtures on every worker, silently."""
    if getattr(session.config.option, "loadgroup", False):
        lost = [
            item.nodeid
            for item in session.items
            if item.get_closest_marker("xdist_group") and "@" not in item.nodeid
        ]
        if lost:
            message = (
                f"pytest-xdist did not group {lost[0]} (and {len(lost) - 1} more): "
                "use the pytest version pyproject.toml's test extra allows"
            )
            print(
                message, file=sys.__stderr__
            )  # a worker's own exit message does not reach the terminal
            pytest.exit(message, returncode=pytest.ExitCode.USAGE_ERROR)
