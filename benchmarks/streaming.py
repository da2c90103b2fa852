"""Result streaming: download through the API vs directly from the same S3 endpoint.

    .venv/bin/python benchmarks/streaming.py [--sizes 5 50 200] [--repeat 5]

Starts moto's S3 server (its own process, as MinIO would be) on 127.0.0.1 and
`python -m scheduler` with MINIO_* pointing at it. For each size (MB) an object is put beside a
job's result (under the job's prefix) and downloaded with `GET /jobs/{id}/result?file=...`,
through `?redirect=true` (the 307 to a presigned URL, then S3 itself), and directly with the
`minio` client, in turn; all read with urllib3 in 256 KiB pieces.
Prints the median MB/s of each, the proxy's and the redirect's ratio to direct, the API
process's CPU seconds per GB it proxied,
and its peak RSS after each size (VmHWM only grows, so a flat value means memory does not
grow with object size).
On 2 cores the API path runs three busy processes (S3, API, client) where the direct path runs two.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import urllib3
from minio import Minio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.service import cpu_seconds, free_port, peak_rss_mib, running_service, signed_in  # noqa: E402
from job_image.s3 import MinioStorage  # noqa: E402

CHUNK = 256 * 1024
BUCKET = "bench"


def via_api(http: urllib3.PoolManager, url: str, auth: dict[str, str]) -> int:
    """Read with urllib3, the library the minio client uses, so both paths have the same client."""
    response = http.request("GET", url, headers=auth, preload_content=False)
    try:
        assert response.status == 200, response.status
        return sum(len(chunk) for chunk in response.stream(CHUNK))
    finally:
        response.release_conn()


def via_redirect(http: urllib3.PoolManager, url: str, auth: dict[str, str]) -> int:
    """`?redirect=true`: the API answers 307 to a presigned URL, which is read straight from S3
    (without the token), as `fractalctl download` does."""
    moved = http.request("GET", url + "&redirect=true", headers=auth, redirect=False)
    assert moved.status == 307, moved.status
    response = http.request("GET", moved.headers["Location"], preload_content=False)
    try:
        assert response.status == 200, response.status
        return sum(len(chunk) for chunk in response.stream(CHUNK))
    finally:
        response.release_conn()


def via_s3(direct: Minio, key: str) -> int:
    response = direct.get_object(BUCKET, key)
    try:
        return sum(len(chunk) for chunk in response.stream(CHUNK))
    finally:
        response.close()
        response.release_conn()


def timed(download: Callable[[], int], size: int) -> float:
    start = time.perf_counter()
    got = download()
    assert got == size, f"downloaded {got} of {size} bytes"
    return time.perf_counter() - start


def wait_for_port(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 50, 200], help="object sizes in MB")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    port = free_port()
    # its own process, as MinIO would be: the S3 server then competes with neither client
    s3 = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"127.0.0.1:{port}"
    env = {
        "MINIO_ENDPOINT": endpoint,
        "MINIO_BUCKET": BUCKET,
        "MINIO_ACCESS_KEY": "bench",
        "MINIO_SECRET_KEY": "bench-secret",
    }
    try:
        wait_for_port(port)
        storage = MinioStorage(endpoint, BUCKET, "bench", "bench-secret")
        direct = Minio(endpoint, "bench", "bench-secret", secure=False)
        with running_service(LOCAL_MAX_CONCURRENT="0", **env) as (url, pid):
            auth = signed_in(url)
            job_id = httpx.post(f"{url}/jobs", json={"width": 8, "height": 8}, headers=auth).json()["job_id"]
            prefix = f"bench/{job_id}/"
            print(
                f"{'size':>6} {'direct MB/s':>12} {'API MB/s':>9} {'ratio':>6} {'redirect MB/s':>14}"
                f" {'ratio':>6} {'API CPU s/GB':>13} {'API peak RSS':>13}"
            )
            http = urllib3.PoolManager()
            for size_mb in args.sizes:
                name, size = f"blob-{size_mb}mb.bin", size_mb * 1_000_000
                storage.put_bytes(prefix + name, os.urandom(size), "application/octet-stream")
                api_url = f"{url}/jobs/{job_id}/result?file={name}"
                s3_times, api_times, redirect_times, api_cpu = [], [], [], 0.0
                for _ in range(args.repeat):  # alternated, so drift in the machine hits all alike
                    s3_times.append(timed(lambda n=name: via_s3(direct, prefix + n), size))
                    cpu_before = cpu_seconds(pid)
                    api_times.append(timed(lambda u=api_url: via_api(http, u, auth), size))
                    api_cpu += cpu_seconds(pid) - cpu_before
                    redirect_times.append(timed(lambda u=api_url: via_redirect(http, u, auth), size))
                cpu_per_gb = api_cpu / (size * args.repeat / 1e9)
                s3_t, api_t = statistics.median(s3_times), statistics.median(api_times)
                redirect_t = statistics.median(redirect_times)
                print(
                    f"{size_mb:4d}MB {size_mb / s3_t:12.0f} {size_mb / api_t:9.0f} {s3_t / api_t:6.2f}"
                    f" {size_mb / redirect_t:14.0f} {s3_t / redirect_t:6.2f}"
                    f" {cpu_per_gb:13.2f} {peak_rss_mib(pid):9.0f} MiB"
                )
    finally:
        s3.terminate()
        s3.wait(timeout=10)


if __name__ == "__main__":
    main()
