"""The result cache: a repeated request against a fresh render, and the explorer's back step.

    .venv/bin/python benchmarks/result_cache.py [--repeat 5] [--size 800x600] [--max-iter 500]

Starts `python -m scheduler` (embedded defaults, the local runner), then, `--repeat` times with a
new frame each time (the centre moves, so nothing is reused between rounds):
  - fresh: POST /jobs, then GET /jobs/{id}?wait= until it has succeeded (the render and its job);
  - repeated: the same request again: POST /jobs answers `succeeded` with `cached: true`;
  - back step: what the explorer does on back or zoom-out to a frame it showed before: POST the
    earlier frame and download its PNG (cached, so one round trip and the bytes);
  - merged: the same request twice at once while the first has not ended: the second follows the
    first (one render) and the pair's submit-to-both-succeeded time is printed beside the fresh one.
Prints the median seconds of each and the ratio to the fresh render.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.service import running_service, signed_in  # noqa: E402


def until_succeeded(http: httpx.Client, job: dict[str, Any]) -> dict[str, Any]:
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        job = http.get(f"/jobs/{job['job_id']}", params={"wait": 30}).json()
    assert job["status"] == "succeeded", job
    return job


def fresh(http: httpx.Client, body: dict[str, Any]) -> float:
    start = time.perf_counter()
    job = until_succeeded(http, http.post("/jobs", json=body).json())
    assert not job["cached"], job
    return time.perf_counter() - start


def repeated(http: httpx.Client, body: dict[str, Any]) -> float:
    start = time.perf_counter()
    job = until_succeeded(http, http.post("/jobs", json=body).json())
    assert job["cached"], job
    return time.perf_counter() - start


def back_step(http: httpx.Client, body: dict[str, Any]) -> float:
    start = time.perf_counter()
    job = until_succeeded(http, http.post("/jobs", json=body).json())
    png = http.get(f"/jobs/{job['job_id']}/result").content
    assert job["cached"] and png.startswith(b"\x89PNG"), job
    return time.perf_counter() - start


def merged(http: httpx.Client, body: dict[str, Any]) -> float:
    start = time.perf_counter()
    first, second = (http.post("/jobs", json=body).json() for _ in range(2))
    assert second.get("cached") or first["job_id"] in (second["message"] or ""), second
    for job in (first, second):
        until_succeeded(http, job)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--size", default="800x600")
    parser.add_argument("--max-iter", type=int, default=500)
    args = parser.parse_args()
    width, height = (int(n) for n in args.size.split("x"))
    times: dict[str, list[float]] = {"fresh": [], "repeated": [], "back step": [], "merged pair": []}
    with running_service(LOCAL_MAX_CONCURRENT="1") as (url, _pid):
        http = httpx.Client(base_url=url, headers=signed_in(url), timeout=60)
        for i in range(args.repeat):
            body = {"width": width, "height": height, "max_iter": args.max_iter, "device": "cpu",
                    "center_x": -0.75 + i * 1e-3, "center_y": 0.1}
            times["fresh"].append(fresh(http, body))
            times["repeated"].append(repeated(http, body))
            times["back step"].append(back_step(http, body))
            times["merged pair"].append(merged(http, {**body, "center_y": 0.2}))
        http.close()
    base = statistics.median(times["fresh"])
    print(f"{width}x{height}, max_iter {args.max_iter}, {args.repeat} frames; submit -> succeeded, median:")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:12s} {median * 1000:8.1f} ms   {median / base:6.3f} of a fresh render")


if __name__ == "__main__":
    main()
