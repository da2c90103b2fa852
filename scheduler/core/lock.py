"""One service per data directory: an advisory `flock` on `DATA_DIR/service.lock`.

Taken before the service reads or changes anything in DATA_DIR: start-up recovery ends the job
processes a previous run left there, so a second service on the same directory would stop the
first one's jobs. The holder writes its PID into the file, so a refusal names it. The kernel
drops the lock when the holder's process ends, however it ends: a crash leaves no stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_NAME = "service.lock"


class DataDirInUse(RuntimeError):
    """Another process holds the data directory's lock."""


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (a no-op while held), or raise DataDirInUse naming the holder."""
        if self._fd is not None:
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            who = f"PID {holder}" if holder.isdigit() else "a process that has not written its PID yet"
            raise DataDirInUse(
                f"another fractal-scheduler ({who}) is using DATA_DIR {self.path.parent}; "
                "stop it first, or give this one a DATA_DIR of its own"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (closing the file does); the file stays, for the next holder to reuse."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
