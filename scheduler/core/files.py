"""The service's files are private to its user: the database holds bcrypt hashes, the results
and logs are the users' own.

`python -m scheduler` sets the umask to PRIVATE_UMASK, so everything it and its local jobs create
(database, WAL, results, logs, kernel cache) is 0600/0700. `make_private` tightens what an
earlier version, or a run under another umask, left readable by others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) as 0700, or tighten it if it exists; returns it."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
    make_private(path)
    return path


def make_private(path: Path) -> None:
    """Remove group and other permissions from `path` when this process owns it.

    A path owned by someone else (a volume root owned by root, shared through fsGroup) is left
    alone: it is not ours to change, and the files inside are still created private.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    loose = stat.S_IMODE(info.st_mode) & 0o077
    if not loose or info.st_uid != os.geteuid():
        return
    os.chmod(path, stat.S_IMODE(info.st_mode) & 0o700)
    log.info("%s was readable by other users (mode %o); made private", path, stat.S_IMODE(info.st_mode))


def private_file(path: Path) -> None:
    """Create `path` empty as 0600 unless it exists; tighten it (and SQLite's -wal/-shm) if loose."""
    private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for sibling in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        make_private(sibling)
