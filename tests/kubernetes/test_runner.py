"""KubernetesRunner against the API server double: the real client, real HTTP, real processes."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path

import pytest

from job_image.storage import MinioStorage
from scheduler.core.config import Settings
from scheduler.runners.base import RunnerUnavailable
from scheduler.runners.kubernetes.errors import Forbidden
from tests.kubernetes.apiserver import FakeApiServer, load_rules
from tests.kubernetes.conftest import STANDIN, MakeRunner, Recorder, make_spec, until, wait_log


def new_id() -> str:
    return uuid.uuid4().hex


def run(coro) -> None:  # noqa: ANN001 - a coroutine
    asyncio.run(asyncio.wait_for(coro, 60))


def names(storage: MinioStorage, prefix: str) -> set[str]:
    return {o.name for o in storage.list(prefix)}


def test_success_saves_log_state_and_events(
    make_runner: MakeRunner,
    settings: Settings,
    recorder: Recorder,
    storage: MinioStorage,
    apiserver: FakeApiServer,
) -> None:
    async def scenario() -> None:
        runner = make_runner(settings, recorder)
        await runner.start([])
        await runner.check()
        job_id = new_id()
        spec = make_spec(job_id)
        await runner.submit(spec)
        done = await recorder.wait(job_id, "succeeded")
        assert done.started_at is not None and done.finished_at is not None and done.error is None
        statuses = recorder.statuses(job_id)
        assert statuses[0] == "pending" and "running" in statuses and statuses[-1] == "succeeded"
        assert statuses.count("succeeded") == 1
        assert names(storage, spec.result_prefix) >= {
            "image.png",
            "result.json",
            "job.log",
            "pod.json",
            "events.json",
        }
        log = b"".join(storage.iter_bytes(f"{spec.result_prefix}job.log")).decode()
        assert f"stand-in job {job_id}" in log
        state = json.loads(b"".join(storage.iter_bytes(f"{spec.result_prefix}pod.json")))
        term = state["pods"][0]["status"]["containerStatuses"][0]["state"]["terminated"]
        assert term["exitCode"] == 0 and term["reason"] == "Completed"
        events = json.loads(b"".join(storage.iter_bytes(f"{spec.result_prefix}events.json")))
        assert {"SuccessfulCreate", "Scheduled", "Started", "Completed"} <= {e["reason"] for e in events}
        # Once ended, the live log is no longer asked of the API server (storage answers).
        assert await runner.logs(job_id) is None
        await runner.stop()

    run(scenario())
    assert apiserver.denials == []
    # The pod got the job contract's environment through env and envFrom.
    pod = apiserver.store.list("pods", apiserver.namespace)[0][0]
    assert pod["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["name"] == "minio-config"


def test_job_error_is_its_last_stderr_line(
    make_runner: MakeRunner,
    settings: Settings,
    recorder: Recorder,
    storage: MinioStorage,
    apiserver: FakeApiServer,
) -> None:
    settings = settings.model_copy(update={"job_backoff_limit": 1})
    job_id = new_id()
    apiserver.commands[job_id] = [sys.executable, STANDIN, "fail"]

    async def scenario() -> None:
        runner = make_runner(settings, recorder)
        await runner.start([])
        await runner.submit(make_spec(job_id))
        failed = await recorder.wait(job_id, "failed")
        assert failed.error == "error: width: Input should be greater than or equal to 1 (exit code 2)"
        await runner.stop()

    run(scenario())
    assert len(apiserver.pods(job_id)) == 2  # backoffLimit 1: one retry, then BackoffLimitExceeded
    conditions = {c["type"]: c["reason"] for c in apiserver.job(job_id)["status"]["conditions"]}
    assert conditions["Failed"] == "BackoffLimitExceeded"


def test_oom_killed(
    make_runner: MakeRunner,
    settings: Settings,
    recorder: Recorder,
    storage: MinioStorage,
    apiserver: FakeApiServer,
) -> None:
    settings = settings.model_copy(update={"job_backoff_limit": 0})
    job_id = new_id()
    apiserver.faults[job_id] = "oom"

    async def scenario() -> None:
        runner = make_runner(settings, recorder)
        await runner.start([])
        await runner.submit(make_spec(job_id))
        failed = await recorder.wait(job_id, "failed")
        assert "OOMKilled" in failed.error and "1Gi" in failed.error
        await runner.stop()

    run(scenario())


def test_deadline_exceeded(
    make_runner: MakeRunner,
    settings: Settings,
    recorder: Recorder,
    storage: MinioStorage,
    apiserver: FakeApiServer,
) -> None:
    settings = settings.model_copy(update={"job_timeout_seconds": 1})
    job_id = new_id()
    apiserver.commands[job_id] = [sys.executable, STANDIN, "sleep"]

    async def scenario() -> None:
        runner = make_runner(settings, recorder)
        await runner.start([])
        await runner.submit(make_spec(job_id))
        await recorder.wait(job_id, "running")
        failed = await recorder.wait(job_id, "failed")
        assert (
            failed.error == "The job ran longer than its deadline of 1 s and was stopped (DeadlineExceeded)."
        )
        await runner.stop()

    run(scenario())
    assert apiserver.live(job_id) == []


@pytest.mark.parametrize(
    ("fault", "device", "expected"),
    [
        ("image_pull", "cpu", "Cannot pull the job image fractal-job:latest (ImagePullBackOff)"),
        (
            "",
            "gpu",
            "No node can run the job yet (Unschedulable): 0/1 nodes are available: "
            "1 Insufficient nvidia.com/gpu.",
        ),
    ],
    ids=["image-pull", "unschedulable-gpu"],
)
def test_pending_is_explained_then_fails_at_the_pending_deadline(
    make_runner: MakeRunner,
    settings: Settings,
    recorder: Recorder,
    storage: MinioStorage,
    apiserver: FakeApiServer,
    fault: str,
    device: str,
    expected: str,
) -> None:
    settings = settings.model_copy(update={"job_pending_deadline_seconds": 2})
    job_id = new_id()
    if fault:
        apiserver.faults[job_id] = fault

    async def scenario() -> None:
        runner = make_runner(settings, recorder)
        await runner.start([])
        spec = make_spec(job_id, device=device)
        await runner.submit(spec)
        pending = await recorder.wait_for(lambda r: r.job_id == job_id and expected in (r.message or ""))
        assert pending.status == "pending"
        failed = await recorder.wait(job_id, "failed", timeout=15)
        assert failed.error.startswith("The job did not start within 2 s: ") and expected in failed.error
        await until(lambda: apiserver.job(job_id) is None and not apiserver.pods(job_id), what="Job removed")
        assert "events.json" in names(storage, spec.result_prefix)
        await runner.stop()

    run(scenario())
    assert recorder.statuses(job_id).count("failed") == 1


def test_cancel_deletes_the_job_and_its_pods(
    make_runner: MakeRunner,
    settings: Settings,
    recorder: Recorder,
    storage: MinioStorage,
    apiserver: FakeApiServer,
) -> None:
    job_id = new_id()
    apiserver.commands[job_id] = [sys.executable, STANDIN, "sleep"]

    async def scenario() -> None:
        runner = make_runner(settings, recorder)
        await runner.start([])
        await runner.submit(make_spec(job_id))
        await recorder.wait(job_id, "running")
        await until(lambda: apiserver.live(job_id) != [], what="process started")
        await wait_log(runner, job_id, "stand-in job")
        await runner.cancel(job_id)
        await recorder.wait(job_id, "cancelled")
        # Background propagation: the pod goes with the Job, and its process is stopped.
        await until(lambda: not apiserver.pods(job_id) and apiserver.live(job_id) == [], what="pod gone")
        await runner.cancel(job_id)  # again: not an error
        await runner.cancel(new_id())  # unknown: not an error
        await asyncio.sleep(0.3)  # let the DELETED events arrive; nothing else may be reported
        await runner.stop()

    run(scenario())
    assert apiserver.job(job_id) is None
    assert recorder.statuses(job_id)[-1] == "cancelled"
    assert recorder.statuses(job_id).count("cancelled") == 1


def test_api_server_down_at_submit_keeps_the_job_queued(
    make_runner: MakeRunner,
    settings: Settings,
    recorder: Recorder,
    storage: MinioStorage,
    apiserver: FakeApiServer,
) -> None:
    async def scenario() -> None:
        runner = make_runner(settings, recorder)
        await runner.start([])
        await until(lambda: all(r.healthy for r in runner.reflectors), what="watches up")
        apiserver.down()
        job_id = new_id()
        with pytest.raises(RunnerUnavailable, match="unreachable"):
            await runner.submit(make_spec(job_id))
        await until(lambda: not runner.reflectors[1].healthy, what="watch notices")
        with pytest.raises(Exception, match="unreachable|Connection|refused"):
            await runner.check()
        apiserver.up()
        await runner.submit(make_spec(job_id))  # the dispatcher's retry
        await recorder.wait(job_id, "succeeded")
        await runner.check()
        await runner.stop()

    run(scenario())


def test_api_server_down_mid_watch_reconnects(
    make_runner: MakeRunner,
    settings: Settings,
    recorder: Recorder,
    storage: MinioStorage,
    apiserver: FakeApiServer,
    tmp_path: Path,
) -> None:
    job_id = new_id()
    go = tmp_path / "go"
    apiserver.commands[job_id] = [sys.executable, STANDIN, "wait-file", str(go)]

    async def scenario() -> None:
        runner = make_runner(settings, recorder)
        await runner.start([])
        await runner.submit(make_spec(job_id))
        await recorder.wait(job_id, "running")
        lists = apiserver.requests["list jobs"]
        apiserver.down()
        go.touch()  # the job ends while the service cannot see it
        await until(lambda: apiserver.job(job_id)["status"].get("succeeded") == 1, what="job done")
        await asyncio.sleep(0.3)
        apiserver.up()
        await recorder.wait(job_id, "succeeded")
        assert apiserver.requests["list jobs"] > lists  # reconnected by relisting
        await runner.stop()

    run(scenario())


def test_watch_expiry_410_relists(
    make_runner: MakeRunner,
    settings: Settings,
    recorder: Recorder,
    storage: MinioStorage,
    apiserver: FakeApiServer,
    tmp_path: Path,
) -> None:
    job_id = new_id()
    go = tmp_path / "go"
    apiserver.commands[job_id] = [sys.executable, STANDIN, "wait-file", str(go)]

    async def scenario() -> None:
        runner = make_runner(settings, recorder)
        await runner.start([])
        await runner.submit(make_spec(job_id))
        await recorder.wait(job_id, "running")
        lists = apiserver.requests["list jobs"]
        apiserver.expire_watches()  # ERROR 410 on the open watches, history forgotten
        go.touch()
        await recorder.wait(job_id, "succeeded")
        assert apiserver.requests["list jobs"] > lists
        await runner.stop()

    run(scenario())


def test_restart_mid_job_adopts_by_label(
    make_runner: MakeRunner,
    settings: Settings,
    recorder: Recorder,
    storage: MinioStorage,
    apiserver: FakeApiServer,
    tmp_path: Path,
) -> None:
    running_id, finished_id, lost_id, lost_done_id = new_id(), new_id(), new_id(), new_id()
    go = tmp_path / "go"
    apiserver.commands[running_id] = [sys.executable, STANDIN, "wait-file", str(go)]

    async def scenario() -> None:
        first = make_runner(settings, recorder)
        await first.start([])
        await first.submit(make_spec(running_id))
        await recorder.wait(running_id, "running")
        await first.stop()
        # While the service is down: one job ends, one Job vanishes, one vanishes after its upload.
        apiserver.create("jobs", apiserver.namespace, _job_body(settings, finished_id))
        await until(
            lambda: (apiserver.job(finished_id) or {}).get("status", {}).get("succeeded") == 1,
            what="finished while down",
        )
        storage.put_bytes(f"alice/{lost_done_id}/result.json", b"{}", "application/json")

        second_reports = Recorder()
        second = make_runner(settings, second_reports)
        active = [make_spec(i) for i in (running_id, finished_id, lost_id, lost_done_id)]
        await second.start(active)
        running = await second_reports.wait(running_id, "running")
        assert running.started_at is not None
        await second_reports.wait(finished_id, "succeeded")
        lost = await second_reports.wait(lost_id, "failed")
        assert "no longer exists" in lost.error
        await second_reports.wait(lost_done_id, "succeeded")
        go.touch()
        await second_reports.wait(running_id, "succeeded")
        assert "job.log" in names(storage, f"alice/{running_id}/")
        await second.stop()

    run(scenario())


def _job_body(settings: Settings, job_id: str) -> dict:
    from kubernetes.client import ApiClient

    from scheduler.runners.kubernetes.objects import make_job

    return ApiClient().sanitize_for_serialization(make_job(make_spec(job_id), settings))


def test_a_missing_role_verb_fails_the_startup_check(
    make_runner: MakeRunner,
    settings: Settings,
    recorder: Recorder,
    storage: MinioStorage,
    apiserver: FakeApiServer,
) -> None:
    rules = load_rules()
    apiserver.rules = [dict(r, verbs=[v for v in r["verbs"] if v != "delete"]) for r in rules]
    job_id = new_id()
    apiserver.commands[job_id] = [sys.executable, STANDIN, "sleep"]

    async def scenario() -> None:
        runner = make_runner(settings, recorder)
        await runner.start([])
        with pytest.raises(Forbidden, match="may not delete jobs.batch in namespace fractal-test"):
            await runner.check()
        await runner.submit(make_spec(job_id))
        await recorder.wait(job_id, "running")
        with pytest.raises(Forbidden, match="cannot delete resource"):
            await runner.cancel(job_id)
        await runner.stop()

    run(scenario())
    assert apiserver.denials == ["delete jobs.batch"]


def test_a_wrong_token_is_unauthorized(
    make_runner: MakeRunner,
    settings: Settings,
    recorder: Recorder,
    storage: MinioStorage,
    apiserver: FakeApiServer,
    tmp_path: Path,
) -> None:
    bad = apiserver.write_kubeconfig(tmp_path / "bad", token="not-a-token")
    settings = settings.model_copy(update={"kubeconfig": str(bad)})

    async def scenario() -> None:
        runner = make_runner(settings, recorder)
        await runner.start([])
        with pytest.raises(Exception, match="HTTP 401"):
            await runner.check()
        with pytest.raises(RunnerUnavailable, match="HTTP 401"):
            await runner.submit(make_spec(new_id()))
        await runner.stop()

    run(scenario())
