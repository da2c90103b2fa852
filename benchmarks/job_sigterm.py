"""How soon `python -m job_image` ends after SIGTERM, in the middle of a worst-case render.

    .venv/bin/python benchmarks/job_sigterm.py [--repeat 3]

The render (4096², max_iter 100000, float64) spends seconds in each OpenCL call; the signal is
sent after its first progress line. Measured as a plain child and, as root, as PID 1 of its own
PID namespace (`unshare --pid`, what a container is). docs/design.md asks for under a second.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORST = '{"width": 4096, "height": 4096, "max_iter": 100000, "precision": "float64", "device": "cpu"}'


def once(pid1: bool, storage: str) -> tuple[float, int]:
    command = [sys.executable, "-m", "job_image"]
    if pid1:
        command = ["unshare", "--pid", "--fork", "--kill-child", *command]
    env = {**os.environ, "JOB_ID": "7" * 32, "FRACTAL_PARAMS": WORST, "STORAGE_DIR": storage,
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    for line in proc.stdout or ():
        if line.startswith("progress "):
            break
    target = proc.pid
    if pid1:
        target = int(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()[0])
    sent = time.perf_counter()
    os.kill(target, signal.SIGTERM)
    code = proc.wait(timeout=120)
    return time.perf_counter() - sent, code


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    modes = [False, True] if os.geteuid() == 0 else [False]
    with tempfile.TemporaryDirectory() as storage:
        for pid1 in modes:
            runs = [once(pid1, storage) for _ in range(args.repeat)]
            seconds = [s for s, _ in runs]
            print(f"{'PID 1 of a namespace' if pid1 else 'plain child':>22}: SIGTERM -> exit "
                  f"median {statistics.median(seconds):.3f} s, max {max(seconds):.3f} s, "
                  f"exit codes {sorted({c for _, c in runs})}")


if __name__ == "__main__":
    main()
