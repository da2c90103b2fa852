"""A job whose disk fills while it renders: its process exit is reported whatever happens to its
log, not left `running` for the lost-job sweep. DATA_DIR is a small tmpfs (mounting needs root:
elsewhere the test skips, naming why)."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.scheduler.conftest import Client, sign_up_and_in, submit, wait_for

# renders for seconds on PoCL: long enough to fill the disk meanwhile, short enough to end by itself
MEDIUM = {"width": 2048, "height": 2048, "max_iter": 3000, "center_x": -0.5, "zoom": 1.5, "device": "cpu"}


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[None]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {(mounted.stderr or mounted.stdout).strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> Path:
    """Write zeros until the file system is full; the file that holds them."""
    filler = folder / "filler"
    with filler.open("wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * (1 << 20))
            f.flush()
    return filler


def until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_job_whose_disk_filled_ends_promptly_with_an_error(make_client: Client, tmp_path: Path) -> None:
    data = tmp_path / "data"  # the settings fixture's DATA_DIR: database, results, logs and kernels
    with tmpfs(data, "24m"):
        client = make_client(job_lost_after_seconds=3600, report_retry_seconds=0.5,  # no sweep ends it
                             opencl_cache_dir=data / "opencl-cache",
                             job_backoff_limit=0)  # not tried again once the disk has room: it fails
        alice = sign_up_and_in(client, "alice")
        job_id = submit(client, alice, **MEDIUM)["job_id"]
        wait_for(client, job_id, alice, ("running",))
        pid_file = data / "local-jobs" / f"{job_id}.pid"
        pid = int(pid_file.read_text())
        filler = fill(data)
        try:
            assert until(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), 120), "it kept running"
            # the runner is done with the process (its pid file goes last) while the disk is still full
            assert until(lambda: not pid_file.exists(), 30), "the runner lost the process's exit"
        finally:
            filler.unlink()  # room again: the end can be written to the database now
        doc = wait_for(client, job_id, alice, timeout=30)
        assert doc["status"] == "failed" and doc["error"], doc
        client.__exit__(None, None, None)


def _zombie(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    return True

