"""The renderer's version: the result cache (scheduler/result_cache.py) reuses a stored render
only for requests that would make the same bytes, so this changes whenever they could change.

It is a digest of what decides the output: this package's sources (kernels, colouring, PNG
writing, the parameter model) and the zlib that compresses the PNG. Edit any of them and earlier
results are no longer reused: no one has to remember to bump a number. RENDER_REVISION is for
what the digest cannot see (e.g. a change of the OpenCL platform's maths): raise it by hand.
"""

from __future__ import annotations

import hashlib
import zlib
from functools import cache
from pathlib import Path

RENDER_REVISION = 1
SOURCES = ("*.py", "kernels/*.cl")


@cache
def renderer_version() -> str:
    root = Path(__file__).parent
    digest = hashlib.sha256(f"{RENDER_REVISION}\0{zlib.ZLIB_RUNTIME_VERSION}".encode())
    for path in sorted(p for pattern in SOURCES for p in root.glob(pattern)):
        digest.update(b"\0" + str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return f"{RENDER_REVISION}-{digest.hexdigest()[:16]}"
