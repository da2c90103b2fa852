"""Start `python -m scheduler` for a benchmark, the way a user runs it, and sign in.

Not a benchmark itself: the API benchmarks import `running_service` and `signed_in`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_service(**env: str) -> Iterator[tuple[str, int]]:
    """Yields (base URL, server PID); the server runs on embedded defaults in a temporary DATA_DIR
    plus `env` (e.g. MINIO_*), and is stopped (SIGTERM, then SIGKILL) at the end."""
    with tempfile.TemporaryDirectory(prefix="fractal-bench-") as data:
        port = free_port()
        full_env = {**os.environ, "DATA_DIR": data, "BCRYPT_ROUNDS": "4", "LOG_LEVEL": "warning", **env}
        proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler", "--port", str(port)], cwd=ROOT, env=full_env
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the service exited with {proc.returncode}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("the service did not come up in 30 s")
                time.sleep(0.1)
            yield url, proc.pid
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def signed_in(url: str, username: str = "bench") -> dict[str, str]:
    creds = {"username": username, "password": "benchmark-password"}
    httpx.post(f"{url}/auth/sign-up", json=creds, timeout=10)
    answer = httpx.post(f"{url}/auth/sign-in", json=creds, timeout=10)
    if answer.status_code != 200:  # e.g. SIGNUPS_PER_MINUTE refused the sign-up: raise it for the benchmark
        raise RuntimeError(f"signing in as {username}: {answer.status_code} {answer.text}")
    token = answer.json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set size (VmHWM) so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
