"""Against a real cluster: runs only with E2E_CLUSTER=1 and a KUBECONFIG (e.g. one minted by
serviceaccount/mint-kubeconfig.sh after `kubectl apply -k deploy/`).

    E2E_CLUSTER=1 KUBECONFIG=fractal-scheduler.kubeconfig KUBE_NAMESPACE=fractal \
    JOB_IMAGE=fractal-job:latest MINIO_ENDPOINT=127.0.0.1:9000 MINIO_ACCESS_KEY=... \
    MINIO_SECRET_KEY=... .venv/bin/pytest -q tests/cluster

MINIO_* (optional) lets the test read the results, e.g. through
`kubectl -n fractal port-forward svc/minio 9000`; without them it checks statuses only.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest

from job_image.params import FractalParams
from job_image.s3 import MinioStorage
from job_image.storage import LocalStorage, Storage
from job_image.tasks import RenderArray
from scheduler.core.config import Settings
from scheduler.runners.base import JobSpec, StatusReport
from scheduler.runners.kubernetes import KubernetesRunner

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        os.environ.get("E2E_CLUSTER") != "1" or not os.environ.get("KUBECONFIG"),
        reason="needs a real cluster: set E2E_CLUSTER=1 and KUBECONFIG",
    ),
]


@pytest.fixture
def settings() -> Settings:
    return Settings(runner="kubernetes", kube_namespace=os.environ.get("KUBE_NAMESPACE", "fractal"))


@pytest.fixture
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storage]:
    if os.environ.get("MINIO_ENDPOINT"):
        yield MinioStorage(
            os.environ["MINIO_ENDPOINT"],
            os.environ.get("MINIO_BUCKET", "fractals"),
            os.environ["MINIO_ACCESS_KEY"],
            os.environ["MINIO_SECRET_KEY"],
            secure=os.environ.get("MINIO_SECURE", "false") == "true",
        )
    else:  # job.log etc. land here; the job's own upload goes to the cluster's MinIO
        yield LocalStorage(tmp_path_factory.mktemp("results"))


class Reports:
    def __init__(self) -> None:
        self.items: list[StatusReport] = []

    async def __call__(self, report: StatusReport) -> None:
        self.items.append(report)

    async def wait(self, job_id: str, statuses: set[str], timeout: float, **only: object) -> StatusReport:
        """The first report of the job in one of `statuses` (and with the fields `only` names)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in self.items:
                wanted = all(getattr(r, k) == v for k, v in only.items())
                if r.job_id == job_id and r.status in statuses and wanted:
                    return r
            await asyncio.sleep(0.5)
        raise AssertionError(f"{job_id}: none of {statuses} in {timeout} s: {self.items}")


def spec(array: RenderArray | None = None, tasks: tuple[int, ...] = (0,), **params: object) -> JobSpec:
    job_id = uuid.uuid4().hex
    return JobSpec(
        job_id,
        "e2e",
        FractalParams(**{"width": 128, "height": 96, "device": "cpu", **params}),
        f"e2e/{job_id}/",
        array=array,
        tasks=tasks,
    )


def test_access_check_and_a_render(settings: Settings, storage: Storage) -> None:
    reports = Reports()

    async def scenario() -> None:
        runner = KubernetesRunner(settings, reports, storage)
        await runner.start([])
        try:
            await runner.check()  # every verb the code uses is granted
            job = spec()
            await runner.submit(job)
            done = await reports.wait(job.job_id, {"succeeded", "failed"}, timeout=300)
            assert done.status == "succeeded", done.error
            names = {o.name for o in storage.list(job.result_prefix)}
            assert {"job.log", "pod.json", "events.json"} <= names
            if isinstance(storage, MinioStorage):
                assert {"image.png", "result.json"} <= names
        finally:
            await runner.stop()

    asyncio.run(scenario())


def test_a_render_array_is_one_indexed_job_raised_as_its_tasks_are_admitted(
    settings: Settings, storage: Storage
) -> None:
    """Four bands: the Job starts with two tasks at once, then all four (a PATCH the Role
    allows); each task is reported and writes its part."""
    reports = Reports()

    async def scenario() -> None:
        runner = KubernetesRunner(settings, reports, storage)
        await runner.start([])
        try:
            job = spec(RenderArray(split=4), tasks=(0, 1))
            await runner.submit(job)
            await runner.submit(replace(job, tasks=(2, 3)))
            done = await reports.wait(job.job_id, {"succeeded", "failed"}, timeout=300, task=None)
            assert done.status == "succeeded", done.error
            ended = {r.task for r in reports.items if r.job_id == job.job_id and r.status == "succeeded"}
            assert ended == {0, 1, 2, 3, None}
            if isinstance(storage, MinioStorage):
                stored = {o.name for o in storage.list(job.result_prefix)}
                assert {f"parts/{i}.json" for i in range(4)} <= stored
        finally:
            await runner.stop()

    asyncio.run(scenario())


def test_cancel_removes_the_job(settings: Settings, storage: Storage) -> None:
    reports = Reports()

    async def scenario() -> None:
        runner = KubernetesRunner(settings, reports, storage)
        await runner.start([])
        try:
            job = spec(width=4096, height=4096, max_iter=100000)  # long enough to cancel
            await runner.submit(job)
            await reports.wait(job.job_id, {"pending", "running"}, timeout=60)
            await runner.cancel(job.job_id)
            await reports.wait(job.job_id, {"cancelled"}, timeout=30)
            await gone(runner, job.job_id, timeout=60)  # the Job and, in the background, its pods
        finally:
            await runner.stop()

    asyncio.run(scenario())


async def gone(runner: KubernetesRunner, job_id: str, timeout: float) -> None:
    """Poll the API server until neither the Job nor a pod of it is left."""
    selector = f"fractal-scheduler/job-id={job_id}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = {"namespace": runner.namespace, "label_selector": selector, "_request_timeout": 10}
        jobs = runner.cluster.batch.list_namespaced_job(**listed)
        pods = runner.cluster.core.list_namespaced_pod(**listed)
        if not jobs.items and not pods.items:
            return
        await asyncio.sleep(1)
    raise AssertionError(f"job {job_id}: its Job or pods are still there after {timeout} s")


def test_missing_image_is_explained_and_fails_at_the_pending_deadline(
    settings: Settings, storage: Storage
) -> None:
    settings = settings.model_copy(
        update={
            "job_image": "registry.invalid/fractal-job:missing",
            "job_pending_deadline_seconds": 60,
        }
    )
    reports = Reports()

    async def scenario() -> None:
        runner = KubernetesRunner(settings, reports, storage)
        await runner.start([])
        try:
            job = spec()
            await runner.submit(job)
            failed = await reports.wait(job.job_id, {"failed"}, timeout=180)
            assert "Cannot pull the job image registry.invalid/fractal-job:missing" in failed.error
        finally:
            await runner.stop()

    asyncio.run(scenario())
