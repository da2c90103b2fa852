"""Keep the allocator from handing download chunks' memory back to the kernel after each one.

A proxied download passes through the service in multi-MiB chunks (job_image/storage.CHUNK),
each a new `bytes`. glibc serves such a block from mmap, or trims it off the heap once freed,
so every chunk's pages are faulted in and zeroed again: a quarter of the service's CPU per
proxied byte (benchmarks/streaming.py). With fixed thresholds the freed blocks stay in the heap
and the next chunk reuses them; what is kept is bounded (TRIM_THRESHOLD free at the top of
each arena), and peak memory is unchanged.
"""

from __future__ import annotations

import ctypes

from job_image.storage import CHUNK

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 2 * CHUNK  # a chunk (and what Python adds to it) comes from the heap
TRIM_THRESHOLD = 4 * CHUNK  # free memory an arena keeps before it gives the rest back


def keep_freed_chunks() -> bool:
    """Sets glibc's thresholds for this process; False where they cannot be set (another C
    library: musl's mallopt does nothing)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
