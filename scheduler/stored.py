"""Small stored objects read whole: a job's `job.log` or `result.json` (blocking: call in a thread)."""

from __future__ import annotations

from job_image.storage import Storage


def read_object(storage: Storage, key: str) -> bytes | None:
    """The object's bytes, or None when there is none."""
    download = storage.open(key)
    return None if download is None else b"".join(download.chunks)
