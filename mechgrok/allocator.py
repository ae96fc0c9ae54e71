"""Memory kept for reuse while training. glibc's malloc hands freed memory at the top of its
heap back to the system once more than M_TRIM_THRESHOLD is free, and serves blocks above
M_MMAP_THRESHOLD by fresh mappings (both start at 128 KiB and rise only as large blocks are
freed). A training step allocates and frees megabytes of activations, so an ensemble's step
at the paper's setting paid ~600 page faults re-obtaining that memory: 10% of its time. While
training, blocks up to MMAP_BYTES come from the heap and up to TRIM_BYTES of freed heap is
kept. Elsewhere than glibc this does nothing."""
from __future__ import annotations

import contextlib
import ctypes
from typing import Iterator

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_BYTES = 32 * 2**20  # the largest mmap threshold glibc accepts on 64-bit
TRIM_BYTES = 256 * 2**20
GLIBC_START = 128 * 2**10  # both thresholds' starting value in glibc


def _glibc() -> ctypes.CDLL | None:
    """This process's C library if it has glibc's mallopt and malloc_trim, else None."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@contextlib.contextmanager
def heap_kept_for_reuse() -> Iterator[None]:
    """Inside the block, freed memory is kept for reuse (see the module docstring). After it,
    both thresholds go back to glibc's starting 128 KiB (fixed from then on: glibc stops
    adjusting them once set) and the freed heap is returned to the system."""
    libc = _glibc()
    if libc is None:
        yield
        return
    libc.mallopt(M_MMAP_THRESHOLD, MMAP_BYTES)
    libc.mallopt(M_TRIM_THRESHOLD, TRIM_BYTES)
    try:
        yield
    finally:
        libc.mallopt(M_TRIM_THRESHOLD, GLIBC_START)
        libc.mallopt(M_MMAP_THRESHOLD, GLIBC_START)
        libc.malloc_trim(0)
