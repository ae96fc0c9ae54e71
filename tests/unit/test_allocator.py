"""heap_kept_for_reuse: freed blocks are reused while it is on, and glibc's thresholds come
back after it (checked in a forked child, so this test process's malloc is left alone)."""
import ctypes
import json
import os
import resource

import pytest

from mechgrok import allocator

BLOCK = 20 * 2**20  # below MMAP_BYTES: served by the heap while kept; by a fresh mapping otherwise


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
def test_freed_memory_is_reused_while_training_and_returned_after():
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: measure, report, leave without running the parent's cleanup
        try:
            libc = allocator._glibc()
            with allocator.heap_kept_for_reuse():
                kept = _faults_per_block(libc)
            after = _faults_per_block(libc)
            os.write(write_end, json.dumps([kept, after]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        kept, after = json.loads(pipe.read())
    os.waitpid(pid, 0)
    pages = BLOCK / resource.getpagesize()
    assert kept < 0.01 * pages  # the freed block is reused: no new pages
    assert after > 0.9 * pages  # thresholds back at 128 KiB: each block is a fresh mapping again


def test_does_nothing_without_glibc(monkeypatch):
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    with allocator.heap_kept_for_reuse():
        pass
