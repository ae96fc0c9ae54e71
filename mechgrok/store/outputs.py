"""The output rule every command and the Python API follow, in one place.

- Never write over an input of the same call.
- Never write over a file that mechgrok did not make for the same role (a trajectory, an
  analysis, a report, a sweep index): `file_role` reads what an existing file is.
- A new output is written aside (a unique hidden `.NAME.<id>.partial` in the same folder)
  and appears under its name only once complete: `os.link` when the name must still be free
  (so two writers of one name cannot both win), `os.replace` when replacing is allowed.
  A failure leaves nothing behind and the old file untouched.
- Write failures (no space, file-size limit, I/O error) become one-line `OutputWriteError`s
  naming the file.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import hashlib
import json
import os
import stat
import struct
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mechgrok.errors import (
    FileBusyError,
    InputNotFoundError,
    MechgrokError,
    OutputExistsError,
    OutputWriteError,
    ResourceError,
    TrajectoryError,
)

ROLES = ("trajectory", "analysis", "report", "figure", "sweep index")
REPORT_MARKER = '<meta name="generator" content="mechgrok'
LEGACY_REPORT_MARKER = "Made by mechgrok on"  # reports of version 0.1.0 end with it
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# errnos of a failed write: disk full, file-size limit, quota, I/O error, read-only file system
WRITE_FAILURE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO, errno.EROFS}
# HDF5 reports a failed write as a RuntimeError or OSError whose text names the errno
WRITE_FAILURE_TEXTS = (
    "No space left",
    "File too large",
    "Disk quota",
    "Input/output error",
    "Read-only file system",
    "file write failed",
    "unable to extend file",
    "write failed",
)


def file_role(path: Path) -> str | None:
    """What mechgrok made `path` for (one of ROLES), or None for any other file."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return None
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return _hdf5_role(path)
    if head.startswith(PNG_SIGNATURE):
        return "figure" if b"Software\x00mechgrok" in head else None
    if REPORT_MARKER.encode() in head or (
        head.lstrip().lower().startswith(b"<!doctype html")
        and _tail_has(path, LEGACY_REPORT_MARKER)
    ):
        return "report"
    if head.lstrip().startswith(b"{"):
        try:
            if json.loads(path.read_text()).get("format") == "mechgrok-sweep":
                return "sweep index"
        except (ValueError, OSError, AttributeError):
            return None
    return None


def _tail_has(path: Path, text: str) -> bool:
    with open(path, "rb") as handle:
        handle.seek(max(0, os.fstat(handle.fileno()).st_size - 4096))
        return text.encode() in handle.read()


def _hdf5_role(path: Path) -> str | None:
    import h5py

    try:
        with open(path, "rb") as handle, h5py.File(handle, "r") as f:
            if "analysis_format_version" in f.attrs:
                return "analysis"
            if "format_version" in f.attrs and "modulus" in f.attrs:
                return "trajectory"
    except (OSError, RuntimeError, ValueError):
        return None
    return None


def same_file(a: Path, b: Path) -> bool:
    """True when a and b name one file (hard links and symlinks included)."""
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_output(
    path: Path,
    role: str,
    inputs: Iterable[Path] = (),
    force: bool = False,
    replace_role: bool = False,
) -> None:
    """Raise unless `path` may receive a new `role` file: it is none of `inputs`, and if it
    exists it is a mechgrok `role` file and `force` (or `replace_role`: replacing an earlier
    file of this role is the point, as for an analysis cache) allows replacing it."""
    for given in inputs:
        if same_file(path, Path(given)):
            raise OutputExistsError(
                f"{path} is an input of this command; refusing to write over it"
            )
    blocking = next(
        (folder for folder in Path(path).parents if folder.exists() and not folder.is_dir()), None
    )
    if blocking is not None:
        raise OutputExistsError(f"{path}: {blocking} is a file, not a folder", remedy="give {out}")
    if os.path.lexists(path):
        if path.is_dir():
            raise OutputExistsError(f"{path} is a folder; give a file name")
        pid = writer_pid(path)
        if pid is not None:  # never replaced while another process writes it, --force or not
            raise busy(path, pid)
        found = file_role(path)
        if found != role:
            what = f"it is a mechgrok {found}" if found else "nor any other mechgrok file"
            raise OutputExistsError(
                f"{path} exists and is not a mechgrok {role} ({what}); refusing to overwrite it",
                remedy="move it away (a damaged file cannot show what it was) or give {out}",
            )
        if not (force or replace_role):
            hint = (
                "pass {resume} to continue it (record) or {force} to replace it"
                if role == "trajectory"
                else "pass {force} to replace it"
            )
            raise OutputExistsError(f"{path} exists", remedy=hint)


def partial_path(path: Path) -> Path:
    """A unique hidden name beside `path` for writing it aside."""
    return path.with_name(f"{_partial_prefix(path)}{uuid.uuid4().hex[:12]}.partial")


def _partial_prefix(path: Path) -> str:
    """What every partial of `path` starts with: its name, or for a name too long to take 23
    more characters within the file system's 255, its first 150 characters and a hash."""
    name = path.name
    if len(name.encode()) > 200:
        name = name[:150] + "~" + hashlib.sha1(name.encode()).hexdigest()[:10]
    return f".{name}."


STALE_PARTIAL_SECONDS = 30  # a writer locks its partial file within milliseconds of making it


def remove_stale_partials(path: Path) -> list[Path]:
    """Remove the hidden partial files of `path` (trajectories written aside) that no process
    is writing: what a writer killed by SIGKILL left. A live writer holds its partial's lock;
    one made in the last STALE_PARTIAL_SECONDS may not hold it yet and is left. Returns them."""
    removed = []
    now = time.time()
    for partial in path.parent.glob(f"{glob.escape(_partial_prefix(path))}*.partial"):
        try:
            old = now - partial.stat().st_mtime > STALE_PARTIAL_SECONDS
        except OSError:
            continue
        if old and writer_pid(partial) is None and not _locked_here(partial):
            partial.unlink(missing_ok=True)
            removed.append(partial)
    return removed


def _locked_here(path: Path) -> bool:
    """Whether this process itself may hold `path`'s lock (F_GETLK does not report our own):
    try to take it; a success is released at once."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return True
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing any descriptor of a file drops this process's locks on it
    return False


def lock_for_writing(file: Path, name: Path) -> int:
    """An fd of `file` holding an exclusive POSIX record lock (fcntl.lockf: released when the
    process ends, even by kill -9), or FileBusyError when another process is writing `name`."""
    fd = os.open(file, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise busy(name, writer_pid(file)) from None
    return fd


def unlock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the descriptor releases its lock


def writer_pid(path: Path) -> int | None:
    """The pid of another process holding `path`'s write lock (a recording or import in
    progress), or None. A lock this process holds is not reported (POSIX locks are per process)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        query = struct.pack(FLOCK_FORMAT, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        l_type, _, _, _, pid = struct.unpack(FLOCK_FORMAT, fcntl.fcntl(fd, fcntl.F_GETLK, query))
    except OSError:
        return None
    finally:
        os.close(fd)
    return None if l_type == fcntl.F_UNLCK else int(pid)


FLOCK_FORMAT = "hhqqi"  # struct flock on Linux: l_type, l_whence, l_start, l_len, l_pid


def busy(path: Path, pid: int | None) -> FileBusyError:
    """The one-line refusal for a file another process is writing."""
    who = f"process {pid}" if pid else "another process"
    return FileBusyError(
        f"{path}: {who} is recording into it; it is left as it is",
        remedy="wait for it to end, or give {out}",
    )


def publish(partial: Path, path: Path, replace: bool) -> None:
    """Give the finished `partial` its name: atomically replace an existing file when
    `replace`, else only if the name is still free (raises OutputExistsError if another
    process took it meanwhile; `partial` is then left for the caller to remove)."""
    if replace:
        pid = writer_pid(path)  # checked at the start too: this closes most of the window since
        if pid is not None:
            raise busy(path, pid)
        os.replace(partial, path)
        return
    try:
        os.link(partial, path)
    except FileExistsError:
        raise OutputExistsError(
            f"{path} appeared while this output was being written (another process?); "
            "the new output was not kept"
        ) from None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        if os.path.lexists(path):  # file systems without hard links: check, then rename
            raise OutputExistsError(
                f"{path} appeared while this output was being written"
            ) from None
        os.replace(partial, path)
        return
    partial.unlink()


def is_write_failure(err: BaseException) -> bool:
    """True when `err` is a failed write (full disk, size limit, I/O error), from the OS or HDF5."""
    if isinstance(err, OSError) and err.errno in WRITE_FAILURE_ERRNOS:
        return True
    return isinstance(err, (OSError, RuntimeError)) and any(
        text in str(err) for text in WRITE_FAILURE_TEXTS
    )


@contextmanager
def write_failures_reported(
    path: Path,
    cleanup: Callable[[], None] | None = None,
    failure: Callable[[BaseException], OutputWriteError] | None = None,
) -> Iterator[None]:
    """Inside, any exception first runs `cleanup()`; a failed write (full disk, file-size
    limit, I/O error) is then raised as a one-line OutputWriteError naming `path` (or the one
    `failure(err)` makes), anything else as it is. The one place write failures become messages."""
    try:
        yield
    except BaseException as err:
        if cleanup is not None:
            cleanup()
        if is_write_failure(err) and not isinstance(err, MechgrokError):  # ours: said already
            raise (failure(err) if failure is not None else write_failure(path, err)) from None
        raise


def write_failure(path: Path, err: BaseException) -> OutputWriteError:
    """A one-line OutputWriteError naming `path` and the cause."""
    reason = (
        (err.strerror or os.strerror(err.errno))
        if isinstance(err, OSError) and err.errno in WRITE_FAILURE_ERRNOS
        else next(
            (text for text in WRITE_FAILURE_TEXTS if text in str(err)),
            str(err).splitlines()[0] if str(err) else type(err).__name__,
        )
    )
    return OutputWriteError(f"{path}: could not be written ({reason})")


@contextmanager
def atomic_output(
    path: str | os.PathLike,
    role: str,
    inputs: Iterable[Path] = (),
    force: bool = False,
    replace_role: bool = False,
) -> Iterator[Path]:
    """Check `path` under the output rule, yield a partial path to write the whole output
    to, then publish it. On any error the partial file is removed, the old file is kept,
    and a failed write is raised as a one-line OutputWriteError naming `path`."""
    path = Path(path)
    check_output(path, role, inputs, force, replace_role)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path)
    with write_failures_reported(path, cleanup=lambda: _remove(partial)):
        yield partial
        publish(partial, path, replace=os.path.lexists(path) and (force or replace_role))
    _remove(partial)


def write_text(
    path: str | os.PathLike,
    text: str,
    role: str,
    inputs: Iterable[Path] = (),
    force: bool = False,
    replace_role: bool = False,
) -> Path:
    """Write a text output under the output rule (see atomic_output)."""
    with atomic_output(path, role, inputs, force, replace_role) as partial:
        with open(partial, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(path)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def check_readable_input(path: Path) -> None:
    """Raise InputNotFoundError/TrajectoryError with a one-line reason for paths that cannot
    be opened at all (missing, a folder, a symlink loop, no permission)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise TrajectoryError(f"{path}: a broken symbolic link") from None
        raise InputNotFoundError(f"{path}: no such file") from None
    except OSError as err:
        raise TrajectoryError(
            f"{path}: cannot be read ({os.strerror(err.errno) if err.errno else err})"
        ) from None
    if stat.S_ISDIR(mode):
        raise TrajectoryError(f"{path}: is a directory, not a file")
    if not stat.S_ISREG(mode):  # a FIFO or a device would block the reader forever
        raise TrajectoryError(f"{path}: is not a regular file (a pipe, socket or device)")
    if not os.access(path, os.R_OK):
        raise TrajectoryError(f"{path}: cannot be read (permission denied)")


FALLOC_FL_KEEP_SIZE = 1


def reserve_space(fd: int, nbytes: int) -> None:
    """Make sure `nbytes` more can be appended to the open file `fd`, or raise OSError
    (ENOSPC / EFBIG) before anything is written: the file-size limit (RLIMIT_FSIZE) is
    checked, and the blocks past the end are allocated without changing the file's size
    (Linux fallocate with FALLOC_FL_KEEP_SIZE), so the writes that follow cannot run out of
    space. Where fallocate is missing, the free space on the file system is checked instead."""
    import resource

    size = os.fstat(fd).st_size
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and size + nbytes > limit:
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
    if _fallocate_keep_size(fd, size, nbytes):
        return
    stats = os.fstatvfs(fd)
    if stats.f_bavail * stats.f_frsize < nbytes:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def check_space(folder: Path, nbytes: int) -> None:
    """Raise OSError (EFBIG / ENOSPC) unless a new file of `nbytes` fits under the
    file-size limit and in the free space of `folder`'s file system (a folder not made yet:
    its nearest existing ancestor's). HDF5 cannot recover from a write that fails half-way,
    so HDF5 outputs are checked before they start."""
    import resource

    from mechgrok.config import format_bytes

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and nbytes > limit:
        raise OSError(
            errno.EFBIG,
            f"{os.strerror(errno.EFBIG)}: needs {format_bytes(nbytes)}, "
            f"the file-size limit is {format_bytes(limit)}",
        )
    folder = next(
        candidate for candidate in (Path(folder), *Path(folder).parents) if candidate.exists()
    )
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    if free < nbytes:
        raise OSError(
            errno.ENOSPC,
            f"{os.strerror(errno.ENOSPC)}: needs {format_bytes(nbytes)}, {format_bytes(free)} free",
        )


def check_room(folder: Path, total: int, largest: int, what: str) -> None:
    """Refuse (ResourceError, both figures) outputs of `total` bytes, the largest file
    `largest`, that the free space of `folder`'s file system or the file-size limit cannot
    hold. `what` says what will be written (e.g. "2 trajectories of up to 571 snapshots")."""
    import resource

    from mechgrok.config import format_bytes

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and largest > limit:
        raise ResourceError(
            f"{what} would take up to {format_bytes(largest)} in one file, above this "
            f"process's file-size limit of {format_bytes(limit)}",
            remedy=ROOM_REMEDY,
        )
    existing = next(c for c in (Path(folder), *Path(folder).parents) if c.exists())
    stats = os.statvfs(existing)
    free = stats.f_bavail * stats.f_frsize
    if total > free:
        raise ResourceError(
            f"{what} would take up to {format_bytes(total)} on disk; {existing} has "
            f"{format_bytes(free)} free",
            remedy=ROOM_REMEDY,
        )


ROOM_REMEDY = (
    "free space, record fewer snapshots or steps ({steps}, {every}, {per_decade}), "
    "or pass {skip_space_check} if the run will stop well before its cap"
)


def _fallocate_keep_size(fd: int, offset: int, nbytes: int) -> bool:
    """Linux fallocate(KEEP_SIZE); False where the call or the file system lacks it."""
    libc = _libc()
    if libc is None:
        return False
    import ctypes

    if libc.fallocate(fd, FALLOC_FL_KEEP_SIZE, ctypes.c_int64(offset), ctypes.c_int64(nbytes)) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
        return False
    raise OSError(code, os.strerror(code))


_LIBC: list = []


def _libc():
    if not _LIBC:
        import ctypes
        import ctypes.util

        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            libc.fallocate  # noqa: B018 - glibc has it, other C libraries may not
        except (OSError, AttributeError):
            libc = None
        _LIBC.append(libc)
    return _LIBC[0]
