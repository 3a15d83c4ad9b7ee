"""A freed message buffer goes back to the system at once (issue 14, point 4).

glibc's malloc serves a large allocation with its own mapping, unmapped when it is freed, but
it raises that threshold to the size of each such block freed (up to 32 MiB): after the first
large message, the buffers of the next ones (the decoded attachment, its text, the outgoing
copy) come from the heaps of the threads that made them and stay there once freed. The process
then holds, beside the message in flight, the freed buffers of the messages before it, in
every thread's heap (bench/bench_postfix.py measured a 35 MB message to the portal at 7x its
size in a fresh process, 2.7x with the threshold fixed). `return_large_buffers` fixes the
threshold, which also stops glibc from moving it.
"""

from __future__ import annotations

import ctypes
import os

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
LARGE_BUFFER = 1024 * 1024  # blocks from this size on are mapped apart and unmapped when freed


def return_large_buffers(threshold: int = LARGE_BUFFER) -> bool:
    """Have glibc map every block of `threshold` bytes or more apart, and unmap it when it is
    freed; False (nothing changed) under another C library."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (ValueError, OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))
