"""`tracking.decide` and the runner's own steps as tables over canned Jobs, Pods and Events
(kopf's way: no HTTP, no threads, no clock). The end-to-end runs through the API server double
are in test_runner.py."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k

from scheduler.core.config import Settings
from scheduler.runners.kubernetes import adoption, sweep, tracking
from scheduler.runners.kubernetes import tasks as kube_tasks
from scheduler.runners.kubernetes.runner import KubernetesRunner
from scheduler.runners.kubernetes.status import Observation
from scheduler.runners.kubernetes.tracking import (
    ConcludeLost,
    Delete,
    Finish,
    Forget,
    JobState,
    Phase,
    ReadEvents,
    Report,
    decide,
)
from tests.kubernetes.conftest import Recorder

JOB_ID = "a" * 32
T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = tracking.Policy(pending_deadline=300, capacity_deadline=3600, events_after=5, orphan_margin=10)
UID = "uid-1"


def ts(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def job(*conditions: tuple[str, str], uid: str = UID, deleted: bool = False, **status: Any) -> k.V1Job:
    meta: dict[str, Any] = {
        "name": f"fractal-{JOB_ID}",
        "uid": uid,
        "creationTimestamp": ts(0),
        "labels": {"fractal-scheduler/job-id": JOB_ID},
        "annotations": {"fractal-scheduler/result-prefix": f"alice/{JOB_ID}/"},
    }
    if deleted:
        meta["deletionTimestamp"] = ts(60)
    conds = [
        {"type": t, "status": "True", "reason": r, "message": "m", "lastTransitionTime": ts(50)}
        for t, r in conditions
    ]
    return k.V1Job.from_dict(
        {
            "metadata": meta,
            "spec": {
                "activeDeadlineSeconds": 600,
                "template": {"spec": {"containers": [{"name": "render"}]}},
            },
            "status": {"conditions": conds, **status},
        }
    )


def pod(
    state: dict[str, Any] | None = None,
    *,
    phase: str = "Pending",
    deleted: bool = False,
    conditions: list[dict[str, Any]] | None = None,
    name: str = "p1",
) -> k.V1Pod:
    meta: dict[str, Any] = {
        "name": name,
        "creationTimestamp": ts(1),
        "labels": {"fractal-scheduler/job-id": JOB_ID},
    }
    if deleted:
        meta["deletionTimestamp"] = ts(60)
    statuses = (
        [
            {
                "name": "render",
                "image": "fractal-job:1",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": state,
            }
        ]
        if state
        else None
    )
    return k.V1Pod.from_dict(
        {
            "metadata": meta,
            "spec": {"containers": [{"name": "render", "image": "fractal-job:1"}]},
            "status": {"phase": phase, "containerStatuses": statuses, "conditions": conditions},
        }
    )


RUNNING = pod({"running": {"startedAt": ts(10)}}, phase="Running")
FAILED_POD = pod(
    {
        "terminated": {
            "exitCode": 2,
            "reason": "Error",
            "startedAt": ts(10),
            "finishedAt": ts(20),
            "message": "progress 10%\nerror: width: too big\n",
        }
    },
    phase="Failed",
)
DONE_POD = pod(
    {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": ts(10), "finishedAt": ts(20)}},
    phase="Succeeded",
)
UNSCHEDULABLE = pod(
    conditions=[
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
        }
    ]
)
NO_NODE = pod(
    conditions=[
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.",
        }
    ]
)
IMAGE_PULL = pod({"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "x"'}})
FAILED_CREATE = [
    k.CoreV1Event(
        metadata=k.V1ObjectMeta(name="e1"),
        involved_object=k.V1ObjectReference(name=f"fractal-{JOB_ID}"),
        reason="FailedCreate",
        last_timestamp=T0,
        message='Error creating: pods "x" is forbidden: exceeded quota: q, requested: pods=1',
    )
]


def state(phase: Phase = Phase.TRACKING, **fields: Any) -> JobState:
    return JobState(
        JOB_ID, phase, prefix=f"alice/{JOB_ID}/", uid=UID, seen=phase is not Phase.EXPECTED, **fields
    )


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def kinds(actions: list[tracking.Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


# --- following a Job ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "the_job", "pods", "phase", "status", "words"),
    [
        (state(Phase.EXPECTED), job(), [], Phase.TRACKING, "pending", "Waiting for the Job controller"),
        (state(), job(), [pod()], Phase.TRACKING, "pending", "Waiting for the scheduler"),
        (state(), job(), [IMAGE_PULL], Phase.TRACKING, "pending", "Cannot pull the job image fractal-job:1"),
        (state(), job(), [UNSCHEDULABLE], Phase.TRACKING, "pending", "No node can run the job yet"),
        (state(), job(), [RUNNING], Phase.TRACKING, "running", None),
        # The Job controller of 1.31 writes FailureTarget / SuccessCriteriaMet first, in an update
        # of its own: the job has not ended until Failed / Complete follows.
        (
            state(),
            job(("SuccessCriteriaMet", "CompletionsReached")),
            [DONE_POD],
            Phase.TRACKING,
            "running",
            None,
        ),
        (
            state(),
            job(("FailureTarget", "BackoffLimitExceeded")),
            [FAILED_POD],
            Phase.TRACKING,
            "running",
            None,
        ),
    ],
    ids=[
        "seen-first",
        "unscheduled",
        "image-pull",
        "unschedulable",
        "running",
        "success-target",
        "failure-target",
    ],
)
def test_progress_is_reported_once_per_change(
    before: JobState, the_job: k.V1Job, pods: list[k.V1Pod], phase: Phase, status: str, words: str | None
) -> None:
    after, actions = decide(before, the_job, pods, None, at(1), POLICY)
    assert after.phase is phase and kinds(actions) == ["Report"]
    report = actions[0]
    assert isinstance(report, Report) and report.obs.status == status
    assert words is None or words in (report.obs.message or "")
    assert decide(after, the_job, pods, None, at(2), POLICY) == (after, [])  # nothing new: no report


@pytest.mark.parametrize(
    ("the_job", "pods", "status", "error"),
    [
        (
            job(("SuccessCriteriaMet", "CompletionsReached"), ("Complete", "CompletionsReached")),
            [DONE_POD],
            "succeeded",
            None,
        ),
        (
            job(("FailureTarget", "BackoffLimitExceeded"), ("Failed", "BackoffLimitExceeded")),
            [FAILED_POD],
            "failed",
            "error: width: too big (exit code 2)",
        ),
        (
            job(("Failed", "DeadlineExceeded")),
            [RUNNING],
            "failed",
            "The job ran longer than its deadline of 600 s and was stopped (DeadlineExceeded).",
        ),
        (
            job(deleted=True),
            [RUNNING],
            "failed",
            f"Its Kubernetes Job fractal-{JOB_ID} was deleted before it finished.",
        ),
    ],
    ids=["complete", "backoff-limit", "deadline", "deleted"],
)
def test_an_end_is_finished_once(
    the_job: k.V1Job, pods: list[k.V1Pod], status: str, error: str | None
) -> None:
    after, actions = decide(state(), the_job, pods, None, at(60), POLICY)
    assert after.phase is Phase.FINISHING and after.end == actions[0].obs
    assert actions == [Finish(after.end, save=True, recompute=True)]
    assert (after.end.status, after.end.error) == (status, error)
    assert decide(after, the_job, pods, None, at(61), POLICY) == (after, [])  # already ending


def test_a_job_not_yet_shown_by_the_watch_waits_and_holds_its_slot() -> None:
    expected = tracking.submitted(JOB_ID, "alice/x/", UID)
    assert decide(expected, None, [], None, at(1), POLICY) == (expected, [])
    assert tracking.holds_slot(expected)
    older = job(uid="an-earlier-incarnation", deleted=True)  # a tombstone with the same name
    assert decide(expected, older, [], None, at(1), POLICY) == (expected, [])


def test_the_watches_do_not_end_a_job_while_its_cancel_is_in_flight() -> None:
    cancelling = tracking.cancelling(state())
    complete = job(("Complete", "CompletionsReached"))
    assert decide(cancelling, complete, [DONE_POD], None, at(60), POLICY)[1] == []
    assert tracking.cancel_refused(cancelling).phase is Phase.TRACKING


@pytest.mark.parametrize(
    ("before", "phase", "actions"),
    [
        (state(), Phase.FINISHING, ["Finish"]),
        (state(Phase.EXPECTED), Phase.FINISHING, ["Finish"]),
        (state(Phase.FINISHING, end=Observation("succeeded")), Phase.FINISHING, []),
        (state(Phase.ENDED, end=Observation("failed")), Phase.ENDED, []),
        (tracking.orphaned(state()), Phase.ORPHAN, []),
    ],
    ids=["tracking", "expected", "finishing", "ended", "orphan"],
)
def test_a_cancel_ends_the_job_unless_its_end_was_decided(
    before: JobState, phase: Phase, actions: list[str]
) -> None:
    after, todo = tracking.cancelled(tracking.cancelling(before), purged=True, now=at(5))
    assert after.phase is phase and kinds(todo) == actions and after.purged
    if todo:
        assert todo == [Finish(Observation("cancelled", finished_at=at(5)), save=False)]


# --- the pending deadline and a Job without a pod ---------------------------------------------------------


def test_a_podless_job_has_its_events_read_once_then_explained() -> None:
    first, actions = decide(state(reported=("pending", "m", None)), job(), [], None, at(6), POLICY)
    assert actions == [ReadEvents()] and first.events_read
    explained, actions = decide(first, job(), [], FAILED_CREATE, at(6), POLICY)
    assert kinds(actions) == ["Report"]
    assert actions[0].obs.message.startswith(  # a full quota: the job waits for room, and says so
        "waiting for room in the cluster: The Job controller cannot create the job's pod (FailedCreate)"
    )
    assert decide(explained, job(), [], None, at(7), POLICY) == (explained, [])  # read once, not per event


@pytest.mark.parametrize(
    ("pods", "words"),
    [([NO_NODE], "didn't match Pod's node affinity"), ([IMAGE_PULL], "Cannot pull the job image")],
    ids=["no-node-fits", "image-pull"],
)
def test_the_pending_deadline_fails_the_job_with_why_it_waited(pods: list[k.V1Pod], words: str) -> None:
    after, actions = decide(state(events_read=True), job(), pods, None, at(300), POLICY)
    assert after.phase is Phase.FINISHING and kinds(actions) == ["Delete", "Finish"]
    assert after.end.error.startswith("The job did not start within 300 s: ") and words in after.end.error
    assert actions[1] == Finish(after.end)  # saved (events.json tells the story), not recomputed


@pytest.mark.parametrize(
    ("pods", "events", "words"),
    [([UNSCHEDULABLE], None, "Insufficient nvidia.com/gpu"), ([], FAILED_CREATE, "exceeded quota: q")],
    ids=["insufficient-gpus", "quota-full"],
)
def test_waiting_for_room_others_hold_fails_only_at_the_capacity_deadline(
    pods: list[k.V1Pod], events: list[k.CoreV1Event] | None, words: str
) -> None:
    """A pod a full quota refuses, or that no node has the GPUs for yet, goes on waiting past
    the pending deadline, saying so; the much longer capacity deadline ends it."""
    current = state(events_read=True)
    for t in (300, 3599):
        current, actions = decide(current, job(), pods, None, at(t), POLICY)
        if events is not None and t == 300:  # podless: its events say why, read at the deadline
            assert actions == [ReadEvents()]
            current, actions = decide(current, job(), pods, events, at(t), POLICY)
        assert current.phase is Phase.TRACKING
        if t == 300:
            assert kinds(actions) == ["Report"] and actions[0].obs.status == "pending"
            assert actions[0].obs.message.startswith("waiting for room in the cluster: ") and words in (
                actions[0].obs.message
            )
    current, actions = decide(current, job(), pods, events, at(3600), POLICY)
    assert current.phase is Phase.FINISHING and kinds(actions) == ["Delete", "Finish"]
    assert current.end.error.startswith("The job did not start within 3600 s: ")
    assert words in current.end.error


def test_after_waiting_for_room_the_pending_deadline_counts_from_when_there_was_room() -> None:
    """Waiting for capacity is not the cluster's delay: once the pod is placed, a slow image
    pull gets the whole pending deadline, counted from then."""
    current, _ = decide(state(events_read=True), job(), [UNSCHEDULABLE], None, at(1000), POLICY)
    assert current.waited
    current, _ = decide(current, job(), [IMAGE_PULL], None, at(2000), POLICY)  # placed, pulling
    assert current.room_at == T0 + timedelta(seconds=2000)
    current, actions = decide(current, job(), [IMAGE_PULL], None, at(2299), POLICY)
    assert current.phase is Phase.TRACKING
    current, actions = decide(current, job(), [IMAGE_PULL], None, at(2300), POLICY)
    assert kinds(actions) == ["Delete", "Finish"] and "within 300 s: Cannot pull" in current.end.error


def test_a_started_job_never_meets_the_pending_deadline() -> None:
    after, actions = decide(state(), job(), [RUNNING], None, at(10_000), POLICY)
    assert after.phase is Phase.TRACKING and kinds(actions) == ["Report"]


# --- reports that fail, records that are gone -------------------------------------------------------


def test_a_failed_progress_report_is_sent_again() -> None:
    reported, actions = decide(state(), job(), [RUNNING], None, at(11), POLICY)
    key = (actions[0].obs.status, actions[0].obs.message, actions[0].obs.started_at)
    retry = tracking.progress_reported(reported, key, ok=False, known=True)
    assert decide(retry, job(), [RUNNING], None, at(12), POLICY)[1] == actions


def test_a_failed_end_report_is_sent_again_without_saving_twice() -> None:
    end = Observation("succeeded", finished_at=at(20))
    unreported = tracking.end_reported(state(Phase.FINISHING, end=end), end, ok=False, known=True)
    assert unreported.phase is Phase.UNREPORTED and tracking.holds_slot(unreported)
    again, actions = decide(unreported, job(), [DONE_POD], None, at(25), POLICY)
    assert again.phase is Phase.FINISHING and actions == [Finish(end, save=False)]
    ended = tracking.end_reported(again, end, ok=True, known=True)
    assert ended.phase is Phase.ENDED and not tracking.holds_slot(ended)


def test_a_job_without_a_record_is_deleted_then_forgotten() -> None:
    end = Observation("succeeded")
    orphan = tracking.end_reported(state(Phase.FINISHING, end=end), end, ok=True, known=False)
    assert orphan.phase is Phase.ORPHAN
    _, actions = decide(orphan, job(), [], None, at(1), POLICY)
    assert actions == [Delete("its job has no record")]
    purged = tracking.delete_done(orphan, ok=True)
    assert decide(purged, job(), [], None, at(2), POLICY)[1] == []  # the watch has not shown it gone yet
    assert decide(purged, job(deleted=True), [], None, at(3), POLICY)[1] == [Forget()]


def test_a_record_deleted_before_its_job_shows_deletes_the_job_when_it_does() -> None:
    forgotten = tracking.orphaned(tracking.submitted(JOB_ID, "alice/x/", None))
    assert decide(forgotten, None, [], None, at(1), POLICY)[1] == []
    assert kinds(decide(forgotten, job(), [], None, at(2), POLICY)[1]) == ["Delete"]


@pytest.mark.parametrize(
    ("end", "seen", "the_job", "actions"),
    [
        ("succeeded", True, job(("Complete", "CompletionsReached")), []),  # its TTL removes it
        ("succeeded", True, job(deleted=True), ["Forget"]),
        ("succeeded", True, None, ["Forget"]),  # gone, its tombstone too
        ("cancelled", False, job(), ["Delete"]),  # a create that outran its cancel
        ("cancelled", False, None, []),  # created: it may still show
    ],
)
def test_an_ended_job_waits_for_its_job_to_go(
    end: str, seen: bool, the_job: k.V1Job | None, actions: list[str]
) -> None:
    ended = dataclasses.replace(state(Phase.ENDED, end=Observation(end)), seen=seen)
    assert kinds(decide(ended, the_job, [], None, at(1), POLICY)[1]) == actions


# --- adoption at the first list -----------------------------------------------------------------------


BUILT = at(100)


@pytest.mark.parametrize(
    ("before", "the_job", "pods", "phase", "actions"),
    [
        (JobState(JOB_ID, Phase.ADOPTING, prefix="p/"), job(), [RUNNING], Phase.TRACKING, []),
        (JobState(JOB_ID, Phase.ADOPTING, prefix="p/"), None, [], Phase.FINISHING, [ConcludeLost()]),
        (
            JobState(JOB_ID, Phase.UNKNOWN),
            job(("Complete", "CompletionsReached")),
            [DONE_POD],
            Phase.ENDED,
            [],
        ),
        (JobState(JOB_ID, Phase.UNKNOWN), job(), [RUNNING], Phase.ORPHAN, []),  # 100 s older than the runner
        (JobState(JOB_ID, Phase.UNKNOWN), job(), [RUNNING], Phase.TRACKING, []),  # young: another replica's
    ],
    ids=["adopted", "lost", "ended-unknown", "orphan", "young"],
)
def test_adoption(
    before: JobState,
    the_job: k.V1Job | None,
    pods: list[k.V1Pod],
    phase: Phase,
    actions: list[tracking.Action],
    request: pytest.FixtureRequest,
) -> None:
    built = at(5) if request.node.callspec.id == "young" else BUILT
    after, todo = adoption.adopt(before, the_job, pods, built_at=built, margin=POLICY.orphan_margin)
    assert after.phase is phase and todo == actions
    if phase is Phase.TRACKING:  # the DB's view may be stale: reported once
        assert kinds(decide(after, the_job, pods, None, at(200), POLICY)[1]) == ["Report"]
    if phase is Phase.ORPHAN:
        assert kinds(decide(after, the_job, pods, None, at(200), POLICY)[1]) == ["Delete"]


class Stored:
    def __init__(self, *keys: str) -> None:
        self.keys = set(keys)

    def stat(self, key: str) -> object | None:
        return object() if key in self.keys else None


def test_a_lost_job_succeeded_if_it_stored_its_result() -> None:
    lost = JobState(JOB_ID, Phase.FINISHING, prefix="alice/x/")
    assert adoption.lost_end(lost, Stored("alice/x/result.json"), at(1)).status == "succeeded"  # type: ignore[arg-type]
    failed = adoption.lost_end(lost, Stored(), at(1))  # type: ignore[arg-type]
    assert failed.status == "failed" and "no longer exists" in failed.error


def test_slots() -> None:
    assert [
        tracking.holds_slot(s)
        for s in (
            state(Phase.EXPECTED),
            state(),
            state(Phase.CANCELLING),
            state(Phase.FINISHING),
            state(Phase.ENDED),
            dataclasses.replace(state(), gone=True),
            JobState(JOB_ID, Phase.ADOPTING),
            JobState(JOB_ID, Phase.ORPHAN),
            tracking.orphaned(state()),
        )
    ] == [True, True, True, True, False, False, False, False, True]


# --- the sweep loop -------------------------------------------------------------------------------


def test_the_sweep_goes_on_after_an_error(caplog: pytest.LogCaptureFixture) -> None:
    swept: list[str] = []

    def one(job_id: str) -> None:
        swept.append(job_id)
        if job_id == "bad":
            raise RuntimeError("a bug")

    async def scenario() -> None:
        task = asyncio.create_task(sweep.sweep(lambda: ["bad", "good"], one, every=0.001, cap=0.01))
        while swept.count("good") < 3:
            await asyncio.sleep(0.001)
        task.cancel()

    asyncio.run(asyncio.wait_for(scenario(), 10))
    assert any("sweep failed for job bad" in r.getMessage() for r in caplog.records)


# --- the shell: adoption sees what the first list holds ------------------------------------------------


class Listed:
    """A reflector whose first list holds `objs` (their events not handled yet)."""

    def __init__(self, *objs: Any) -> None:
        self.objs = list(objs)
        self.synced = threading.Event()
        self.synced.set()

    def live(self) -> list[Any]:
        return self.objs

    def get(self, name: str) -> Any:
        return next((o for o in self.objs if o.metadata.name == name), None)

    def select(self, label: str, value: str) -> list[Any]:
        return [o for o in self.objs if (o.metadata.labels or {}).get(label) == value]


def test_adoption_classifies_every_listed_job_even_before_its_event_is_handled(tmp_path: Path) -> None:
    """Both watches have listed; the Job's ADDED event is still queued on the loop: adoption must
    not take it for one that appeared later (another replica's) and leave an orphan running."""
    deleted: list[str] = []

    async def scenario() -> None:
        runner = KubernetesRunner(Settings(data_dir=tmp_path, runner="kubernetes"), Recorder(), None)  # type: ignore[arg-type]
        runner.cluster.delete_job = lambda job_id: deleted.append(job_id) or True  # type: ignore[method-assign]
        runner.watches.reflectors = {"jobs": Listed(job()), "pods": Listed(RUNNING)}  # type: ignore[dict-item]
        runner._adopt()
        assert runner.states[JOB_ID].phase is Phase.ORPHAN  # created in 2026-01-01, long before the runner
        await asyncio.gather(*runner._tasks)

    asyncio.run(asyncio.wait_for(scenario(), 10))
    assert deleted == [JOB_ID]


# --- render arrays: each task through its pods' index and the Job's interval strings ---------------------


def array_job(completions: int, *conditions: tuple[str, str], tasks: str | None = None,
              **status: Any) -> k.V1Job:
    made = job(*conditions, **status)
    made.spec.completions = completions
    if tasks is not None:
        made.metadata.annotations["fractal-scheduler/tasks"] = tasks
    return made


def task_pod(index: int, state: dict[str, Any], phase: str, name: str) -> k.V1Pod:
    made = pod(state, phase=phase, name=name)
    made.metadata.labels["batch.kubernetes.io/job-completion-index"] = str(index)
    return made


ENDED_OK = {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": ts(10), "finishedAt": ts(30)}}
CRASHED = {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": ts(10), "finishedAt": ts(20),
                          "message": "error: task crashed\n"}}
UP = {"running": {"startedAt": ts(25)}}


@pytest.mark.parametrize(
    ("made", "pods", "want"),
    [
        # nothing started yet: no task to report
        (array_job(3), [], {}),
        # task 0 runs, task 1 succeeded (completedIndexes), task 2 waits for its pod
        (array_job(3, completedIndexes="1"),
         [task_pod(0, UP, "Running", "a"), task_pod(1, ENDED_OK, "Succeeded", "b")],
         {0: ("running", None, 1), 1: ("succeeded", None, 1)}),
        # task 1 failed once and runs again (a new pod, the same index): its second attempt
        (array_job(3), [task_pod(1, CRASHED, "Failed", "a"), task_pod(1, UP, "Running", "b")],
         {1: ("running", None, 2)}),
        # its backoff spent, task 1 is in failedIndexes: failed, with its pod's last line
        (array_job(3, completedIndexes="0,2", failedIndexes="1"),
         [task_pod(1, CRASHED, "Failed", "a"), task_pod(1, CRASHED, "Failed", "b")],
         {0: ("succeeded", None, 1), 1: ("failed", "error: task crashed (exit code 1)", 2),
          2: ("succeeded", None, 1)}),
        # a retry's Job runs tasks 4 and 7: its index 1 is task 7
        (array_job(2, tasks="4,7", completedIndexes="0"),
         [task_pod(1, UP, "Running", "a")],
         {4: ("succeeded", None, 1), 7: ("running", None, 1)}),
    ],
)
def test_each_task_is_read_from_its_pods_index_and_the_jobs_intervals(
    made: k.V1Job, pods: list[k.V1Pod], want: dict[int, tuple[str, str | None, int]]
) -> None:
    seen = kube_tasks.observe_tasks(made, pods)
    assert {i: (o.status, o.error, o.attempts) for i, o in seen.items()} == want


def test_an_arrays_tasks_are_reported_once_each_before_the_job() -> None:
    state = JobState(JOB_ID, Phase.TRACKING, uid=UID, prefix="p/")
    running = [task_pod(0, UP, "Running", "a"), task_pod(1, UP, "Running", "b")]
    state, actions = decide(state, array_job(2), running, None, T0, POLICY)
    assert [(a.task, a.obs.status) for a in actions if isinstance(a, tracking.ReportTask)] == [
        (0, "running"), (1, "running")]
    assert isinstance(actions[-1], Report) and actions[-1].obs.status == "running"
    state, actions = decide(state, array_job(2), running, None, T0, POLICY)
    assert actions == []  # nothing moved
    failed = array_job(2, ("FailureTarget", "FailedIndexes"), ("Failed", "FailedIndexes"),
                       completedIndexes="0", failedIndexes="1")
    ended = [task_pod(0, ENDED_OK, "Succeeded", "a"), task_pod(1, CRASHED, "Failed", "b")]
    state, actions = decide(state, failed, ended, None, T0, POLICY)
    assert [(a.task, a.obs.status) for a in actions[:2]] == [(0, "succeeded"), (1, "failed")]
    assert isinstance(actions[2], Finish) and actions[2].obs.status == "failed"
    assert actions[2].obs.error is None  # the tracker sums the tasks' errors up
