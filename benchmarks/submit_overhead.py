"""Submit-to-done overhead of the local runner vs running the render by hand.

    .venv/bin/python benchmarks/submit_overhead.py [--repeat 5]

Both use the same warm PoCL kernel cache. "By hand" is `python -m job_image ... --out` as a
subprocess; "through the API" is POST /jobs then GET /jobs/{id}?wait=60 until succeeded, on
`python -m scheduler` with local storage. Prints medians and the difference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.service import ROOT, running_service, signed_in  # noqa: E402

PARAMS = {"kind": "mandelbrot", "width": 64, "height": 48, "max_iter": 50, "device": "cpu"}


def by_hand(out: Path, cache: str) -> float:
    flags = ["--kind", "mandelbrot", "--width", "64", "--height", "48", "--max-iter", "50", "--device", "cpu"]
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "job_image", *flags, "--out", str(out / "m.png")],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env={"OPENCL_CACHE_DIR": cache, **_host_env()},
    )
    return time.perf_counter() - start


def _host_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "OCL_ICD_VENDORS", "LANG")}


def through_api(client: httpx.Client, auth: dict[str, str]) -> float:
    start = time.perf_counter()
    job_id = client.post("/jobs", json=PARAMS, headers=auth).json()["job_id"]
    while (doc := client.get(f"/jobs/{job_id}", params={"wait": 60}, headers=auth).json())["status"] not in (
        "succeeded",
        "failed",
        "cancelled",
    ):
        pass
    elapsed = time.perf_counter() - start
    assert doc["status"] == "succeeded", doc
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        by_hand(Path(out), cache)  # warm the kernel cache
        hand = [by_hand(Path(out), cache) for _ in range(args.repeat)]
        with running_service(OPENCL_CACHE_DIR=cache, MAX_ACTIVE_JOBS_PER_USER="100") as (url, _pid):
            auth = signed_in(url)
            with httpx.Client(base_url=url, timeout=90) as client:
                api = [through_api(client, auth) for _ in range(args.repeat)]
    h, a = statistics.median(hand), statistics.median(api)
    print(f"64x48 mandelbrot, {args.repeat} runs each, warm kernel cache")
    print(f"by hand (python -m job_image):  median {h * 1000:7.0f} ms  (min {min(hand) * 1000:.0f})")
    print(f"through the API (local runner): median {a * 1000:7.0f} ms  (min {min(api) * 1000:.0f})")
    print(f"overhead: {(a - h) * 1000:+.0f} ms per job ({a / h:.2f}x)")


if __name__ == "__main__":
    main()
