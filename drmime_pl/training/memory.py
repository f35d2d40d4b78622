"""Keep freed memory for reuse instead of handing it back to the system between the many large, short-lived
tensors of a registration.

A registration allocates and frees tensors of 1-30 MB thousands of times (the search's canvases and spectra, the
polish's warped candidates). glibc's ``malloc`` serves a block above its *mmap threshold* with a fresh mapping
from the system, whose pages are faulted in and zeroed on first touch, and returns it on ``free``. The threshold
moves with what the process freed before, so the same polish ran 16% slower after one version of the search than
after another, and 2.7 times slower with a threshold fixed at 128 kB (benchmarks/RESULTS.md, eighth round). Fixed
at glibc's largest value (32 MB) with a trim threshold that keeps freed memory in the heap, blocks of a
registration's size are reused from the heap, whatever ran before.

Linux with glibc only; elsewhere, or when the user set ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_``
(their choice wins), nothing is changed. The cost: the heap keeps what it once held, so a process's resident
memory stays near its peak (which ``benchmarks/speed.py`` reports anyway) until it exits.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: glibc's mallopt parameters (malloc.h) and the values set.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's maximum on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD = 1024 * 1024 * 1024

_done = False


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds once per process (see the module's docstring). Returns whether they
    are set (now or by an earlier call)."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux") or any(
            k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
