"""Result streaming: download through the API vs directly from the same S3 endpoint.

    .venv/bin/python benchmarks/streaming.py [--sizes 5 50 200] [--repeat 3]

Starts moto's S3 server on 127.0.0.1 and `python -m scheduler` with MINIO_* pointing at it.
For each size (MB) an object is put beside a job's result (under the job's prefix) and
downloaded with `GET /jobs/{id}/result?file=...`, and directly with the `minio` client in the
same 256 KiB reads. Prints MB/s for both, the ratio, and the API process's peak RSS after each
size (VmHWM only grows, so a flat value means memory does not grow with object size).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from minio import Minio
from moto.server import ThreadedMotoServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.service import free_port, peak_rss_mib, running_service, signed_in  # noqa: E402
from job_image.storage import MinioStorage  # noqa: E402

CHUNK = 256 * 1024
BUCKET = "bench"


def via_api(client: httpx.Client, path: str, name: str, auth: dict[str, str]) -> int:
    got = 0
    with client.stream("GET", path, params={"file": name}, headers=auth) as response:
        response.raise_for_status()
        for chunk in response.iter_raw(CHUNK):
            got += len(chunk)
    return got


def via_s3(direct: Minio, key: str) -> int:
    response = direct.get_object(BUCKET, key)
    try:
        return sum(len(chunk) for chunk in response.stream(CHUNK))
    finally:
        response.close()
        response.release_conn()


def seconds_per_download(download: Callable[[], int], size: int, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        got = download()
        times.append(time.perf_counter() - start)
        assert got == size, f"downloaded {got} of {size} bytes"
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 50, 200], help="object sizes in MB")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    port = free_port()
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    s3.start()
    endpoint = f"127.0.0.1:{port}"
    env = {
        "MINIO_ENDPOINT": endpoint,
        "MINIO_BUCKET": BUCKET,
        "MINIO_ACCESS_KEY": "bench",
        "MINIO_SECRET_KEY": "bench-secret",
    }
    try:
        storage = MinioStorage(endpoint, BUCKET, "bench", "bench-secret")
        direct = Minio(endpoint, "bench", "bench-secret", secure=False)
        with running_service(LOCAL_MAX_CONCURRENT="0", **env) as (url, pid):
            auth = signed_in(url)
            job_id = httpx.post(f"{url}/jobs", json={"width": 8, "height": 8}, headers=auth).json()["job_id"]
            prefix = f"bench/{job_id}/"
            print(f"{'size':>6} {'direct MB/s':>12} {'API MB/s':>9} {'ratio':>6} {'API peak RSS':>13}")
            with httpx.Client(base_url=url, timeout=120) as client:
                for size_mb in args.sizes:
                    name = f"blob-{size_mb}mb.bin"
                    storage.put_bytes(
                        prefix + name, os.urandom(size_mb * 1_000_000), "application/octet-stream"
                    )

                    size = size_mb * 1_000_000
                    s3_t = seconds_per_download(lambda n=name: via_s3(direct, prefix + n), size, args.repeat)
                    api_t = seconds_per_download(
                        lambda n=name: via_api(client, f"/jobs/{job_id}/result", n, auth), size, args.repeat
                    )
                    print(
                        f"{size_mb:4d}MB {size_mb / s3_t:12.0f} {size_mb / api_t:9.0f} {s3_t / api_t:6.2f}"
                        f" {peak_rss_mib(pid):10.0f} MiB"
                    )
    finally:
        s3.stop()


if __name__ == "__main__":
    main()
