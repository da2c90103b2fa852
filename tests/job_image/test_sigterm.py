"""SIGTERM during a worst-case render: the job stops, exit 143, one stderr line, nothing stored.

The case that matters is PID 1 of a container, where a process without a handler never sees
SIGTERM: run as PID 1 of its own PID namespace (`unshare --pid`, needs root) and signalled from
outside, as the container runtime does. The plain-child case runs everywhere.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .conftest import REPO, job_env

JOB_ID = "5" * 32
# about 20 minutes of all cores: a band lasts seconds, so the signal lands inside an OpenCL call
WORST = '{"width": 4096, "height": 4096, "max_iter": 100000, "precision": "float64", "device": "cpu"}'
DEADLINE = 60.0


def start(storage: Path, *, pid1: bool) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "job_image"]
    if pid1:
        command = ["unshare", "--pid", "--fork", "--kill-child", *command]
    env = job_env(JOB_ID=JOB_ID, FRACTAL_PARAMS=WORST, STORAGE_DIR=str(storage))
    pipe = subprocess.PIPE
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=pipe, stderr=pipe, text=True)


def wait_for_progress(proc: subprocess.Popen[str]) -> None:
    """Until the job prints its first progress line: it is rendering, not starting up."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or ()], daemon=True).start()
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            if lines.get(timeout=0.5).startswith("progress "):
                return
        except queue.Empty:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    raise AssertionError("the render never reported progress")


def namespace_init(unshare: subprocess.Popen[str]) -> int:
    """The host pid of the job: unshare's only child, PID 1 inside the namespace."""
    children = Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children").read_text().split()
    assert len(children) == 1, children
    pid = int(children[0])
    status = Path(f"/proc/{pid}/status").read_text()
    assert "NSpid:" in status and status.split("NSpid:")[1].split("\n")[0].split()[-1] == "1"
    return pid


def stop(proc: subprocess.Popen[str], pid: int) -> tuple[int, str, float]:
    sent = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    try:
        code = proc.wait(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, proc.stderr.read() if proc.stderr else "", time.monotonic() - sent


def stored(storage: Path) -> list[Path]:
    return [p for p in storage.rglob("*") if p.is_file()] if storage.exists() else []


def test_sigterm_stops_a_plain_child(tmp_path: Path) -> None:
    proc = start(tmp_path / "store", pid1=False)
    wait_for_progress(proc)
    code, stderr, seconds = stop(proc, proc.pid)
    print(f"stopped {seconds:.3f} s after SIGTERM")
    assert (code, stderr) == (143, "error: stopped by SIGTERM\n")
    assert stored(tmp_path / "store") == []


@pytest.mark.skipif(os.geteuid() != 0, reason="a PID namespace needs root (unshare --pid)")
def test_sigterm_stops_the_job_as_pid_1_of_its_namespace(tmp_path: Path) -> None:
    proc = start(tmp_path / "store", pid1=True)
    wait_for_progress(proc)
    code, stderr, seconds = stop(proc, namespace_init(proc))
    print(f"stopped {seconds:.3f} s after SIGTERM")
    assert (code, stderr) == (143, "error: stopped by SIGTERM\n")
    assert stored(tmp_path / "store") == []
