"""A tiny stand-in for `python -m job_image`, for runner tests that need no render.

Modes (argv[1]): ok (uploads image.png + result.json like the real job), fail (one stderr
line, exit 2), sleep (runs until killed), wait-file PATH [SECONDS] (runs until PATH exists
or SECONDS, default 60, have passed; then ok), chatty LINES WIDTH (prints LINES numbered lines
of WIDTH two-byte characters each; then ok).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from job_image.storage import storage_from_env


def upload() -> None:
    storage = storage_from_env()
    prefix = os.environ["RESULT_PREFIX"]
    storage.put_bytes(f"{prefix}image.png", b"\x89PNG\r\n\x1a\n stand-in", "image/png")
    result = {"job_id": os.environ["JOB_ID"], "params": json.loads(os.environ["FRACTAL_PARAMS"])}
    storage.put_bytes(f"{prefix}result.json", json.dumps(result).encode(), "application/json")


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 1 else "ok"
    print(f"stand-in job {os.environ.get('JOB_ID')} mode {mode}", flush=True)
    if mode == "fail":
        print("error: width: Input should be greater than or equal to 1", file=sys.stderr)
        return 2
    if mode == "sleep":
        time.sleep(600)
    if mode == "chatty":
        for i in range(int(sys.argv[2])):
            sys.stdout.buffer.write(f"line {i:05d} {'ü' * int(sys.argv[3])}\n".encode())
        sys.stdout.flush()
    if mode == "wait-file":
        deadline = time.monotonic() + (float(sys.argv[3]) if len(sys.argv) > 3 else 60)
        while not Path(sys.argv[2]).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    upload()
    print("uploaded", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
