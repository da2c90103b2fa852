"""Kubernetes API requests made while clients poll, and completion-to-report latency.

    .venv/bin/python benchmarks/kube_requests.py [--jobs 20] [--pollers 100] [--seconds 60]

Runs the KubernetesRunner against the test suite's API server double (tests/kubernetes),
which counts every request, with 20 stand-in jobs held running. Pollers read job status the
way the API serves GET /jobs/{id}: from the store the runner's reports are written to, never
from Kubernetes. The full app (scheduler.main) is not used: the runner alone is measured, which
is where every Kubernetes request comes from. Prints:
  1. requests per phase (idle window without pollers, window with N pollers);
  2. per job, the time from the double writing the Job's Complete condition to the runner's
     `succeeded` report (includes saving job.log/pod.json/events.json to S3 first).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moto.server import ThreadedMotoServer  # noqa: E402

from job_image.params import FractalParams  # noqa: E402
from job_image.storage import MinioStorage  # noqa: E402
from scheduler.core.config import Settings  # noqa: E402
from scheduler.runners.base import JobSpec, StatusReport  # noqa: E402
from scheduler.runners.kubernetes import KubernetesRunner  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.kubernetes.apiserver import FakeApiServer  # noqa: E402
from tests.kubernetes.conftest import STANDIN  # noqa: E402


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="kube-bench-"))
    port = free_port()
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    s3.start()
    api = FakeApiServer(namespace="bench").start()
    try:
        minio = {"MINIO_ENDPOINT": f"127.0.0.1:{port}", "MINIO_BUCKET": "bench", "MINIO_SECURE": "false"}
        keys = {"MINIO_ACCESS_KEY": "bench", "MINIO_SECRET_KEY": "bench-secret"}
        api.put_config("minio-config", minio)
        api.put_secret("minio-secret", keys)
        go = tmp / "go"
        api.default_command = [sys.executable, STANDIN, "wait-file", str(go)]
        storage = MinioStorage(minio["MINIO_ENDPOINT"], "bench", *keys.values())
        settings = Settings(
            data_dir=tmp,
            runner="kubernetes",
            kube_namespace="bench",
            kubeconfig=str(api.write_kubeconfig(tmp / "kubeconfig")),
            kube_watch_timeout_seconds=args.watch_timeout,
        )
        db: dict[str, StatusReport] = {}
        reported_at: dict[str, float] = {}

        async def report(r: StatusReport) -> None:
            db[r.job_id] = r
            if r.status == "succeeded":
                reported_at[r.job_id] = time.monotonic()

        runner = KubernetesRunner(settings, report, storage)
        await runner.start([])
        ids = [uuid.uuid4().hex for _ in range(args.jobs)]
        for job_id in ids:
            await runner.submit(JobSpec(job_id, "bench", FractalParams(device="cpu"), f"bench/{job_id}/"))
        deadline = time.monotonic() + 60
        while sum(1 for i in ids if i in db and db[i].status == "running") < len(ids):
            if time.monotonic() > deadline:
                raise SystemExit("jobs did not all start")
            await asyncio.sleep(0.05)

        async def window(pollers: int) -> tuple[Counter[str], int]:
            before = Counter(api.requests)
            polls = 0
            stop = time.monotonic() + args.seconds

            async def poller(n: int) -> None:
                nonlocal polls
                while time.monotonic() < stop:
                    _ = db.get(ids[n % len(ids)])  # GET /jobs/{id}: a DB read
                    polls += 1
                    await asyncio.sleep(args.interval)

            await asyncio.gather(*(poller(n) for n in range(pollers)), asyncio.sleep(args.seconds))
            return Counter(api.requests) - before, polls

        idle, _ = await window(0)
        busy, polls = await window(args.pollers)
        print(f"{args.jobs} running jobs, {args.seconds:.0f} s windows, watch timeout {args.watch_timeout} s")
        print(f"  no pollers:        {sum(idle.values()):4d} API requests {dict(idle)}")
        print(
            f"  {args.pollers} pollers:       {sum(busy.values()):4d} API requests {dict(busy)}"
            f"  ({polls} polls served)"
        )

        go.touch()  # all jobs finish now
        deadline = time.monotonic() + 120
        while len(reported_at) < len(ids) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        lat = sorted(reported_at[i] - api.ended_at[f"fractal-{i}"] for i in ids if i in reported_at)
        print(
            f"Job Complete -> 'succeeded' reported ({len(lat)} jobs finishing together): "
            f"median {statistics.median(lat) * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms"
        )
        end = Counter(api.requests) - busy - idle
        print(f"  requests outside the windows (start, submits, ends): {dict(end)}")

        alone = []
        for _ in range(args.single):
            job_id = uuid.uuid4().hex
            api.commands[job_id] = [sys.executable, STANDIN, "ok"]
            await runner.submit(JobSpec(job_id, "bench", FractalParams(device="cpu"), f"bench/{job_id}/"))
            deadline = time.monotonic() + 60
            while job_id not in reported_at and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            alone.append(reported_at[job_id] - api.ended_at[f"fractal-{job_id}"])
        if alone:
            print(
                f"Job Complete -> 'succeeded' reported (one job at a time, {len(alone)} runs): "
                f"median {statistics.median(alone) * 1000:.0f} ms, max {max(alone) * 1000:.0f} ms"
            )
        await runner.stop()
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
