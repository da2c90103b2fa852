"""Status reads under load: N concurrent clients polling GET /jobs/{id}, long-polling, or
following Server-Sent Events.

    .venv/bin/python benchmarks/api_load.py [--pollers 10 100 1000] [--seconds 10] [--interval 1]
                                            [--connections 50] [--sse 100 1000] [--changes 2]
                                            [--flood 50] [--resume 10000 [--resume-streams 8]]

Starts `python -m scheduler` (one uvicorn process, SQLite), submits 20 jobs that stay queued
(LOCAL_MAX_CONCURRENT=0, so the machine's cores serve requests, not renders). First, the yardstick:
`--connections` clients in a closed loop against the service, then against a minimal FastAPI app
with the same bearer check and one SQLite read of the same database (benchmarks/baseline_app.py),
then the service again, each alone on the machine; the ratio of requests/s is the service's share
of what FastAPI itself allows (goal: 0.8 or more, p99 under 100 ms). Then, for each N:
  - paced: N pollers each GET a job every `--interval` seconds (what a polling client does);
  - closed loop: N pollers each GET as fast as the server answers (the server's ceiling);
  - long-poll: N clients each GET `?wait=--wait` again and again (the jobs stay queued, so each
    answer comes at the end of the wait): what N waiting clients cost the server.
  - SSE: N clients each follow `GET /events` (all of the user's jobs), first idle (what holding
    N open streams costs), then while jobs change `--changes` times a second (a job submitted
    and cancelled, two events each, so N x 2 x changes deliveries a second), then with N
    clients that never read (their queues are bounded: the server drops them, its memory stays).
With --flood, first one user at their quota of unfinished jobs sends costly submits (each
refused) on connections closed at once, while another user reads GET /jobs: that user's latency.
With --resume, N streams resume N x 10,000 events at once (written straight into the log) while
/healthz is polled: its worst latency. Pass `--pollers --sse` (empty) to run only those.
Prints requests/s and p50/p99 latency, for long-polls and SSE the server's CPU use, and for SSE
the delay from a job's cancel (its finished_at) to its event arriving. The load generator
shares the 2 cores with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datetime import UTC, datetime  # noqa: E402

from benchmarks.service import ROOT, cpu_seconds, free_port, running_service, signed_in  # noqa: E402


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


class EventStream:
    """One SSE client on a raw connection: counts `data:` lines (one per event) and, for each
    `cancelled` document, the delay from its finished_at to its arrival."""

    def __init__(self, host: str, port: int, token: str, read: bool = True) -> None:
        self.host, self.port, self.token, self.read = host, port, token, read
        self.events, self.errors, self.delays = 0, 0, []  # type: ignore[var-annotated]

    async def follow(self, until: float) -> None:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            self.errors += 1
            return
        request = f"GET /events HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {self.token}\r\n\r\n"
        writer.write(request.encode())
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.errors += int(head.split(b" ", 2)[1]) != 200
            buffer = b""
            while self.read and (left := until - time.perf_counter()) > 0:
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), left)
                except TimeoutError:
                    break
                if not chunk:
                    break
                *lines, buffer = (buffer + chunk).split(b"\r\n")
                for line in lines:
                    self._line(line)
            if not self.read:
                await asyncio.sleep(max(0.0, until - time.perf_counter()))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            self.errors += 1
        finally:
            writer.close()

    def _line(self, line: bytes) -> None:
        if not line.startswith(b"data: "):
            return
        self.events += 1
        if b'"cancelled"' in line:
            finished = json.loads(line[6:])["finished_at"].replace("Z", "+00:00")
            self.delays.append(time.time() - datetime.fromisoformat(finished).timestamp())


async def caught_up(clients: list[EventStream], initial: int, deadline: float = 180.0) -> float:
    """Seconds until every reading stream has its first `initial` events (the unfinished jobs)."""
    started = time.perf_counter()
    readers = [c for c in clients if c.read]
    while any(c.events < initial for c in readers) and time.perf_counter() - started < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(1 if readers else min(30.0, 2 + len(clients) / 50))  # the rest connect
    return time.perf_counter() - started


async def churn(url: str, auth: dict[str, str], per_second: float, until: float) -> int:
    """Submit a job and cancel it, `per_second` times a second (each makes two events)."""
    done = 0
    async with httpx.AsyncClient(base_url=url, headers=auth, timeout=30) as client:
        while time.perf_counter() < until:
            started = time.perf_counter()
            try:
                job = (await client.post("/jobs", json={"width": 64, "height": 64})).json()
                await client.post(f"/jobs/{job['job_id']}/cancel")
                done += 1
            except httpx.TransportError:  # an overloaded server: the rate shows it
                pass
            await asyncio.sleep(max(0.0, 1 / per_second - (time.perf_counter() - started)))
    return done


async def sse_run(
    url: str, auth: dict[str, str], pid: int, n: int, seconds: float, changes: float, initial: int
) -> list[str]:
    host, port = url.removeprefix("http://").split(":")
    token = auth["Authorization"].split()[1]
    lines = []
    phases = (("idle", 0.0, True), ("changing", changes, True), ("not reading", changes, False))
    for phase, rate, read in phases:
        clients = [EventStream(host, int(port), token, read) for _ in range(n)]
        until = time.perf_counter() + seconds + 300  # streams stay open past the measured window
        tasks = [asyncio.create_task(c.follow(until)) for c in clients]
        ready = await caught_up(clients, initial)
        base_events = sum(c.events for c in clients)
        rss, cpu, start = rss_mib(pid), cpu_seconds(pid), time.perf_counter()
        made = 0
        if rate:
            made = await churn(url, auth, rate, start + seconds)
        else:
            await asyncio.sleep(seconds)
        busy = (cpu_seconds(pid) - cpu) / (time.perf_counter() - start) * 100
        got = sum(c.events for c in clients) - base_events
        delays = sorted(d for c in clients for d in c.delays)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        text = f"{n:5d} SSE clients, {phase:11s}: open in {ready:4.1f} s, server CPU {busy:3.0f}%"
        if rate:
            text += f", {made / seconds:4.1f} jobs/s changed"
        if read and rate:
            p50 = statistics.median(delays) * 1000 if delays else float("nan")
            p99 = delays[int(len(delays) * 0.99)] * 1000 if delays else float("nan")
            text += f", {got / seconds:7.0f} events/s delivered, delay p50 {p50:5.0f} ms p99 {p99:5.0f} ms"
        if not read:
            text += f", server RSS {rss:5.0f} -> {rss_mib(pid):5.0f} MiB"
        errors = sum(c.errors for c in clients)
        lines.append(text + (f", errors {errors}" if errors else ""))
        await asyncio.sleep(2)  # dropped and closed streams settle before the next phase
    return lines


# --- one user cannot stall the others (--flood, --resume) ----------------------------------

COSTLY = {"width": 64, "height": 64, "center_x": 0.25, "center_y": 0, "zoom": 1e6, "max_iter": 100000}


async def flood_submits(host: str, port: int, token: str, per_second: float, until: float) -> int:
    """POST /jobs with a costly body `per_second` times a second, each on a fresh connection
    closed as soon as it is sent (the client never waits for its 429)."""
    body = json.dumps(COSTLY).encode()
    head = (
        f"POST /jobs HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sent = 0
    while time.perf_counter() < until:
        started = time.perf_counter()
        try:
            _reader, writer = await asyncio.open_connection(host, port)
            writer.write(head + body)
            await writer.drain()
            writer.close()
            sent += 1
        except OSError:
            pass
        await asyncio.sleep(max(0.0, 1 / per_second - (time.perf_counter() - started)))
    return sent


async def victim_reads(host: str, port: int, token: str, until: float) -> list[float]:
    """Another user's GET /jobs, one after another, until `until` (the last one may end later)."""
    conn, latencies = Connection(host, port, token), []
    while (now := time.perf_counter()) < until:
        try:
            await conn.get("/jobs")
        except (OSError, asyncio.IncompleteReadError, ValueError, StopIteration):
            conn.close()
            conn.writer = None
        latencies.append(time.perf_counter() - now)
        await asyncio.sleep(0.05)
    conn.close()
    return latencies


def flood(url: str, per_second: float, seconds: float) -> str:
    """One user at their quota floods refused costly submits; another user's GET /jobs latency."""
    host, port = url.removeprefix("http://").split(":")
    attacker = signed_in(url, "flooder")
    for _ in range(8):  # MAX_ACTIVE_JOBS_PER_USER's default: every further submit is a 429
        httpx.post(f"{url}/jobs", json={"width": 64, "height": 64}, headers=attacker, timeout=30)
    victim = signed_in(url, "victim")["Authorization"].split()[1]

    async def both() -> tuple[list[float], int]:
        until = time.perf_counter() + seconds
        sent, latencies = await asyncio.gather(
            flood_submits(host, int(port), attacker["Authorization"].split()[1], per_second, until),
            victim_reads(host, int(port), victim, until),
        )
        return latencies, sent

    latencies, sent = asyncio.run(both())
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    return (
        f"flood of {sent} refused costly submits ({per_second:g}/s for {seconds:g} s): another user's "
        f"GET /jobs x{len(latencies)}: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {latencies[-1] * 1000:.1f} ms"
    )


def fill_event_log(data_dir: Path, owner: str, document: dict[str, object], count: int) -> int:
    """`count` events of `owner` written straight into the service's SQLite log (what `count` / 2
    submits and cancels leave); the newest seq."""
    with sqlite3.connect(data_dir / "scheduler.db", timeout=30) as db:
        now = datetime.now(UTC).isoformat(sep=" ")
        rows = [(document["job_id"], owner, "job", json.dumps(document), now) for _ in range(count)]
        db.executemany(
            "INSERT INTO jobevent (job_id, owner, kind, document, created_at) VALUES (?, ?, ?, ?, ?)", rows
        )
        return db.execute("SELECT max(seq) FROM jobevent").fetchone()[0]


async def resume_stream(host: str, port: int, token: str, after: int, events: int, until: float) -> int:
    """GET /events with Last-Event-ID: `after`; how many events arrived (up to `events`)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"GET /events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Last-Event-ID: {after}\r\n\r\n".encode()
    )
    got, buffer = 0, b""
    try:
        while got < events and (left := until - time.perf_counter()) > 0:
            chunk = await asyncio.wait_for(reader.read(65536), left)
            if not chunk:
                break
            buffer += chunk
            got += buffer.count(b"\ndata: ") + buffer.startswith(b"data: ")
            buffer = buffer[buffer.rfind(b"\n") + 1 :]
    except TimeoutError:
        pass
    finally:
        writer.close()
    return got


def poll_health(url: str, stop: EventType, out: multiprocessing.Queue[list[float]]) -> None:
    latencies = []
    with httpx.Client(base_url=url, timeout=60) as client:
        while not stop.is_set():
            started = time.perf_counter()
            client.get("/healthz")
            latencies.append(time.perf_counter() - started)
            time.sleep(0.01)
    out.put(latencies)


@contextlib.contextmanager
def health_polled(url: str) -> Iterator[list[float]]:
    """/healthz polled from a process of its own (the stream readers' event loop must not delay
    it); the latencies are in the list at the end."""
    context = multiprocessing.get_context("fork")
    stop, out = context.Event(), context.Queue()
    poller = context.Process(target=poll_health, args=(url, stop, out))
    poller.start()
    found: list[float] = []
    try:
        yield found
    finally:
        stop.set()
        found += out.get(timeout=600)
        poller.join()


def resume(url: str, data_dir: Path, events: int, streams: int) -> str:
    """`streams` event streams resume `events` events at once; /healthz's latency meanwhile."""
    host, port = url.removeprefix("http://").split(":")
    auth = signed_in(url, "resumer")
    job = httpx.post(f"{url}/jobs", json={"width": 64, "height": 64}, headers=auth, timeout=30).json()
    newest = fill_event_log(data_dir, "resumer", job, events)
    token = auth["Authorization"].split()[1]
    with health_polled(url) as alone:  # first alone: what this machine's load costs
        time.sleep(5)

    async def run_all() -> list[int]:
        until = time.perf_counter() + 300
        return await asyncio.gather(
            *(resume_stream(host, int(port), token, newest - events, events, until) for _ in range(streams))
        )

    with health_polled(url) as health:
        time.sleep(0.2)
        started = time.perf_counter()
        got = asyncio.run(run_all())
        took = time.perf_counter() - started
    return (
        f"{streams} streams resuming {events} events each: {min(got)}-{max(got)} delivered in {took:.1f} s; "
        f"/healthz meanwhile {spread(health)} (alone just before: {spread(alone)})"
    )


def spread(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"x{len(ordered)}: median {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
            f"worst {ordered[-1] * 1000:.1f} ms")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stalls(args: argparse.Namespace) -> None:
    """--flood and --resume, each on a fresh service with the embedded defaults (no renders)."""
    if args.flood:
        with running_service(LOCAL_MAX_CONCURRENT="0") as (url, _pid):
            print(flood(url, args.flood, args.seconds))
    if args.resume:
        with (
            tempfile.TemporaryDirectory(prefix="fractal-bench-") as data,
            running_service(LOCAL_MAX_CONCURRENT="0", DATA_DIR=data) as (url, _pid),
        ):
            print(resume(url, Path(data), args.resume, args.resume_streams))
@contextlib.contextmanager
def baseline_app(secret: str, database: Path) -> Iterator[str]:
    """benchmarks/baseline_app.py under uvicorn, as the service is served; yields its URL."""
    port = free_port()
    env = {**os.environ, "JWT_SECRET": secret, "BASELINE_DB": str(database)}
    command = [sys.executable, "-m", "uvicorn", "benchmarks.baseline_app:app", "--port", str(port),
               "--log-level", "warning", "--no-access-log"]
    proc = subprocess.Popen(command, cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                httpx.get(f"{url}/docs", timeout=1)
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the baseline app did not come up")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def compare(url: str, baseline: str, token: str, paths: list[str], connections: int, seconds: float) -> None:
    """Closed-loop reads of the service, the baseline and the service again (the mean of the
    two service runs), each alone: the ratio says how far the service is from FastAPI's floor."""
    figures = []
    for name, where in (("service", url), ("minimal FastAPI app", baseline), ("service", url)):
        result = asyncio.run(run(where, token, paths, connections, seconds, 0.0))
        figures.append(float(result.split()[0]))
        print(f"{connections:5d} connections, closed loop, {name + ':':20s} {result}")
    print(f"service / minimal app: {(figures[0] + figures[2]) / 2 / figures[1]:.2f} of its requests/s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pollers", type=int, nargs="*", default=[10, 100, 1000])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between a paced poller's requests"
    )
    parser.add_argument("--connections", type=int, default=50, help="closed-loop clients for the yardstick")
    parser.add_argument("--wait", type=float, default=5.0, help="?wait= of the long-poll clients")
    parser.add_argument("--sse", type=int, nargs="*", default=[100, 1000], help="SSE client counts")
    parser.add_argument("--changes", type=float, default=2.0, help="jobs changed per second in the SSE runs")
    parser.add_argument(
        "--flood", type=float, default=0.0, metavar="PER_SECOND",
        help="also: one user floods refused costly submits at this rate; another user's GET /jobs latency",
    )
    parser.add_argument(
        "--resume", type=int, default=0, metavar="EVENTS",
        help="also: --resume-streams streams resume this many events; /healthz's latency meanwhile",
    )
    parser.add_argument("--resume-streams", type=int, default=8)
    args = parser.parse_args()
    stalls(args)
    secret, data = secrets.token_urlsafe(48), Path(tempfile.mkdtemp(prefix="fractal-bench-"))
    env = {"MAX_ACTIVE_JOBS_PER_USER": "100", "EVENTS_MAX_STREAMS_PER_USER": "10000",
           "LOCAL_MAX_CONCURRENT": "0", "JWT_SECRET": secret, "DATA_DIR": str(data)}
    with running_service(**env) as (url, pid):
        auth = signed_in(url)
        ids = [
            httpx.post(f"{url}/jobs", json={"width": 64, "height": 64}, headers=auth).json()["job_id"]
            for _ in range(20)
        ]
        paths = [f"/jobs/{job_id}" for job_id in ids]
        print(f"GET /jobs/{{id}} over 20 queued jobs, {args.seconds:g} s per run, one uvicorn process")
        deadline = time.monotonic() + 30  # until the dispatcher has planned them: their documents stay
        while any(httpx.get(f"{url}{path}", headers=auth).json()["message"] is None for path in paths):
            if time.monotonic() > deadline:
                raise RuntimeError("the dispatcher never planned the queued jobs")
            time.sleep(0.1)
        with baseline_app(secret, data / "scheduler.db") as baseline:
            compare(url, baseline, auth["Authorization"].split()[1], paths, args.connections, args.seconds)
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
        for n in args.sse:
            for line in asyncio.run(sse_run(url, auth, pid, n, args.seconds, args.changes, len(ids))):
                print(line)
    shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
