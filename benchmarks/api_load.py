"""Status reads under load: N concurrent clients polling GET /jobs/{id}.

    .venv/bin/python benchmarks/api_load.py [--pollers 10 100 1000] [--seconds 10] [--interval 0.5]

Starts `python -m scheduler` (one uvicorn process, SQLite), submits 20 jobs that stay queued
(LOCAL_MAX_CONCURRENT=0, so the machine's cores serve requests, not renders), then for each N:
  - paced: N pollers each GET a job every `--interval` seconds (what a polling client does);
  - closed loop: N pollers each GET as fast as the server answers (the server's ceiling);
  - long-poll: N clients each GET `?wait=--wait` again and again (the jobs stay queued, so each
    answer comes at the end of the wait): what N waiting clients cost the server.
Prints requests/s and p50/p99 latency, and for long-polls the server's CPU use. The load
generator shares the 2 cores with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.service import cpu_seconds, running_service, signed_in  # noqa: E402


class Connection:
    """One keep-alive HTTP/1.1 connection on raw asyncio streams: a load generator far lighter
    than an HTTP library, so the figures describe the server rather than the client."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port, self.token = host, port, token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        request = f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {self.token}\r\n\r\n"
        self.writer.write(request.encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def poll(conn: Connection, paths: list[str], until: float, interval: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    i = 0
    while (now := time.perf_counter()) < until:
        try:
            errors += await conn.get(paths[i % len(paths)]) != 200
        except (OSError, asyncio.IncompleteReadError, ValueError, StopIteration):
            errors += 1
            conn.close()
            conn.writer = None
        done = time.perf_counter()
        latencies.append(done - now)
        i += 1
        if interval:
            await asyncio.sleep(max(0.0, interval - (done - now)))
    conn.close()
    return latencies, errors


async def run(url: str, token: str, paths: list[str], pollers: int, seconds: float, interval: float) -> str:
    host, port = url.removeprefix("http://").split(":")
    until = time.perf_counter() + seconds

    async def one(k: int) -> tuple[list[float], int]:
        # paced pollers start spread over one interval, as independent clients would
        await asyncio.sleep(interval * k / pollers if interval else 0)
        return await poll(Connection(host, int(port), token), paths, until, interval)

    results = await asyncio.gather(*(one(k) for k in range(pollers)))
    latencies = sorted(x for lat, _ in results for x in lat)
    errors = sum(e for _, e in results)
    if not latencies:
        return "no requests completed"
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    return f"{len(latencies) / seconds:6.0f} req/s   p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   errors {errors}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pollers", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--interval", type=float, default=0.5, help="seconds between a paced poller's requests"
    )
    parser.add_argument("--wait", type=float, default=5.0, help="?wait= of the long-poll clients")
    args = parser.parse_args()
    with running_service(LOCAL_MAX_CONCURRENT="0", MAX_ACTIVE_JOBS_PER_USER="100") as (url, pid):
        auth = signed_in(url)
        ids = [
            httpx.post(f"{url}/jobs", json={"width": 64, "height": 64}, headers=auth).json()["job_id"]
            for _ in range(20)
        ]
        paths = [f"/jobs/{job_id}" for job_id in ids]
        print(f"GET /jobs/{{id}} over 20 queued jobs, {args.seconds:g} s per run, one uvicorn process")
        for n in args.pollers:
            token = auth["Authorization"].split()[1]
            paced = asyncio.run(run(url, token, paths, n, args.seconds, args.interval))
            print(f"{n:5d} pollers, one request per {args.interval:g} s each: {paced}")
            closed = asyncio.run(run(url, token, paths, n, args.seconds, 0.0))
            print(f"{n:5d} pollers, closed loop:                 {closed}")
            waiting = [f"{path}?wait={args.wait:g}" for path in paths]
            cpu = cpu_seconds(pid)
            held = asyncio.run(run(url, token, waiting, n, args.seconds, 0.0))
            busy = (cpu_seconds(pid) - cpu) / args.seconds * 100
            print(f"{n:5d} clients long-polling ?wait={args.wait:g}:       {held}   server CPU {busy:3.0f}%")


if __name__ == "__main__":
    main()
