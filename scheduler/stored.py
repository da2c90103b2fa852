"""Small stored objects read whole: a job's `job.log` or `result.json` (blocking: call in a thread)."""

from __future__ import annotations

from job_image.storage import Storage


def read_object(storage: Storage, key: str) -> bytes | None:
    """The object's bytes, or None when there is none."""
    if storage.stat(key) is None:
        return None
    return b"".join(storage.iter_bytes(key))
