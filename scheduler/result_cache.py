"""The result cache's key: renders are deterministic, so two requests with equal keys make the
same bytes and the second can reuse the first's stored objects (docs/design.md, "Reuse").

The key covers every field of the request but those known not to change the output (the
callback, the priority among one's own jobs), so a field added to the request later is part of
it unless it is listed here; the renderer's version (job_image/version.py); and where the render
runs: the Kubernetes runner renders with JOB_IMAGE, which may differ from this service's copy of
job_image, so the image's name is in the key too. Numbers are kept as the request gave them:
"0.5" and 0.5 are two keys (equal renders, missed reuse; never a wrong one).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from job_image.version import renderer_version

NOT_OUTPUT = frozenset({"callback_url", "priority"})  # request fields that do not change the bytes


def cache_key(request: dict[str, Any], *, renderer: str) -> str:
    """sha256 of the canonical request (as validated, defaults filled in) and the renderer."""
    canonical = {name: value for name, value in request.items() if name not in NOT_OUTPUT}
    text = json.dumps({"renderer": renderer, "request": canonical}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def renderer_of(runner: str, job_image: str) -> str:
    """What renders, for the key: this job_image's version, and the image on Kubernetes."""
    return f"{renderer_version()} {job_image}" if runner == "kubernetes" else renderer_version()
