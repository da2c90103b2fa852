"""A tiny stand-in for `python -m job_image`, for runner tests that need no render. A render array's
task (RENDER_ARRAY) writes its part, parts/<i>.png and parts/<i>.json.

Modes (argv[1]): ok (uploads image.png + result.json like the real job), fail (one stderr line,
exit 2: invalid parameters), crash (one stderr line, exit 1), fail-task TASKS [PATH] (exit 1 when
its task, from JOB_COMPLETION_INDEX and TASK_INDEXES, is one of TASKS, until PATH exists), sleep
(runs until stopped), wait-file PATH [SECONDS] (runs until PATH exists or SECONDS, default 60,
have passed; then ok), chatty LINES WIDTH (prints LINES numbered lines of WIDTH two-byte
characters each; then ok), stubborn (sleeps with no SIGTERM handler: as a container's PID 1 it
ignores SIGTERM and is killed after the grace period). Like the real job, every other mode exits
143 on SIGTERM.
"""

from __future__ import annotations

import signal
import sys

if sys.argv[1:2] != ["stubborn"]:  # before the slow imports: a SIGTERM may come at once
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from job_image.storage import storage_from_env  # noqa: E402
from job_image.tasks import from_env  # noqa: E402


def upload(task: int | None) -> None:
    """image.png and result.json, or a render array's task's part (as the real job names them)."""
    storage = storage_from_env()
    prefix = os.environ["RESULT_PREFIX"]
    part = task is not None
    image, result = (f"parts/{task}.png", f"parts/{task}.json") if part else ("image.png", "result.json")
    storage.put_bytes(f"{prefix}{image}", b"\x89PNG\r\n\x1a\n stand-in", "image/png")
    doc = {"job_id": os.environ["JOB_ID"], "params": json.loads(os.environ["FRACTAL_PARAMS"]), "task": task}
    storage.put_bytes(f"{prefix}{result}", json.dumps(doc).encode(), "application/json")


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 1 else "ok"
    array, index = from_env(dict(os.environ))
    task = index if array is not None else None
    print(f"stand-in job {os.environ.get('JOB_ID')} mode {mode} task {index}", flush=True)
    if mode == "fail-task" and str(index) in sys.argv[2].split(",") and not (
        len(sys.argv) > 3 and Path(sys.argv[3]).exists()
    ):
        print(f"error: task {index} crashed", file=sys.stderr)
        return 1
    if mode == "fail":
        print("error: width: Input should be greater than or equal to 1", file=sys.stderr)
        return 2
    if mode == "crash":
        print("error: the render crashed", file=sys.stderr)
        return 1
    if mode in ("sleep", "stubborn"):
        time.sleep(600)
    if mode == "chatty":
        for i in range(int(sys.argv[2])):
            sys.stdout.buffer.write(f"line {i:05d} {'ü' * int(sys.argv[3])}\n".encode())
        sys.stdout.flush()
    if mode == "wait-file":
        deadline = time.monotonic() + (float(sys.argv[3]) if len(sys.argv) > 3 else 60)
        while not Path(sys.argv[2]).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    upload(task)
    print("uploaded", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
