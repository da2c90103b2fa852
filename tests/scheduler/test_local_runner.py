"""LocalRunner against the real job (`python -m job_image`) on this host's OpenCL CPU device.

Each test runs its own event loop (asyncio.run) and stops the runner in a finally, so no job
process outlives a test; processes a test starts itself are ended by pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from job_image.params import FractalParams
from job_image.storage import LocalStorage
from job_image.tasks import RenderArray
from scheduler.core.config import Settings
from scheduler.runners.base import JobSpec, RunnerUnavailable, StatusReport
from scheduler.runners.local import (
    RESTARTED,
    LocalRunner,
    describe_exit,
    job_environment,
    parse_progress,
)

TINY = {"width": 64, "height": 48, "max_iter": 50, "device": "cpu"}
# minutes of work on 2 cores: for cancel, timeout, capacity and shutdown
LONG = {"width": 4096, "height": 4096, "max_iter": 100_000, "precision": "float64", "device": "cpu"}


def spec(params: dict[str, Any]) -> JobSpec:
    job_id = uuid.uuid4().hex
    return JobSpec(job_id, "alice", FractalParams.model_validate(params), f"alice/{job_id}/")


@pytest.fixture
def make_settings(tmp_path: Path, opencl_cache: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        return Settings(data_dir=tmp_path, opencl_cache_dir=opencl_cache, **overrides)

    return make


class Harness:
    """A runner whose reports land in a list, with a deadline-bounded wait for one of them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.storage = LocalStorage(settings.storage_dir)
        self.reports: list[StatusReport] = []
        self.runner = LocalRunner(settings, self.record, self.storage)

    async def record(self, report: StatusReport) -> None:
        self.reports.append(report)

    def of(self, job_id: str, status: str | None = None) -> list[StatusReport]:
        return [r for r in self.reports if r.job_id == job_id and status in (None, r.status)]

    async def wait_for(
        self, job_id: str, status: str, timeout: float = 60, where: Callable[[StatusReport], bool] = bool
    ) -> StatusReport:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            found = [r for r in self.of(job_id, status) if where(r)]
            if found:
                return found[0]
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {status} report for {job_id} within {timeout} s: {self.of(job_id)}")

    def pid(self, job_id: str) -> int:
        return self.runner.jobs[job_id].process.pid


def run(settings: Settings, scenario: Callable[[Harness], Awaitable[None]]) -> Harness:
    """Run `scenario` in a fresh loop; whatever it leaves running is stopped."""
    h = Harness(settings)

    async def main() -> None:
        try:
            await scenario(h)
        finally:
            await h.runner.stop()

    asyncio.run(main())
    return h


def group_gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def fake_python(tmp_path: Path, name: str, body: str) -> str:
    """An 'interpreter' that ignores `-m job_image` and does `body` (sh)."""
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


# --- pure helpers ---------------------------------------------------------------------------


def test_parse_progress() -> None:
    assert parse_progress("progress 42%") == 0.42
    assert parse_progress("progress 100%\n") == 1.0
    assert parse_progress("progress 101%") is None
    assert parse_progress("done 64x48 mandelbrot") is None


def test_describe_exit() -> None:
    assert describe_exit(5) == "the job exited with code 5 and printed no error"
    assert describe_exit(-signal.SIGKILL) == "the job was killed by signal SIGKILL"


def test_job_environment_is_the_contract_and_no_more(make_settings: Callable[..., Settings]) -> None:
    host = {
        "PATH": "/usr/bin", "HOME": "/home/api", "LANG": "C.UTF-8", "OCL_ICD_VENDORS": "/etc/OpenCL/vendors",
        "POCL_DEVICES": "pthread", "JWT_SECRET": "s3cret", "DATABASE_URL": "postgresql://x", "AWS_X": "p",
    }
    job = spec(TINY)
    minio = make_settings(minio_endpoint="minio:9000", minio_access_key="ak", minio_secret_key="sk")
    env = job_environment(job, minio, host)
    assert set(env) == {
        "JOB_ID", "FRACTAL_PARAMS", "RESULT_PREFIX", "MAX_PIXELS", "MAX_ITER", "OPENCL_CACHE_DIR",
        "MAX_COORDINATE_DIGITS", "MAX_ZOOM",
        "MINIO_ENDPOINT", "MINIO_BUCKET", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "MINIO_SECURE",
        "PATH", "HOME", "LANG", "OCL_ICD_VENDORS", "POCL_DEVICES", "PYTHONPATH",
    }  # a render array's task has JOB_COMPLETION_INDEX too (test_arrays.py), as an Indexed Job's pod
    assert env["JOB_ID"] == job.job_id and env["RESULT_PREFIX"] == job.result_prefix
    assert FractalParams.model_validate_json(env["FRACTAL_PARAMS"]) == job.params
    assert (env["MINIO_ENDPOINT"], env["MINIO_SECRET_KEY"]) == ("minio:9000", "sk")
    assert Path(env["OPENCL_CACHE_DIR"]).is_absolute()
    assert Path(env["PYTHONPATH"], "job_image", "cli.py").is_file()

    local = job_environment(job, make_settings(), {})
    assert Path(local["STORAGE_DIR"]).is_absolute() and "MINIO_ENDPOINT" not in local
    assert local["PATH"]  # a default even when the API's environment has none


# --- real jobs --------------------------------------------------------------------------------


def test_success_reports_running_progress_and_succeeded(make_settings: Callable[..., Settings]) -> None:
    job = spec(TINY)

    async def scenario(h: Harness) -> None:
        await h.runner.submit(job)
        pid_file = h.settings.data_dir / "local-jobs" / f"{job.job_id}.pid"
        assert int(pid_file.read_text()) == h.pid(job.job_id)
        await h.wait_for(job.job_id, "succeeded")
        assert not pid_file.exists()
        assert h.runner.capacity() == h.settings.local_max_concurrent

    h = run(make_settings(), scenario)
    reports = h.of(job.job_id)
    assert reports[0].status == "running" and reports[0].started_at is not None
    assert reports[-1].status == "succeeded" and reports[-1].finished_at is not None
    assert [r.status for r in reports[1:-1]] == ["running"] * (len(reports) - 2)
    assert 1.0 in [r.progress for r in reports]
    names = {o.name for o in h.storage.list(job.result_prefix)}
    assert {"image.png", "result.json", "job.log"} <= names
    saved = b"".join(h.storage.iter_bytes(f"{job.result_prefix}job.log")).decode()
    assert "progress 100%" in saved
    assert asyncio.run(h.runner.logs(job.job_id)) == saved  # the local copy stays until forget()
    h.runner.forget(job.job_id)
    assert asyncio.run(h.runner.logs(job.job_id)) is None


def test_failure_reports_the_jobs_own_error_line(make_settings: Callable[..., Settings]) -> None:
    job = spec({**TINY, "device": "gpu"})  # this host has no GPU: exit 3

    async def scenario(h: Harness) -> None:
        await h.runner.submit(job)
        await h.wait_for(job.job_id, "failed")

    h = run(make_settings(local_gpus=1), scenario)  # a GPU slot the host cannot back
    failed = h.of(job.job_id, "failed")
    assert len(failed) == 1 and failed[0].finished_at is not None
    log = b"".join(h.storage.iter_bytes(f"{job.result_prefix}job.log")).decode()
    assert failed[0].error == [ln for ln in log.splitlines() if ln.strip()][-1]
    assert failed[0].error.startswith("error: no GPU OpenCL device; found ")
    assert not h.of(job.job_id, "succeeded")


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("echo 'progress 50%'; exit 5", "the job exited with code 5 and printed no error"),
        ("kill -9 $$", "the job was killed by signal SIGKILL"),
    ],
)
def test_silent_failures_are_described(
    tmp_path: Path, make_settings: Callable[..., Settings], body: str, error: str
) -> None:
    job = spec(TINY)

    async def scenario(h: Harness) -> None:
        await h.runner.submit(job)
        await h.wait_for(job.job_id, "failed")

    h = run(make_settings(job_python=fake_python(tmp_path, "fake-python", body)), scenario)
    assert h.of(job.job_id, "failed")[0].error == error
    assert "progress" not in body or 0.5 in [r.progress for r in h.of(job.job_id)]


def test_cancel_stops_the_group_and_reports_cancelled_once(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    job = spec(LONG)
    pids: list[int] = []

    async def scenario(h: Harness) -> None:
        await h.runner.submit(job)
        pids.append(h.pid(job.job_id))
        await h.wait_for(job.job_id, "running", where=lambda r: r.progress is not None)
        assert "progress " in (await h.runner.logs(job.job_id) or "")  # live log
        await h.runner.cancel(job.job_id)
        assert group_gone(pids[0])
        await h.runner.cancel(job.job_id)  # again, and an unknown id: no error, no report
        await h.runner.cancel(uuid.uuid4().hex)

    h = run(make_settings(), scenario)
    assert [r.status for r in h.of(job.job_id) if r.status != "running"] == ["cancelled"]
    assert h.of(job.job_id, "cancelled")[0].finished_at is not None
    assert len(h.reports) == len(h.of(job.job_id))
    assert not (h.settings.data_dir / "local-jobs" / f"{job.job_id}.pid").exists()
    assert "killing it" not in caplog.text  # the render stopped on SIGTERM, within the grace


class HeldLogStorage(LocalStorage):
    """Holds the job.log upload until released: the moment a DELETE can race a job's end."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.uploading, self.release = threading.Event(), threading.Event()

    def put_bytes(self, key: str, data: bytes, content_type: str = "") -> None:
        if key.endswith("job.log"):
            self.uploading.set()
            assert self.release.wait(30), "never released"
        super().put_bytes(key, data, content_type)


def test_cancel_of_a_job_that_is_finishing_waits_for_its_end(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """A DELETE arriving after the process exited but before its log was saved must not return
    before the save: it then removes the prefix, and nothing lands there afterwards."""
    job = spec(TINY)

    async def scenario(h: Harness) -> None:
        h.runner.storage = storage = HeldLogStorage(h.settings.storage_dir)
        await h.runner.submit(job)
        assert await asyncio.to_thread(storage.uploading.wait, 60)
        assert job.job_id not in h.runner.jobs and job.job_id in h.runner.finishing
        cancel = asyncio.create_task(h.runner.cancel(job.job_id))
        for _ in range(20):  # loop turns enough for a cancel that (wrongly) returns at once
            await asyncio.sleep(0)
        assert not cancel.done()
        storage.release.set()
        await asyncio.wait_for(cancel, 30)
        assert h.of(job.job_id, "succeeded")  # it had finished: that is its end, not cancelled
        storage.delete_prefix(job.result_prefix)  # what the service does next
        assert storage.list(job.result_prefix) == [] and not h.runner.finishing

    run(make_settings(), scenario)


def test_timeout_stops_the_job(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    job = spec(LONG)
    pids: list[int] = []

    async def scenario(h: Harness) -> None:
        await h.runner.submit(job)
        pids.append(h.pid(job.job_id))
        await h.wait_for(job.job_id, "failed", timeout=30)

    h = run(make_settings(job_timeout_seconds=1), scenario)
    assert h.of(job.job_id, "failed")[0].error == "the job ran longer than 1 seconds and was stopped"
    assert group_gone(pids[0])
    assert "killing it" not in caplog.text


def test_gpu_slots_are_the_gpus_found(make_settings: Callable[..., Settings]) -> None:
    """No OpenCL GPU here: the local runner has no GPU class, and a GPU job is refused."""
    async def scenario(h: Harness) -> None:
        assert h.runner.gpus == 0 and h.runner.capacity("gpu") == 0
        snap = h.runner.view().snapshot({"cpu": 1})
        assert not snap.exists("gpu") and snap.free_jobs("cpu") == h.settings.local_max_concurrent - 1
        with pytest.raises(RunnerUnavailable, match="all 0 local gpu job slots are busy"):
            await h.runner.submit(spec({**TINY, "device": "gpu"}))

    run(make_settings(), scenario)


def test_capacity_and_refusal_when_full(tmp_path: Path, make_settings: Callable[..., Settings]) -> None:
    first, second = spec(LONG), spec(LONG)

    async def scenario(h: Harness) -> None:
        assert h.runner.capacity() == 1
        await h.runner.submit(first)
        assert h.runner.capacity() == 0
        with pytest.raises(RunnerUnavailable, match="slots are busy"):
            await h.runner.submit(second)
        await h.runner.cancel(first.job_id)
        assert h.runner.capacity() == 1

    h = run(make_settings(local_max_concurrent=1), scenario)
    assert not h.of(second.job_id)


def test_spawn_failure_and_check(tmp_path: Path, make_settings: Callable[..., Settings]) -> None:
    missing = str(tmp_path / "no-such-python")

    async def scenario(h: Harness) -> None:
        with pytest.raises(RunnerUnavailable, match="could not be started"):
            await h.runner.submit(spec(TINY))
        assert h.runner.capacity() == 2
        with pytest.raises(RuntimeError, match="does not exist or is not executable"):
            await h.runner.check()

    run(make_settings(job_python=missing), scenario)
    asyncio.run(Harness(make_settings()).runner.check())  # the API's own interpreter is fine


def test_stop_ends_jobs_without_reporting(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    job = spec(LONG)
    pids: list[int] = []

    async def scenario(h: Harness) -> None:
        await h.runner.submit(job)
        pids.append(h.pid(job.job_id))
        await h.wait_for(job.job_id, "running")
        await h.runner.stop()

    h = run(make_settings(), scenario)
    assert group_gone(pids[0])
    assert [r.status for r in h.of(job.job_id)] == ["running"] * len(h.of(job.job_id))
    assert f"ending 1 running job(s) ({job.job_id})" in caplog.text  # a Ctrl-C says what it stopped


def _leftover(settings: Settings, job_id: str, env: dict[str, str] | None) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["sleep", "30"], env=env, start_new_session=True)
    pid_dir = settings.data_dir / "local-jobs"
    pid_dir.mkdir(parents=True, exist_ok=True)
    (pid_dir / f"{job_id}.pid").write_text(f"{proc.pid}\n")
    return proc


def test_start_leaves_an_unrelated_process_alone(make_settings: Callable[..., Settings]) -> None:
    settings, job = make_settings(), spec(TINY)
    proc = _leftover(settings, job.job_id, env=None)  # a recycled pid: not this job
    try:
        h = run(settings, lambda h: h.runner.start([job]))
        assert proc.poll() is None
        assert [(r.status, r.message) for r in h.reports] == [("queued", RESTARTED)]
        assert not (settings.data_dir / "local-jobs" / f"{job.job_id}.pid").exists()
    finally:
        proc.kill()
        proc.wait()


def test_start_ends_the_jobs_leftover_process(make_settings: Callable[..., Settings]) -> None:
    settings, job = make_settings(), spec(TINY)
    proc = _leftover(settings, job.job_id, env={"PATH": os.defpath, "JOB_ID": job.job_id})
    try:
        h = run(settings, lambda h: h.runner.start([job]))
        assert proc.wait(timeout=10) == -signal.SIGTERM
        assert [r.status for r in h.reports] == ["queued"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


def test_logs_of_unknown_or_invalid_ids(make_settings: Callable[..., Settings]) -> None:
    runner = Harness(make_settings()).runner
    assert asyncio.run(runner.logs(uuid.uuid4().hex)) is None
    assert asyncio.run(runner.logs("../../etc/passwd")) is None
    runner.forget("../x")  # no error, nothing removed


def test_a_cancel_during_a_submit_leaves_no_task_running_and_none_starts_after(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """The dispatcher may hand over tasks it admitted just before a cancel: the cancel stops every
    task started so far, and none of the job's tasks starts after it."""
    sleeper = fake_python(tmp_path, "sleeper", "exec sleep 60")
    settings = make_settings(job_python=sleeper, local_max_concurrent=4)
    job = replace(spec(TINY), array=RenderArray(split=4), tasks=(0, 1, 2, 3))

    async def scenario(h: Harness) -> None:
        submitting = asyncio.create_task(h.runner.submit(job))
        await asyncio.sleep(0)  # the submit has begun spawning
        await h.runner.cancel(job.job_id)
        await submitting
        assert not h.runner.live()  # whatever the submit started, the cancel stopped
        await h.runner.submit(replace(job, tasks=(2, 3)))  # late: admitted before the cancel
        assert not h.runner.live()

    h = run(settings, scenario)
    assert {r.status for r in h.of(job.job_id)} <= {"running", "cancelled"}
