"""keep_freed_memory: a freed block is reused instead of mapped afresh (checked in a forked
child, so this test process's malloc is left alone)."""
import ctypes
import json
import os
import resource

import pytest

from mechgrok import allocator

BLOCK = 20 * 2**20  # below MMAP_BYTES: served by the heap once kept; by a fresh mapping at glibc's start


def _faults_per_block(libc: ctypes.CDLL, cycles: int = 8) -> float:
    """Minor page faults per malloc + touch + free cycle of BLOCK bytes, after one warm-up."""
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]

    def cycle() -> None:
        block = libc.malloc(BLOCK)
        ctypes.memset(block, 1, BLOCK)
        libc.free(block)

    cycle()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(cycles):
        cycle()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / cycles


@pytest.mark.skipif(allocator._glibc() is None, reason="glibc's mallopt is not available here")
def test_freed_memory_is_kept_for_reuse():
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: measure, report, leave without running the parent's cleanup
        try:
            libc = allocator._glibc()
            libc.mallopt(allocator.M_TRIM_THRESHOLD, 128 * 2**10)  # glibc's starting thresholds, fixed
            libc.mallopt(allocator.M_MMAP_THRESHOLD, 128 * 2**10)
            at_start = _faults_per_block(libc)
            allocator.keep_freed_memory()
            kept = _faults_per_block(libc)
            os.write(write_end, json.dumps([at_start, kept]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        at_start, kept = json.loads(pipe.read())
    os.waitpid(pid, 0)
    pages = BLOCK / resource.getpagesize()
    assert at_start > 0.9 * pages  # each block a fresh mapping: every page faults in
    assert kept < 0.01 * pages  # the freed block is reused: no new pages
