"""A render array on Kubernetes, against the API server double: one Indexed Job whose tasks are
reported one by one, its parallelism raised as the scheduler admits more, and a retry that
runs the failed task alone."""

from __future__ import annotations

import sys
from pathlib import Path

from kubernetes.client import ApiClient

from job_image.s3 import MinioStorage
from scheduler.core.config import Settings
from scheduler.runners.base import StatusReport
from scheduler.runners.kubernetes import objects, tracking
from scheduler.runners.kubernetes.cluster import Cluster
from tests.kubernetes.apiserver import FakeApiServer
from tests.kubernetes.conftest import STANDIN, MakeRunner, Recorder, make_spec, until
from tests.kubernetes.test_runner import names, new_id, run

INDEX = "batch.kubernetes.io/job-completion-index"


def task_statuses(recorder: Recorder, job_id: str, task: int) -> list[str]:
    return [r.status for r in recorder.of(job_id) if r.task == task]


async def job_end(recorder: Recorder, job_id: str, status: str) -> StatusReport:
    """The whole job's report (task None) of that status."""
    return await recorder.wait_for(lambda r: r.job_id == job_id and r.task is None and r.status == status)


def indexes(apiserver: FakeApiServer, job_id: str) -> list[int]:
    return sorted(int(p["metadata"]["labels"][INDEX]) for p in apiserver.pods(job_id))


def test_an_array_is_one_indexed_job_and_each_task_is_reported(
    make_runner: MakeRunner, settings: Settings, recorder: Recorder, storage: MinioStorage,
    apiserver: FakeApiServer,
) -> None:
    job_id = new_id()

    async def scenario() -> None:
        runner = make_runner(settings, recorder)
        await runner.start([])
        await runner.submit(make_spec(job_id, split=3, tasks=(0, 1, 2)))
        done = await job_end(recorder, job_id, "succeeded")
        assert done.error is None
        await runner.stop()

    run(scenario())
    for task in range(3):
        assert task_statuses(recorder, job_id, task)[-1] == "succeeded"
    ends = [r for r in recorder.of(job_id) if r.status == "succeeded"]
    assert [r.task for r in ends][-1] is None  # the tasks' ends came first
    job = apiserver.job(job_id)
    assert (job["spec"]["completions"], job["status"]["completedIndexes"]) == (3, "0-2")
    assert indexes(apiserver, job_id) == [0, 1, 2]
    prefix = f"alice/{job_id}/"
    assert {f"parts/{i}.json" for i in range(3)} <= names(storage, prefix)
    assert apiserver.denials == []


def test_parallelism_is_raised_as_tasks_are_admitted(
    make_runner: MakeRunner, settings: Settings, recorder: Recorder, apiserver: FakeApiServer,
    tmp_path: Path,
) -> None:
    job_id, go = new_id(), tmp_path / "go"
    apiserver.commands[job_id] = [sys.executable, STANDIN, "wait-file", str(go)]

    async def scenario() -> None:
        runner = make_runner(settings, recorder)
        await runner.start([])
        free = runner.capacity()
        await runner.submit(make_spec(job_id, split=3, tasks=(0,)))
        await recorder.wait_for(lambda r: r.job_id == job_id and r.task == 0 and r.status == "running")
        assert indexes(apiserver, job_id) == [0] and runner.capacity() == free - 1
        # another replica admitted task 1 and raised the Job meanwhile: raises add up
        apiserver.patch("jobs", apiserver.namespace, f"fractal-{job_id}", "application/merge-patch+json",
                        {"spec": {"parallelism": 2}})
        await runner.submit(make_spec(job_id, split=3, tasks=(2,)))
        assert apiserver.job(job_id)["spec"]["parallelism"] == 3 and runner.capacity() == free - 3
        await until(lambda: all("running" in task_statuses(recorder, job_id, t) for t in range(3)),
                    what="every task running")
        assert indexes(apiserver, job_id) == [0, 1, 2]
        go.touch()
        await job_end(recorder, job_id, "succeeded")
        await until(lambda: runner.capacity() == free, what="the slots given back")
        await runner.stop()

    run(scenario())
    assert apiserver.requests["patch jobs"] == 1 and apiserver.denials == []  # the runner's one raise


def test_a_task_that_failed_is_retried_alone_by_a_new_job(
    make_runner: MakeRunner, settings: Settings, recorder: Recorder, storage: MinioStorage,
    apiserver: FakeApiServer, tmp_path: Path,
) -> None:
    """Task 1 fails past its retries: the Job fails (FailedIndexes), its other tasks' parts stay;
    the retry's Job runs task 1 alone (its index 0 is task 1) and the job succeeds."""
    settings = settings.model_copy(update={"job_backoff_limit": 1})
    job_id, healed = new_id(), tmp_path / "healed"
    apiserver.commands[job_id] = [sys.executable, STANDIN, "fail-task", "1", str(healed)]
    prefix = f"alice/{job_id}/"

    async def scenario() -> None:
        runner = make_runner(settings, recorder)
        await runner.start([])
        await runner.submit(make_spec(job_id, split=3, tasks=(0, 1, 2)))
        failed = await job_end(recorder, job_id, "failed")
        assert failed.error is None  # the tasks' own reports say why
        [task] = [r for r in recorder.of(job_id) if r.task == 1 and r.status == "failed"]
        assert task.error == "error: task 1 crashed (exit code 1)" and task.attempts == 2
        assert [task_statuses(recorder, job_id, t)[-1] for t in (0, 2)] == ["succeeded"] * 2
        healed.touch()
        recorder.reports.clear()
        await runner.submit(make_spec(job_id, split=3, tasks=(1,)))  # POST /jobs/{id}/retry
        await job_end(recorder, job_id, "succeeded")
        assert task_statuses(recorder, job_id, 1)[-1] == "succeeded"
        assert {r.task for r in recorder.of(job_id)} == {1, None}  # nothing else ran again
        await runner.stop()

    run(scenario())
    job = apiserver.job(job_id)
    assert job["metadata"]["annotations"]["fractal-scheduler/tasks"] == "1"
    assert (job["spec"]["completions"], job["status"]["completedIndexes"]) == (1, "0")
    assert indexes(apiserver, job_id) == [0]  # the first Job and its pods were replaced
    assert {f"parts/{i}.json" for i in range(3)} <= names(storage, prefix)


def test_slots_held_follow_the_parallelism_while_tasks_are_left() -> None:
    state = tracking.submitted("j", "p/", None, parallelism=3, completions=8)
    assert tracking.slots_held(state) == 3
    assert tracking.slots_held(tracking.scaled(state, 5)) == 5
    assert tracking.slots_held(tracking.scaled(state, 2)) == 3  # a raise is never a drop
    ending = tracking.JobState("j", tracking.Phase.TRACKING, parallelism=3, completions=8, finished=6)
    assert tracking.slots_held(ending) == 2  # two tasks left
    ended = tracking.JobState("j", tracking.Phase.ENDED, parallelism=3, completions=8)
    assert tracking.slots_held(ended) == 0


def test_a_raise_that_lost_a_race_reads_again(settings: Settings, apiserver: FakeApiServer) -> None:
    """Two replicas raise at once: the one that read the old value fails its JSON patch's test
    (a 422), reads again and adds its tasks to the other's."""
    job_id = new_id()
    apiserver.commands[job_id] = [sys.executable, "-c", "import time; time.sleep(60)"]
    spec = make_spec(job_id, split=8, tasks=(0,))
    body = ApiClient().sanitize_for_serialization(objects.make_job(spec, settings, parallelism=1))
    apiserver.create("jobs", apiserver.namespace, body)
    cluster = Cluster(settings)
    try:
        stale = cluster.read_job(f"fractal-{job_id}")
        apiserver.patch("jobs", apiserver.namespace, f"fractal-{job_id}", "application/merge-patch+json",
                        {"spec": {"parallelism": 3}})  # the other replica's raise, after our read
        reads = iter([stale])
        fresh = cluster.read_job
        cluster.read_job = lambda name: next(reads, None) or fresh(name)  # type: ignore[method-assign]
        assert cluster.raise_parallelism(job_id, 2, 8) == 5
        assert apiserver.job(job_id)["spec"]["parallelism"] == 5
        assert cluster.raise_parallelism(job_id, 10, 8) == 8  # never past its tasks
    finally:
        cluster.close()


def test_exit_2_fails_every_task_at_once_and_cancel_stops_them_all(
    make_runner: MakeRunner, settings: Settings, recorder: Recorder, apiserver: FakeApiServer,
    tmp_path: Path,
) -> None:
    """Invalid parameters (exit 2) end the whole array without a retry (podFailurePolicy
    FailJob); a cancelled array's Job goes, and every task's pod with it."""
    invalid, held = new_id(), new_id()
    apiserver.commands[invalid] = [sys.executable, STANDIN, "fail"]
    apiserver.commands[held] = [sys.executable, STANDIN, "wait-file", str(tmp_path / "never")]

    async def scenario() -> None:
        runner = make_runner(settings, recorder)
        await runner.start([])
        await runner.submit(make_spec(invalid, split=3, tasks=(0, 1, 2)))
        failed = await job_end(recorder, invalid, "failed")
        assert failed.error == "error: width: Input should be greater than or equal to 1 (exit code 2)"
        await runner.submit(make_spec(held, split=3, tasks=(0, 1, 2)))
        await until(lambda: sum(r.status == "running" for r in recorder.of(held) if r.task is not None) == 3,
                    timeout=60, what="three tasks running")  # three Python processes start: slow under load
        await runner.cancel(held)
        await job_end(recorder, held, "cancelled")
        await until(lambda: not apiserver.pods(held), what="every task's pod gone")
        await runner.stop()

    run(scenario(), seconds=150)
    conditions = {c["type"]: c["reason"] for c in apiserver.job(invalid)["status"]["conditions"]}
    assert conditions["Failed"] == "PodFailurePolicy"
    pods = indexes(apiserver, invalid)
    assert len(pods) == len(set(pods))  # no index ran twice
    assert apiserver.job(held) is None and apiserver.live(held) == []
