"""Kubernetes API requests made while clients poll the API, and completion-to-`succeeded` latency.

    .venv/bin/python benchmarks/kube_requests.py [--jobs 20] [--pollers 100] [--seconds 60]

Serves the whole app (`scheduler.main.create_app`, RUNNER=kubernetes) with uvicorn on
127.0.0.1 against the test suite's API server double (tests/kubernetes), which counts every
request, and moto's S3 server. 20 jobs are submitted through `POST /jobs` and held running
(stand-in job containers waiting for a file). Prints:
  1. Kubernetes requests per window: without pollers, and with N HTTP clients each polling
     `GET /jobs/{id}` every `--interval` s (served from the DB: the count should not move);
  2. per job, the time from the double writing the Job's Complete condition to a waiting
     `GET /jobs/{id}?wait=` returning `succeeded` (includes saving job.log/pod.json/events.json).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

from benchmarks.api_load import Connection, poll  # noqa: E402
from scheduler.core.config import Settings  # noqa: E402
from scheduler.main import create_app  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.kubernetes.apiserver import FakeApiServer  # noqa: E402
from tests.kubernetes.conftest import STANDIN  # noqa: E402


async def wait_succeeded(client: httpx.AsyncClient, job_id: str, auth: dict[str, str]) -> float:
    """Long-poll until the API says succeeded; returns when (time.monotonic) it said so."""
    while True:
        doc = (await client.get(f"/jobs/{job_id}", params={"wait": 60}, headers=auth)).json()
        if doc["status"] == "succeeded":
            return time.monotonic()
        if doc["status"] in ("failed", "cancelled"):
            raise SystemExit(f"job {job_id} {doc['status']}: {doc['error']}")


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="kube-bench-"))
    port = free_port()
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    s3.start()
    api = FakeApiServer(namespace="bench").start()
    server: uvicorn.Server | None = None
    try:
        minio = {"MINIO_ENDPOINT": f"127.0.0.1:{port}", "MINIO_BUCKET": "bench", "MINIO_SECURE": "false"}
        keys = {"MINIO_ACCESS_KEY": "bench", "MINIO_SECRET_KEY": "bench-secret"}
        api.put_config("minio-config", minio)
        api.put_secret("minio-secret", keys)
        go = tmp / "go"
        hold = str(3 * args.seconds + 120)  # the stand-in gives up waiting after this
        api.default_command = [sys.executable, STANDIN, "wait-file", str(go), hold]
        settings = Settings(
            data_dir=tmp,
            runner="kubernetes",
            kube_namespace="bench",
            kubeconfig=str(api.write_kubeconfig(tmp / "kubeconfig")),
            kube_watch_timeout_seconds=args.watch_timeout,
            minio_endpoint=minio["MINIO_ENDPOINT"],
            minio_bucket="bench",
            minio_access_key=keys["MINIO_ACCESS_KEY"],
            minio_secret_key=keys["MINIO_SECRET_KEY"],
            bcrypt_rounds=4,
            max_active_jobs_per_user=args.jobs + args.single,
        )
        http_port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=http_port, log_level="warning")
        )
        serving = asyncio.create_task(server.serve())
        start_by = time.monotonic() + 30
        while not server.started:
            if serving.done():  # e.g. the port was taken: say why instead of waiting forever
                serving.result()
                raise SystemExit("the API server exited before it started")
            if time.monotonic() > start_by:
                raise SystemExit("the API server did not start within 30 s")
            await asyncio.sleep(0.05)
        url = f"http://127.0.0.1:{http_port}"
        async with httpx.AsyncClient(base_url=url, timeout=90) as client:
            creds = {"username": "bench", "password": "benchmark-password"}
            await client.post("/auth/sign-up", json=creds)
            token = (await client.post("/auth/sign-in", json=creds)).json()["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            params = {"width": 64, "height": 48, "device": "cpu"}
            ids = [
                (await client.post("/jobs", json=params, headers=auth)).json()["job_id"]
                for _ in range(args.jobs)
            ]
            deadline = time.monotonic() + 60
            while True:
                docs = [(await client.get(f"/jobs/{i}", headers=auth)).json() for i in ids]
                if all(d["status"] == "running" for d in docs):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"jobs did not all start: {[d['status'] for d in docs]}")
                await asyncio.sleep(0.1)

            async def window(pollers: int) -> tuple[Counter[str], int]:
                before = Counter(api.requests)
                until = time.perf_counter() + args.seconds
                host, http_port_s = url.removeprefix("http://").split(":")
                conns = [Connection(host, int(http_port_s), token) for _ in range(pollers)]
                results = await asyncio.gather(
                    *(poll(c, [f"/jobs/{i}" for i in ids], until, args.interval) for c in conns),
                    asyncio.sleep(args.seconds),
                )
                polls = sum(len(r[0]) for r in results[:-1])
                return Counter(api.requests) - before, polls

            idle, _ = await window(0)
            busy, polls = await window(args.pollers)
            print(
                f"{args.jobs} running jobs, {args.seconds:.0f} s windows,"
                f" watch timeout {args.watch_timeout} s"
            )
            print(f"  no pollers:   {sum(idle.values()):4d} Kubernetes requests {dict(idle)}")
            print(
                f"  {args.pollers} pollers:  {sum(busy.values()):4d} Kubernetes requests {dict(busy)}"
                f"  ({polls} GET /jobs/{{id}} served)"
            )

            waiters = [asyncio.create_task(wait_succeeded(client, i, auth)) for i in ids]
            await asyncio.sleep(0.5)  # the long-polls are waiting
            go.touch()  # all jobs finish now
            done_at = dict(zip(ids, await asyncio.gather(*waiters), strict=True))
            lat = sorted(done_at[i] - api.ended_at[f"fractal-{i}"] for i in ids)
            print(
                f"Job Complete -> GET /jobs/{{id}} says succeeded ({len(lat)} jobs finishing together): "
                f"median {statistics.median(lat) * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms"
            )
            end = Counter(api.requests) - busy - idle
            print(f"  requests outside the windows (start, submits, ends): {dict(end)}")

            alone = []
            api.default_command = [sys.executable, STANDIN, "ok"]
            for _ in range(args.single):
                job_id = (await client.post("/jobs", json=params, headers=auth)).json()["job_id"]
                said = await wait_succeeded(client, job_id, auth)
                alone.append(said - api.ended_at[f"fractal-{job_id}"])
            if alone:
                print(
                    f"Job Complete -> GET /jobs/{{id}} says succeeded"
                    f" (one job at a time, {len(alone)} runs): "
                    f"median {statistics.median(alone) * 1000:.0f} ms, max {max(alone) * 1000:.0f} ms"
                )
        server.should_exit = True
        await serving
    finally:
        api.close()
        s3.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--pollers", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between one poller's reads")
    parser.add_argument("--watch-timeout", type=int, default=300)
    parser.add_argument("--single", type=int, default=5, help="jobs run one at a time for latency")
    asyncio.run(main(parser.parse_args()))
