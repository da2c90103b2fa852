"""The service keeps freed download chunks' memory for the next ones (scheduler/core/malloc.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# In a fresh process: three chunks read in a worker thread, as the proxy reads ahead, then
# dropped, ten times; prints the share of their pages that were faulted in again.
PROBE = """
import resource, sys
from concurrent.futures import ThreadPoolExecutor
from job_image.storage import CHUNK
from scheduler.core.malloc import keep_freed_chunks

if not keep_freed_chunks():
    print("unsupported")
    sys.exit()
read = lambda: [b"x" * CHUNK for _ in range(3)]
with ThreadPoolExecutor(1) as pool:
    pool.submit(read).result()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        pool.submit(read).result()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(faults / (10 * 3 * CHUNK / resource.getpagesize()))
"""


def test_freed_chunks_are_reused_not_faulted_in_again() -> None:
    """glibc's defaults give such blocks back to the kernel once freed, and all of their pages
    fault (zeroed) again for the next ones; kept, almost none do."""
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    if out.strip() == "unsupported":
        pytest.skip("not glibc: there are no thresholds to set")
    assert float(out) < 0.05, f"{float(out):.0%} of the chunks' pages were faulted in again"
