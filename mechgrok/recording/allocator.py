"""Memory kept for reuse by a recording process. glibc's malloc hands freed memory at the top
of its heap back to the system once more than M_TRIM_THRESHOLD is free, and serves blocks
above M_MMAP_THRESHOLD by fresh mappings (both start at 128 KiB and rise only as large blocks
are freed). A training step allocates and frees megabytes of activations, so an ensemble's
step at the paper's setting paid ~600 page faults re-obtaining that memory: 10% of its time.
`keep_freed_memory` raises both thresholds for the rest of the process: glibc stops adapting
them once they are set, and setting them back to 128 KiB made a later analysis in the same
process 2x slower (10 million page faults for the demo run). Elsewhere than glibc it does
nothing."""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_BYTES = 32 * 2**20  # blocks below this come from the heap (the most glibc accepts on 64-bit)
TRIM_BYTES = 256 * 2**20  # up to this much freed heap is kept for reuse


def _glibc() -> ctypes.CDLL | None:
    """This process's C library if it has glibc's mallopt, else None."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def keep_freed_memory() -> None:
    """From now on this process serves blocks below MMAP_BYTES from its heap and keeps up to
    TRIM_BYTES of freed heap for reuse (see the module docstring). Calling it again is harmless."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_BYTES)
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_BYTES)
