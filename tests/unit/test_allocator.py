"""keep_freed_memory: a freed block is reused instead of mapped afresh. Measured in a fresh
interpreter: a test process's heap already holds freed blocks that would serve the request."""

import json
import resource
import subprocess
import sys

import pytest

from mechgrok.recording import allocator

BLOCK = (
    20 * 2**20
)  # below MMAP_BYTES: served by the heap once kept; by a fresh mapping at glibc's start

MEASURE = f"""
import ctypes, json, resource
from mechgrok.recording import allocator

libc = allocator._glibc()
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]

def faults_per_block(cycles=8):
    # minor page faults per malloc + touch + free of {BLOCK} bytes, after one warm-up cycle
    def cycle():
        block = libc.malloc({BLOCK})
        ctypes.memset(block, 1, {BLOCK})
        libc.free(block)
    cycle()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(cycles):
        cycle()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / cycles

libc.mallopt(allocator.M_TRIM_THRESHOLD, 128 * 2**10)  # glibc's starting thresholds, fixed
libc.mallopt(allocator.M_MMAP_THRESHOLD, 128 * 2**10)
at_start = faults_per_block()
allocator.keep_freed_memory()
print(json.dumps([at_start, faults_per_block()]))
"""


@pytest.mark.skipif(allocator._glibc() is None, reason="glibc's mallopt is not available here")
def test_freed_memory_is_kept_for_reuse():
    run = subprocess.run(
        [sys.executable, "-c", MEASURE], capture_output=True, text=True, check=True
    )
    at_start, kept = json.loads(run.stdout)
    pages = BLOCK / resource.getpagesize()
    assert at_start > 0.9 * pages  # each block a fresh mapping: every page faults in
    assert kept < 0.01 * pages  # the freed block is reused: no new pages
