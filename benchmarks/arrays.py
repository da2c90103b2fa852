"""Render arrays on the local runner: a gigapixel image, task overhead, fairness, a zoom video.

    .venv/bin/python benchmarks/arrays.py [--size 32768] [--overhead] [--fairness] [--video]
                                          [--all]

Each part starts `python -m scheduler` (SQLite, local runner, LOCAL_MAX_CONCURRENT=2) and
prints figures, never pass/fail:
- gigapixel (`--size`, default 32768: 32768² samples, the whole Mandelbrot set, max_iter 1000,
  split into tasks of about 4 M pixels): the job's wall time, the API's peak RSS before and
  after the joined PNG is downloaded, and the download's MB/s against reading the parts'
  files straight from the disk;
- `--overhead`: a 4096² frame as 1, 4, 16 and 64 tasks, each job's wall time;
- `--fairness`: single jobs (512², one each from 10 users, one every 2 s) with and without a
  256-task array of another user running: their waits (admission - submit), p50 and p95;
- `--video`: 120 frames of 1280x720 zooming into the seahorse valley, mp4: wall time (all
  tasks, then the encode), file size, and the frames counted by decoding it.
"""

from __future__ import annotations

import argparse
import io
import math
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.service import peak_rss_mib, running_service, signed_in  # noqa: E402

TASK_PIXELS = 4 << 20  # about 4 M pixels a task
BASE = {"kind": "mandelbrot", "max_iter": 1000, "device": "cpu", "precision": "float32"}


def seconds(a: str | None, b: str | None) -> float:
    if not a or not b:
        return float("nan")
    start, end = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (a, b))
    return (end - start).total_seconds()


def submit(url: str, auth: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(f"{url}/jobs", json=body, headers=auth, timeout=60)
    r.raise_for_status()
    return r.json()


def wait(url: str, auth: dict[str, str], job_id: str, limit: float = 7200,
         until: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
    """The job's document once it has ended (or `until` holds for it), within `limit` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        params = {"wait": 0 if until else 30}
        doc = httpx.get(f"{url}/jobs/{job_id}", params=params, headers=auth, timeout=60).json()
        if until(doc) if until else doc["status"] in ("succeeded", "failed", "cancelled"):
            return doc
        if until:
            time.sleep(0.1)
    raise RuntimeError(f"job {job_id} did not reach its state in {limit} s")


def gigapixel(size: int) -> None:
    tasks = max(1, math.ceil(size * size / TASK_PIXELS))
    env = {"LOCAL_MAX_CONCURRENT": "2", "JOB_TIMEOUT_SECONDS": "3600"}
    with running_service(**env) as (url, pid):
        auth = signed_in(url)
        t0 = time.monotonic()
        job = submit(url, auth, {**BASE, "width": size, "height": size, "split": tasks})
        done = wait(url, auth, job["job_id"])
        wall = time.monotonic() - t0
        span = seconds(done["started_at"], done["finished_at"])
        print(f"gigapixel {size}x{size} ({size * size / 1e6:.0f} M pixels) as {tasks} tasks: "
              f"{done['status']}, wall {wall:.1f} s (first task's start to the end: {span:.1f} s)")
        if done["status"] != "succeeded":
            raise SystemExit(f"  the job failed: {done['error']}")
        before = peak_rss_mib(pid)
        t0, got = time.monotonic(), 0
        with httpx.stream("GET", f"{url}/jobs/{job['job_id']}/result", headers=auth, timeout=600) as r:
            declared = int(r.headers["content-length"])
            for chunk in r.iter_bytes(1 << 20):
                got += len(chunk)
        api_s = time.monotonic() - t0
        after = peak_rss_mib(pid)
        environ = Path(f"/proc/{pid}/environ").read_text().split("\0")
        data = Path(next(v for v in environ if v.startswith("DATA_DIR=")).split("=", 1)[1])
        parts = sorted((data / "results" / "bench" / job["job_id"] / "parts").glob("*.png"))
        t0, direct = time.monotonic(), 0
        for path in parts:  # the same bands straight from the disk: the baseline
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    direct += len(chunk)
        direct_s = time.monotonic() - t0
        print(f"  joined PNG {got / 1e6:.1f} MB (Content-Length {declared}), {got / 1e6 / api_s:.0f} MB/s; "
              f"API peak RSS {before:.0f} MiB before, {after:.0f} MiB after the download")
        print(f"  the {len(parts)} parts read from the disk ({direct / 1e6:.1f} MB): "
              f"{direct / 1e6 / direct_s:.0f} MB/s")


def overhead() -> None:
    with running_service(LOCAL_MAX_CONCURRENT="2") as (url, _pid):
        auth = signed_in(url)
        submit_and_wait: dict[int, float] = {}
        for tasks in (1, 4, 16, 64):
            t0 = time.monotonic()
            job = submit(url, auth, {**BASE, "width": 4096, "height": 4096, "split": tasks})
            done = wait(url, auth, job["job_id"])
            submit_and_wait[tasks] = time.monotonic() - t0
            print(f"4096x4096 as {tasks:2d} tasks: {done['status']}, wall {submit_and_wait[tasks]:.1f} s "
                  f"({submit_and_wait[tasks] / submit_and_wait[1]:.2f}x one task)")


def singles_waits(url: str, users: list[dict[str, str]]) -> list[float]:
    jobs = []
    for auth in users:
        jobs.append((auth, submit(url, auth, {**BASE, "width": 512, "height": 512})["job_id"]))
        time.sleep(2)  # users arrive 2 s apart, as independent users do (pacing, not a wait)
    waits = []
    for auth, job_id in jobs:
        doc = wait(url, auth, job_id)
        waits.append(seconds(doc["created_at"], doc["started_at"]))
    return waits


def fairness() -> None:
    for with_array in (False, True):
        with running_service(LOCAL_MAX_CONCURRENT="2", SIGNUPS_PER_MINUTE="60") as (url, _pid):
            users = [signed_in(url, f"user{i}") for i in range(10)]
            heavy = signed_in(url, "heavy")
            if with_array:
                big = submit(url, heavy, {**BASE, "width": 2048, "height": 2048, "split": 256})
                wait(url, heavy, big["job_id"], until=lambda doc: doc["tasks"]["running"] == 2)  # both slots
            waits = sorted(singles_waits(url, users))
            p95 = waits[min(len(waits) - 1, math.ceil(0.95 * len(waits)) - 1)]
            what = "with a 256-task array running" if with_array else "alone"
            print(f"10 single jobs {what}: wait p50 {statistics.median(waits):.2f} s, p95 {p95:.2f} s")
            if with_array:
                doc = httpx.get(f"{url}/jobs/{big['job_id']}", headers=heavy, timeout=60).json()
                print(f"  the array meanwhile: {doc['tasks']}")
                httpx.delete(f"{url}/jobs/{big['job_id']}", headers=heavy, timeout=120)


def video() -> None:
    import av

    with running_service(LOCAL_MAX_CONCURRENT="2") as (url, _pid):
        auth = signed_in(url)
        body = {**BASE, "width": 1280, "height": 720, "center_x": -0.743643887037151,
                "center_y": 0.131825904205330, "zoom": 1.0,
                "animation": {"frames": 120, "zoom_to": 1e4, "fps": 30, "format": "mp4"}}
        t0 = time.monotonic()
        job = submit(url, auth, body)
        done = wait(url, auth, job["job_id"])
        frames_s = time.monotonic() - t0
        r = httpx.get(f"{url}/jobs/{job['job_id']}/result", headers=auth, timeout=1200)
        total_s = time.monotonic() - t0
        with av.open(io.BytesIO(r.content)) as container:
            decoded = list(container.decode(video=0))
        print(f"zoom video 120 x 1280x720: {done['status']}, frames rendered in {frames_s:.1f} s, "
              f"video ready at {total_s:.1f} s; {len(r.content) / 1e6:.2f} MB {r.headers['content-type']}; "
              f"decoded {len(decoded)} frames of {decoded[0].width}x{decoded[0].height}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=0, help="the split image's side (32768: a gigapixel)")
    ap.add_argument("--overhead", action="store_true")
    ap.add_argument("--fairness", action="store_true")
    ap.add_argument("--video", action="store_true")
    ap.add_argument("--all", action="store_true", help="all four, the image at 32768")
    args = ap.parse_args()
    if args.size or args.all:
        gigapixel(args.size or 32768)
    if args.overhead or args.all:
        overhead()
    if args.fairness or args.all:
        fairness()
    if args.video or args.all:
        video()


if __name__ == "__main__":
    main()
