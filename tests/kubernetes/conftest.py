"""Fixtures for the Kubernetes runner: the API server double, a kubeconfig for the service
account, settings pointing at both and at the moto S3 server, and a recording `report`."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from job_image.params import FractalParams
from job_image.s3 import MinioStorage
from job_image.tasks import RenderArray
from scheduler.core.config import Settings
from scheduler.runners.base import JobSpec, StatusReport
from scheduler.runners.kubernetes import KubernetesRunner
from tests.kubernetes.apiserver import FakeApiServer

STANDIN = str(Path(__file__).with_name("standin_job.py"))


@pytest.fixture
def apiserver() -> Iterator[FakeApiServer]:
    server = FakeApiServer(namespace="fractal-test").start()
    server.bookmark_interval = 0.5
    # A container that misses SIGTERM (its handler not yet set) is killed this much later (30 s in
    # a cluster's default): the tests' deadlines stay bounded.
    server.default_grace_seconds = 5
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def kubeconfig(apiserver: FakeApiServer, tmp_path: Path) -> Path:
    return apiserver.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def settings(
    apiserver: FakeApiServer, kubeconfig: Path, minio_env: dict[str, str], tmp_path: Path
) -> Settings:
    """Settings as a deployment would have them; the ConfigMap/Secret carry the storage env."""
    apiserver.put_config("minio-config", {k: v for k, v in minio_env.items() if "KEY" not in k})
    apiserver.put_secret("minio-secret", {k: v for k, v in minio_env.items() if "KEY" in k})
    apiserver.default_command = [sys.executable, STANDIN, "ok"]
    return Settings(
        data_dir=tmp_path / "data",
        runner="kubernetes",
        kubeconfig=str(kubeconfig),
        kube_namespace=apiserver.namespace,
        minio_endpoint=minio_env["MINIO_ENDPOINT"],
        minio_bucket=minio_env["MINIO_BUCKET"],
        minio_access_key=minio_env["MINIO_ACCESS_KEY"],
        minio_secret_key=minio_env["MINIO_SECRET_KEY"],
        kube_request_timeout=3.0,
        kube_watch_timeout_seconds=5,
        kube_reconnect_backoff_max=0.5,
        job_pending_deadline_seconds=300,
        result_cache=False,  # the tests submit equal renders and mean each one to make a Job
    )


@pytest.fixture
def storage(minio_env: dict[str, str]) -> MinioStorage:
    return MinioStorage(
        minio_env["MINIO_ENDPOINT"],
        minio_env["MINIO_BUCKET"],
        minio_env["MINIO_ACCESS_KEY"],
        minio_env["MINIO_SECRET_KEY"],
        attempts=2,
        backoff=0.1,
    )


MakeRunner = Callable[[Settings, "Recorder"], KubernetesRunner]


class Recorder:
    """The `report` callback: keeps every report; waits for one with a deadline."""

    def __init__(self) -> None:
        self.reports: list[StatusReport] = []

    async def __call__(self, report: StatusReport) -> None:
        self.reports.append(report)

    def of(self, job_id: str) -> list[StatusReport]:
        return [r for r in self.reports if r.job_id == job_id]

    def statuses(self, job_id: str) -> list[str]:
        return [r.status for r in self.of(job_id)]

    async def wait(self, job_id: str, status: str, timeout: float = 20.0) -> StatusReport:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in self.of(job_id):
                if r.status == status:
                    return r
            await asyncio.sleep(0.02)
        raise AssertionError(f"{job_id}: no {status!r} within {timeout} s; saw {self.statuses(job_id)}")

    async def wait_for(self, what: Callable[[StatusReport], bool], timeout: float = 20.0) -> StatusReport:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in self.reports:
                if what(r):
                    return r
            await asyncio.sleep(0.02)
        raise AssertionError(f"no matching report within {timeout} s; saw {self.reports}")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def make_spec(
    job_id: str, owner: str = "alice", *, split: int = 1, tasks: tuple[int, ...] = (0,), **params: object
) -> JobSpec:
    """A job of one frame, or (`split`) a render array of that many bands, `tasks` admitted."""
    params = {"width": 64, "height": 48, "max_iter": 50, "device": "cpu", **params}
    return JobSpec(
        job_id=job_id, owner=owner, params=FractalParams(**params), result_prefix=f"{owner}/{job_id}/",
        array=RenderArray(split=split) if split > 1 else None, tasks=tasks,
    )


async def until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll with a deadline (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what} not reached within {timeout} s")


@pytest.fixture
def make_runner(storage: MinioStorage) -> Iterator[MakeRunner]:
    """Builds runners and, should a test fail before runner.stop(), stops their watch threads."""
    made: list[KubernetesRunner] = []

    def make(settings: Settings, report: Recorder) -> KubernetesRunner:
        runner = KubernetesRunner(settings, report, storage)
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.watches.stop()


async def wait_log(runner: KubernetesRunner, job_id: str, text: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    log = ""
    while time.monotonic() < deadline:
        log = await runner.logs(job_id) or ""
        if text in log:
            return log
        await asyncio.sleep(0.05)
    raise AssertionError(f"{text!r} not in the live log within {timeout} s: {log!r}")
