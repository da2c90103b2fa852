"""KubernetesRunner against the API server double: the real client, real HTTP, real processes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time
import uuid
from pathlib import Path

import pytest

from job_image.s3 import MinioStorage
from scheduler.core.config import Settings
from scheduler.runners.base import RunnerUnavailable, StatusReport
from scheduler.runners.kubernetes import objects, tracking
from scheduler.runners.kubernetes.errors import Forbidden
from scheduler.runners.kubernetes.runner import KubernetesRunner
from tests.kubernetes.apiserver import FakeApiServer, load_rules
from tests.kubernetes.conftest import STANDIN, MakeRunner, Recorder, make_spec, until, wait_log


def new_id() -> str:
    return uuid.uuid4().hex


def held_job(apiserver: FakeApiServer, tmp_path: Path) -> tuple[str, Path]:
    """A job whose stand-in container runs until the returned file is touched."""
    job_id, go = new_id(), tmp_path / "go"
    apiserver.commands[job_id] = [sys.executable, STANDIN, "wait-file", str(go)]
    return job_id, go


async def running_runner(
    make_runner: MakeRunner, settings: Settings, recorder: Recorder, job_id: str
) -> KubernetesRunner:
    """A started runner with `job_id` submitted and reported running."""
    runner = make_runner(settings, recorder)
    await runner.start([])
    await runner.submit(make_spec(job_id))
    await recorder.wait(job_id, "running")
    return runner


def run(coro, seconds: float = 60) -> None:  # noqa: ANN001 - a coroutine
    asyncio.run(asyncio.wait_for(coro, seconds))


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
        # The Job and pod watches are separate streams: the pod may already run when the Job
        # is first seen, so a state may be skipped, never reported out of order.
        order = ["pending", "running", "succeeded"]
        assert statuses[-1] == "succeeded" and [order.index(s) for s in statuses] == sorted(
            order.index(s) for s in statuses
        )
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
        # The API server's selector (on the Job's uid) reached the runner through the client.
        uid = apiserver.job(job_id)["metadata"]["uid"]
        selector = runner.watches.reflectors["jobs"].get(f"fractal-{job_id}").spec.selector
        assert selector.match_labels == {"batch.kubernetes.io/controller-uid": uid}
        assert apiserver.pods(job_id)[0]["metadata"]["labels"]["job-name"] == f"fractal-{job_id}"
        await runner.stop()

    run(scenario())
    assert apiserver.denials == []
    # The pod got the job contract's environment through env and envFrom.
    pod = apiserver.store.list("pods", apiserver.namespace)[0][0]
    assert pod["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["name"] == "minio-config"


@pytest.mark.parametrize(
    ("mode", "error", "pods", "reason"),
    [
        # invalid parameters: the podFailurePolicy fails the Job at once, no retry can help
        ("fail", "error: width: Input should be greater than or equal to 1 (exit code 2)", 1,
         "PodFailurePolicy"),
        # anything else: one retry (JOB_BACKOFF_LIMIT 1), then its index has failed
        ("crash", "error: the render crashed (exit code 1)", 2, "FailedIndexes"),
    ],
)
def test_job_error_is_its_last_stderr_line(
    make_runner: MakeRunner,
    settings: Settings,
    recorder: Recorder,
    storage: MinioStorage,
    apiserver: FakeApiServer,
    mode: str,
    error: str,
    pods: int,
    reason: str,
) -> None:
    settings = settings.model_copy(update={"job_backoff_limit": 1})
    job_id = new_id()
    apiserver.commands[job_id] = [sys.executable, STANDIN, mode]

    async def scenario() -> None:
        runner = make_runner(settings, recorder)
        await runner.start([])
        await runner.submit(make_spec(job_id))
        failed = await recorder.wait(job_id, "failed")
        assert failed.error == error
        await runner.stop()

    run(scenario())
    assert len(apiserver.pods(job_id)) == pods
    conditions = {c["type"]: c["reason"] for c in apiserver.job(job_id)["status"]["conditions"]}
    assert conditions["Failed"] == reason


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
        runner = await running_runner(make_runner, settings, recorder, job_id)
        failed = await recorder.wait(job_id, "failed")
        assert (
            failed.error == "The job ran longer than its deadline of 1 s and was stopped (DeadlineExceeded)."
        )
        await runner.stop()

    run(scenario())
    assert apiserver.live(job_id) == []


def quota(apiserver: FakeApiServer, **hard: str) -> None:
    """Create or replace the namespace's ResourceQuota `fractal-quota` (as its admin would)."""
    ns, name = apiserver.namespace, "fractal-quota"
    if apiserver.store.get("resourcequotas", ns, name) is not None:
        apiserver.store.update("resourcequotas", ns, name, lambda q: q["spec"].update(hard=hard))
    else:
        apiserver.store.create("resourcequotas", ns, {"metadata": {"name": name}, "spec": {"hard": hard}})


def test_a_job_a_full_quota_refuses_waits_past_the_pending_deadline_and_runs_when_there_is_room(
    make_runner: MakeRunner,
    settings: Settings,
    recorder: Recorder,
    storage: MinioStorage,
    apiserver: FakeApiServer,
) -> None:
    """Waiting for room that others hold is not a failure: only JOB_CAPACITY_DEADLINE_SECONDS
    ends it. The other pending reasons (image pull, no node fits) are tables in test_tracking.py."""
    settings = settings.model_copy(update={"job_pending_deadline_seconds": 3})
    job_id = new_id()
    quota(apiserver, pods="0")  # someone set it to nothing (or filled it)
    expected = "The Job controller cannot create the job's pod (FailedCreate): Error creating: pods"

    async def scenario() -> None:
        runner = make_runner(settings, recorder)
        await runner.start([])
        await until(lambda: runner.view().snapshot({}).free_jobs("cpu") == 0, what="the quota seen")
        snap = runner.view().snapshot({})
        assert snap.reason("cpu") == "0 of 0 in use (pods of ResourceQuota fractal-quota)"
        await runner.submit(make_spec(job_id))
        waiting = await recorder.wait_for(lambda r: r.job_id == job_id and expected in (r.message or ""))
        assert waiting.status == "pending" and waiting.message.startswith("waiting for room in the cluster: ")
        refusal = "exceeded quota: fractal-quota, requested: pods=1, used: pods=0, limited: pods=0"
        assert refusal in waiting.message
        await until(lambda: apiserver.job(job_id) is not None and time.monotonic() > started + 5,
                    what="well past the pending deadline")
        assert "failed" not in recorder.statuses(job_id)
        quota(apiserver, pods="1")  # room again
        await recorder.wait(job_id, "succeeded", timeout=20)
        await until(lambda: runner.view().snapshot({}).free_jobs("cpu") == 1, what="the room given back")
        await runner.stop()

    started = time.monotonic()
    run(scenario())
    assert "failed" not in recorder.statuses(job_id)


def test_a_full_quota_whose_scopes_miss_our_pods_leaves_them_room(
    make_runner: MakeRunner,
    settings: Settings,
    recorder: Recorder,
    storage: MinioStorage,
    apiserver: FakeApiServer,
) -> None:
    """Our pods request CPU and memory and name no PriorityClass: quotas for BestEffort pods or
    for a PriorityClass bound nothing of ours, in the snapshot and at quota admission alike."""
    ns, job_id = apiserver.namespace, new_id()
    high = {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["batch-high"]}]}
    for name, spec in {"best-effort": {"scopes": ["BestEffort"]}, "high": {"scopeSelector": high}}.items():
        body = {"metadata": {"name": name}, "spec": {"hard": {"pods": "0"}, **spec}}
        apiserver.store.create("resourcequotas", ns, body)

    async def scenario() -> None:
        runner = make_runner(settings.model_copy(update={"kube_max_active_jobs": 2}), recorder)
        await runner.start([])
        await until(lambda: runner.watches.quotas_listed() and len(runner.watches.quotas()) == 2,
                    what="the quotas seen by the watch")
        assert runner.view().snapshot({}).free_jobs("cpu") == 2  # KUBE_MAX_ACTIVE_JOBS decides
        await runner.submit(make_spec(job_id))
        await recorder.wait(job_id, "succeeded", timeout=20)
        await runner.stop()

    run(scenario())


def test_gpu_jobs_beyond_the_nodes_gpus_wait_unschedulable_and_all_succeed(
    make_runner: MakeRunner,
    settings: Settings,
    recorder: Recorder,
    storage: MinioStorage,
    apiserver: FakeApiServer,
    tmp_path: Path,
) -> None:
    """One GPU on the node, three GPU jobs handed to the runner at once (as a dispatcher
    without a quota to read would): the others are Unschedulable (Insufficient nvidia.com/gpu)
    while the first runs, wait past a short pending deadline, and run one after another."""
    settings = settings.model_copy(update={"job_pending_deadline_seconds": 3})
    apiserver.node_gpus = 1
    (first, go), others = held_job(apiserver, tmp_path), [new_id(), new_id()]

    async def scenario() -> None:
        runner = make_runner(settings, recorder)
        await runner.start([])
        for job_id in (first, *others):
            await runner.submit(make_spec(job_id, device="gpu"))
        await recorder.wait(first, "running")
        for job_id in others:
            waiting = await recorder.wait_for(
                lambda r, j=job_id: r.job_id == j and "Insufficient nvidia.com/gpu" in (r.message or "")
            )
            assert waiting.status == "pending"
            assert waiting.message.startswith("waiting for room in the cluster")
        await until(lambda: time.monotonic() > started + 5, what="well past the pending deadline")
        go.touch()
        for job_id in (first, *others):
            await recorder.wait(job_id, "succeeded", timeout=30)
        await runner.stop()

    started = time.monotonic()
    run(scenario())
    assert all("failed" not in recorder.statuses(j) for j in (first, *others)), [
        (r.status, r.message, r.error) for j in others for r in recorder.of(j)]


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
        runner = await running_runner(make_runner, settings, recorder, job_id)
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
    # The record keeps what the job printed: its log was saved before the delete took the pod.
    log = b"".join(storage.iter_bytes(f"alice/{job_id}/job.log")).decode()
    assert f"stand-in job {job_id} mode sleep" in log
    assert {"pod.json", "events.json"} <= names(storage, f"alice/{job_id}/")


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
        await until(lambda: all(r.healthy for r in runner.watches.reflectors.values()), what="watches up")
        apiserver.down()
        job_id = new_id()
        with pytest.raises(RunnerUnavailable, match="unreachable"):
            await runner.submit(make_spec(job_id))
        await until(lambda: not runner.watches.reflectors["jobs"].healthy, what="watch notices")
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
    job_id, go = held_job(apiserver, tmp_path)

    async def scenario() -> None:
        runner = await running_runner(make_runner, settings, recorder, job_id)
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
    job_id, go = held_job(apiserver, tmp_path)

    async def scenario() -> None:
        runner = await running_runner(make_runner, settings, recorder, job_id)
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


def test_a_missing_role_verb_fails_the_startup_check_and_a_refused_cancel_leaves_no_mark(
    make_runner: MakeRunner,
    settings: Settings,
    recorder: Recorder,
    storage: MinioStorage,
    apiserver: FakeApiServer,
    tmp_path: Path,
) -> None:
    rules = load_rules()
    apiserver.rules = [dict(r, verbs=[v for v in r["verbs"] if v != "delete"]) for r in rules]
    job_id, go = held_job(apiserver, tmp_path)

    async def scenario() -> None:
        runner = make_runner(settings, recorder)
        await runner.start([])
        with pytest.raises(Forbidden, match="may not delete jobs.batch in namespace fractal-test"):
            await runner.check()
        await runner.submit(make_spec(job_id))
        await recorder.wait(job_id, "running")
        # RunnerUnavailable: the HTTP layer answers 503 with this sentence.
        refused = r"^the service account may not delete jobs.batch in namespace fractal-test \("
        with pytest.raises(RunnerUnavailable, match=refused):
            await runner.cancel(job_id)
        go.touch()  # the job ends on its own: that end is reported, not a cancel
        await recorder.wait(job_id, "succeeded")
        await runner.stop()

    run(scenario())
    assert apiserver.denials == ["delete jobs.batch"]
    assert "cancelled" not in recorder.statuses(job_id)


def test_a_created_job_holds_a_slot_before_the_watch_shows_it(
    make_runner: MakeRunner, settings: Settings, recorder: Recorder, apiserver: FakeApiServer
) -> None:
    """No watch runs here (start() is not called): capacity must not wait for one, or a burst
    of submits would create more Jobs than KUBE_MAX_ACTIVE_JOBS allows."""
    settings = settings.model_copy(update={"kube_max_active_jobs": 2})
    ids = [new_id(), new_id()]

    async def scenario() -> None:
        runner = make_runner(settings, recorder)
        assert runner.capacity() == 2
        for job_id in ids:
            await runner.submit(make_spec(job_id))
        assert runner.capacity() == 0
        for job_id in ids:
            await runner.cancel(job_id)
        await runner.stop()

    run(scenario())
    assert apiserver.requests["create jobs"] == 2


def test_concurrent_readiness_checks_share_one_access_review_round(
    make_runner: MakeRunner, settings: Settings, recorder: Recorder, apiserver: FakeApiServer
) -> None:
    """The start-up review found the API server away: /readyz asks again, and however many
    probes arrive while that round is in flight, one round of reviews is made."""

    async def scenario() -> None:
        runner = make_runner(settings, recorder)
        apiserver.down()
        await runner.start([])  # its access check fails: the runner does not know yet
        apiserver.up()
        # (check() may still raise: the watches are in their reconnect backoff)
        await asyncio.gather(*(runner.check() for _ in range(5)), return_exceptions=True)
        await asyncio.gather(runner.check(), return_exceptions=True)  # answered now: no more reviews
        await runner.stop()

    run(scenario())
    assert apiserver.requests["create selfsubjectaccessreviews"] == len(objects.API_ACCESS)


def test_an_unreachable_api_server_refuses_cancel_without_a_mark(
    make_runner: MakeRunner,
    settings: Settings,
    recorder: Recorder,
    storage: MinioStorage,
    apiserver: FakeApiServer,
    tmp_path: Path,
) -> None:
    job_id, go = held_job(apiserver, tmp_path)

    async def scenario() -> None:
        runner = await running_runner(make_runner, settings, recorder, job_id)
        apiserver.down()
        with pytest.raises(RunnerUnavailable, match="^the Kubernetes API server cannot be reached"):
            await runner.cancel(job_id)
        go.touch()
        apiserver.up()
        await recorder.wait(job_id, "succeeded")
        await runner.stop()

    run(scenario())
    assert "cancelled" not in recorder.statuses(job_id)


def _backdate(apiserver: FakeApiServer, job_id: str) -> None:
    """As if the Job had been created long before the service started."""
    apiserver.store.update(
        "jobs",
        apiserver.namespace,
        f"fractal-{job_id}",
        lambda j: j["metadata"].update(creationTimestamp="2020-01-01T00:00:00Z"),
    )


def test_jobs_without_a_record_are_deleted_at_start_and_nothing_is_saved(
    make_runner: MakeRunner,
    settings: Settings,
    recorder: Recorder,
    storage: MinioStorage,
    apiserver: FakeApiServer,
    tmp_path: Path,
) -> None:
    orphan_id, ended_id, young_id = new_id(), new_id(), new_id()
    apiserver.commands[orphan_id] = [sys.executable, STANDIN, "sleep"]
    apiserver.commands[young_id] = [sys.executable, STANDIN, "wait-file", str(tmp_path / "never")]

    async def scenario() -> None:
        # Left in the cluster with the service's labels, but the DB lists none of them as active.
        apiserver.create("jobs", apiserver.namespace, _job_body(settings, ended_id))
        await until(
            lambda: any(
                c["type"] == "Complete"
                for c in (apiserver.job(ended_id) or {}).get("status", {}).get("conditions", [])
            ),
            what="ended before the start",
        )
        apiserver.create("jobs", apiserver.namespace, _job_body(settings, orphan_id))
        _backdate(apiserver, orphan_id)
        await until(lambda: apiserver.live(orphan_id) != [], what="orphan running")
        runner = make_runner(settings, recorder)
        # Created after the runner was built: may be another replica's (rolling update).
        apiserver.create("jobs", apiserver.namespace, _job_body(settings, young_id))
        await runner.start([])
        await until(
            lambda: apiserver.job(orphan_id) is None
            and not apiserver.pods(orphan_id)
            and apiserver.live(orphan_id) == []
            and orphan_id not in runner.states,  # the runner saw the deletion through
            what="orphan deleted",
        )
        assert apiserver.job(ended_id) is not None  # ended: its TTL removes it
        assert apiserver.job(young_id) is not None
        await runner.stop()

    run(scenario())
    assert names(storage, f"alice/{orphan_id}/") == set()
    # The ended one uploaded its own result; the runner saved nothing beside it.
    assert names(storage, f"alice/{ended_id}/") == {"image.png", "result.json"}
    assert recorder.of(orphan_id) == [] and recorder.of(ended_id) == []


def test_forget_removes_the_job_and_saves_nothing_more(
    make_runner: MakeRunner,
    settings: Settings,
    recorder: Recorder,
    storage: MinioStorage,
    apiserver: FakeApiServer,
) -> None:
    """The service deleted the record: a running Job (its cancel raced the delete) and a
    finished one (before its TTL) are removed."""
    running_id, finished_id = new_id(), new_id()
    apiserver.commands[running_id] = [sys.executable, STANDIN, "sleep"]

    async def scenario() -> None:
        runner = make_runner(settings, recorder)
        await runner.start([])
        await runner.submit(make_spec(finished_id))
        await recorder.wait(finished_id, "succeeded")
        await runner.submit(make_spec(running_id))
        await recorder.wait(running_id, "running")
        runner.forget(running_id)
        runner.forget(finished_id)
        await until(
            lambda: apiserver.job(running_id) is None
            and apiserver.job(finished_id) is None
            and apiserver.live(running_id) == []
            and not ({running_id, finished_id} & set(runner.states)),
            what="Jobs deleted",
        )
        await runner.stop()

    run(scenario())
    assert names(storage, f"alice/{running_id}/") == set()
    assert recorder.statuses(running_id)[-1] == "running"  # no end reported for a deleted record
    assert recorder.statuses(finished_id).count("succeeded") == 1


class Database(Recorder):
    """A report callable that says whether the DB holds the job (False: no record), as the
    tracker's report would with the return value the runner honours."""

    def __init__(self, known: set[str]) -> None:
        super().__init__()
        self.known = known

    async def __call__(self, report: StatusReport) -> bool:
        await super().__call__(report)
        return report.job_id in self.known


def test_a_job_the_database_does_not_know_is_deleted_when_seen(
    make_runner: MakeRunner,
    settings: Settings,
    storage: MinioStorage,
    apiserver: FakeApiServer,
) -> None:
    known_id, stray_id = new_id(), new_id()
    apiserver.commands[known_id] = apiserver.commands[stray_id] = [sys.executable, STANDIN, "sleep"]
    reports = Database(known={known_id})

    async def scenario() -> None:
        runner = make_runner(settings, reports)
        await runner.start([])
        await runner.submit(make_spec(known_id))
        await reports.wait(known_id, "running")
        # Made while the service runs (by hand, or a replica whose record was deleted since).
        apiserver.create("jobs", apiserver.namespace, _job_body(settings, stray_id))
        await until(
            lambda: apiserver.job(stray_id) is None and apiserver.live(stray_id) == [],
            what="stray Job deleted",
        )
        assert apiserver.job(known_id) is not None and apiserver.live(known_id) != []
        await runner.stop()

    run(scenario())
    assert names(storage, f"alice/{stray_id}/") == set()
    assert "failed" not in reports.statuses(stray_id)


class FailsOnce(Recorder):
    """A report callable whose first report of an end fails (e.g. the DB is briefly away)."""

    def __init__(self) -> None:
        super().__init__()
        self.failed: list[StatusReport] = []

    async def __call__(self, report: StatusReport) -> None:
        if report.status in ("succeeded", "failed", "cancelled") and not self.failed:
            self.failed.append(report)
            raise RuntimeError("database is locked")
        await super().__call__(report)


def test_a_failed_end_report_is_sent_again(
    make_runner: MakeRunner,
    settings: Settings,
    storage: MinioStorage,
    apiserver: FakeApiServer,
) -> None:
    settings = settings.model_copy(update={"job_pending_deadline_seconds": 2})  # sweeps every 0.2 s
    reports = FailsOnce()
    job_id = new_id()

    async def scenario() -> None:
        runner = make_runner(settings, reports)
        await runner.start([])
        await runner.submit(make_spec(job_id))
        await reports.wait(job_id, "succeeded")
        await runner.stop()

    run(scenario())
    assert [r.status for r in reports.failed] == ["succeeded"]
    assert reports.statuses(job_id).count("succeeded") == 1


def test_the_saved_log_is_its_tail_within_the_byte_limit(
    make_runner: MakeRunner,
    settings: Settings,
    recorder: Recorder,
    storage: MinioStorage,
    apiserver: FakeApiServer,
) -> None:
    settings = settings.model_copy(update={"kube_log_limit_bytes": 4096})  # the last 32 lines
    short_id, wide_id = new_id(), new_id()
    apiserver.commands[short_id] = [sys.executable, STANDIN, "chatty", "3000", "3"]
    # 212-byte lines: the byte limit cuts the 32 lines' tail inside a two-byte character.
    apiserver.commands[wide_id] = [sys.executable, STANDIN, "chatty", "40", "100"]

    async def scenario() -> None:
        runner = make_runner(settings, recorder)
        await runner.start([])
        for job_id in (short_id, wide_id):
            await runner.submit(make_spec(job_id))
        for job_id in (short_id, wide_id):
            await recorder.wait(job_id, "succeeded")
        await runner.stop()

    def saved_log(job_id: str) -> bytes:
        return b"".join(storage.iter_bytes(f"alice/{job_id}/job.log"))

    run(scenario())
    short = saved_log(short_id).decode()
    assert short.endswith("line 02999 üüü\nuploaded\n") and "line 00000" not in short
    wide = saved_log(wide_id).decode()  # saved whole, the cut character replaced
    assert wide.startswith("line 00009 ") and wide.endswith("\ufffd")
    assert {"pod.json", "events.json"} <= names(storage, f"alice/{wide_id}/")


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


def test_the_dispatchers_thread_plans_with_a_view_the_loop_no_longer_changes(
    make_runner: MakeRunner, settings: Settings, recorder: Recorder
) -> None:
    """The loop adds and drops jobs while worker threads compute snapshots (as the dispatcher's
    does): each snapshot is that of its view, taken on the loop, and no thread iterates the
    runner's own dict (one the loop resizes meanwhile: "dictionary changed size during iteration")."""
    settings = settings.model_copy(update={"kube_max_active_jobs": 1_000_000})

    async def scenario() -> None:
        runner = make_runner(settings, recorder)
        await runner.start([])
        await until(runner.watches.quotas_listed, what="the quota watch's first list")
        churning = True

        async def churn() -> None:  # the loop's side: jobs claimed and dropped, as submits and ends do
            n = 0
            while churning:
                for _ in range(500):
                    job_id = f"{n:032x}"
                    runner.states[job_id] = tracking.submitted(job_id, f"alice/{job_id}/", None)
                    n += 1
                for job_id in list(runner.states)[:400]:
                    del runner.states[job_id]
                await asyncio.sleep(0)

        churner = asyncio.create_task(churn())
        for _ in range(100):
            view = runner.view()
            snap = await asyncio.to_thread(view.snapshot, {})
            assert snap.free_jobs("cpu") == settings.kube_max_active_jobs - view.held
        churning = False
        await churner
        assert view.held > 0
        with pytest.raises(dataclasses.FrozenInstanceError):
            view.held = 0  # type: ignore[misc]
        runner.states.clear()
        await runner.stop()

    run(scenario())
