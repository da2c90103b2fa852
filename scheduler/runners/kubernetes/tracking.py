"""Pure: one job's tracking state, and what to do next (kopf's handlers, kubespawner's spirit).

`decide(state, job, pods, events, now, policy) -> (new_state, actions)` is the whole per-job
logic: given what the watches show (the reflector's cache), it says which state the job is in
now and which actions the runner shell must carry out (report, finish, read events, delete,
forget). The shell's own steps (a submit, a cancel, a report's outcome) are pure transitions
here too, so every guard lives in one place and the tests drive it with canned objects. A render
array's tasks are reported one by one as they move (tasks.py reads them), before its whole Job.

States (`Phase`):
    ADOPTING    the DB listed it active at start; waits for the watches' first list
    UNKNOWN     its Job was in the first list but the DB did not list it: classified at sync
    EXPECTED    this runner created its Job (a slot is held); the watch has not shown it yet
    TRACKING    following its Job, reporting changes
    CANCELLING  a cancel's delete is in flight: what the watch shows does not end it
    FINISHING   its end is decided: artifacts being saved and the end reported
    UNREPORTED  its end's report failed: the sweep sends it again
    ENDED       the end is reported; kept until its Job is gone (a cancelled one's Job is deleted)
    ORPHAN      no DB record: delete its Job; report and save nothing
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

from kubernetes import client as k

from scheduler.runners.kubernetes import objects, reasons, tasks
from scheduler.runners.kubernetes.status import Observation, observe
from scheduler.runners.kubernetes.tasks import TaskObservation


class Phase(Enum):
    ADOPTING = "adopting"
    UNKNOWN = "unknown"
    EXPECTED = "expected"
    TRACKING = "tracking"
    CANCELLING = "cancelling"
    FINISHING = "finishing"
    UNREPORTED = "unreported"
    ENDED = "ended"
    ORPHAN = "orphan"


# Phases whose job holds a slot whether or not its Job has been seen.
CLAIMED = {Phase.EXPECTED, Phase.TRACKING, Phase.CANCELLING, Phase.FINISHING, Phase.UNREPORTED}


@dataclass(frozen=True)
class JobState:
    job_id: str
    phase: Phase
    prefix: str | None = None  # where its artifacts go (from the DB, else the Job's annotation)
    uid: str | None = None  # the Job followed; another incarnation with the same name is not it
    seen: bool = False  # its Job has been in the cache
    gone: bool = False  # ... and has been deleted since
    reported: tuple[object, ...] | None = None  # the last progress report: (status, message, started)
    end: Observation | None = None  # FINISHING / UNREPORTED / ENDED: the end
    resume: Phase | None = None  # CANCELLING: the phase to go back to if the delete fails
    no_pod: str | None = None  # why the Job controller cannot create its pod (FailedCreate)
    events_read: bool = False  # its events were read once while it had no pod
    waited: bool = False  # it has waited for room others hold (see _pending)
    room_at: datetime | None = None  # ... and was first seen with room again then
    purged: bool = False  # a delete of its Job went through
    parallelism: int = 1  # its Job's tasks at once: those admitted so far
    completions: int = 1  # the tasks its Job runs
    finished: int = 0  # ... that have ended
    tasks_reported: Mapping[int, tuple[object, ...]] = field(default_factory=dict)  # an array's, by task


@dataclass(frozen=True)
class Policy:
    """The settings decide needs."""

    pending_deadline: float  # seconds a Job may stay pending
    capacity_deadline: float  # ... when it only waits for room others hold (quota, resources)
    events_after: float  # a Job still without a pod this long gets its events read
    orphan_margin: float  # an unknown Job older than the runner by this much is an orphan


# --- actions: values the shell carries out -----------------------------------------------------


@dataclass(frozen=True)
class Report:
    """Report progress (pending / running)."""

    obs: Observation


@dataclass(frozen=True)
class ReportTask:
    """Report one task of a render array (it runs, or has ended)."""

    task: int
    obs: TaskObservation


@dataclass(frozen=True)
class Finish:
    """Save the artifacts (when `save`), then report the end. `recompute`: the end was read
    from the watches; read it again once the pods' final states are in."""

    obs: Observation
    save: bool = True
    recompute: bool = False


@dataclass(frozen=True)
class ReadEvents:
    """Read the Job's events (why no pod can be created) and decide again with them."""


@dataclass(frozen=True)
class Delete:
    """Delete the Job (Background propagation)."""

    why: str


@dataclass(frozen=True)
class ConcludeLost:
    """Adoption: its Job is gone; a stored result.json says whether it had succeeded."""


@dataclass(frozen=True)
class Forget:
    """Nothing more will happen: drop the state."""


Action = Report | ReportTask | Finish | ReadEvents | Delete | ConcludeLost | Forget
Decision = tuple[JobState, list[Action]]


def _deleted(obj: k.V1Job | k.V1Pod) -> bool:
    return obj.metadata.deletion_timestamp is not None


def holds_slot(state: JobState) -> bool:
    """Counts against KUBE_MAX_ACTIVE_JOBS: a created Job counts before the watch shows it."""
    if state.gone or state.phase is Phase.ENDED:
        return False
    return state.phase in CLAIMED or state.seen


def slots_held(state: JobState) -> int:
    """The tasks it holds against KUBE_MAX_ACTIVE_JOBS: its Job's parallelism while it has
    that many tasks left (the Job controller starts the next task in a slot a task leaves),
    and at least one until its end is reported."""
    if not holds_slot(state):
        return 0
    return max(1, min(state.parallelism, state.completions - state.finished))


def see(state: JobState, job: k.V1Job | None) -> tuple[JobState, k.V1Job | None]:
    """Fold the cached Job into the state; None when it is not this state's Job."""
    if job is None or (state.uid and job.metadata.uid != state.uid):
        # Seen before and no longer there (nor its tombstone): it is gone.
        return (dataclasses.replace(state, gone=True) if state.seen else state), None
    annotation = (job.metadata.annotations or {}).get(objects.RESULT_PREFIX_ANNOTATION)
    spec = job.spec
    return dataclasses.replace(
        state,
        uid=job.metadata.uid,
        seen=True,
        gone=state.gone or _deleted(job),
        prefix=state.prefix or annotation,
        # ours may be ahead of the cache: a raise the watch has not shown yet
        parallelism=max(state.parallelism, (spec and spec.parallelism) or 0),
        completions=(spec and spec.completions) or state.completions,
        finished=tasks.ended(job),
    ), job


def decide(
    state: JobState,
    job: k.V1Job | None,
    pods: Sequence[k.V1Pod],
    events: Sequence[k.CoreV1Event] | None,
    now: datetime,
    policy: Policy,
) -> Decision:
    """The next state and actions, from the job's Job and pods as last seen, and its events when
    they were just read (None otherwise)."""
    state, job = see(state, job)
    if events is not None:
        state = dataclasses.replace(state, no_pod=reasons.failed_create(events) or state.no_pod)
    phase = state.phase
    if phase is Phase.EXPECTED and job is not None:
        state, phase = dataclasses.replace(state, phase=Phase.TRACKING), Phase.TRACKING
    if phase is Phase.TRACKING and (job is not None or state.gone):
        return _track(state, job, pods, events, now, policy)
    if phase is Phase.UNREPORTED and state.end is not None:
        return dataclasses.replace(state, phase=Phase.FINISHING), [Finish(state.end, save=False)]
    if phase is Phase.ORPHAN:
        if state.gone:
            return state, [Forget()]
        return state, [Delete("its job has no record")] if job is not None and not state.purged else []
    if phase is Phase.ENDED:
        if state.gone or (not state.seen and state.uid is None):  # no Job will show
            return state, [Forget()]
        cancelled = state.end is not None and state.end.status == "cancelled"
        if cancelled and job is not None and not state.purged:  # a create that outran its cancel
            return state, [Delete("it was cancelled")]
    return state, []


def _track(
    state: JobState,
    job: k.V1Job | None,
    pods: Sequence[k.V1Pod],
    events: Sequence[k.CoreV1Event] | None,
    now: datetime,
    policy: Policy,
) -> Decision:
    """A render array's tasks that moved, then the whole job."""
    state, reports = _task_reports(state, job, pods)
    state, actions = _track_job(state, job, pods, events, now, policy)
    return state, [*reports, *actions]


def _task_reports(state: JobState, job: k.V1Job | None, pods: Sequence[k.V1Pod]) -> Decision:
    """A render array's tasks whose state changed since they were last reported (a single
    frame's Job is reported as the whole job)."""
    if job is None or not tasks.is_array(job):
        return state, []
    seen = tasks.observe_tasks(job, pods)
    moved = {i: obs for i, obs in seen.items() if state.tasks_reported.get(i) != obs.key}
    if not moved:
        return state, []
    reported = {**state.tasks_reported, **{i: obs.key for i, obs in moved.items()}}
    actions: list[Action] = [ReportTask(i, obs) for i, obs in sorted(moved.items())]
    return dataclasses.replace(state, tasks_reported=reported), actions


def _track_job(
    state: JobState,
    job: k.V1Job | None,
    pods: Sequence[k.V1Pod],
    events: Sequence[k.CoreV1Event] | None,
    now: datetime,
    policy: Policy,
) -> Decision:
    obs = observe(job, pods, state.no_pod) if job is not None else Observation("pending")
    if state.gone and not obs.done:
        obs = Observation(
            "failed", started_at=obs.started_at, finished_at=now,
            error=f"Its Kubernetes Job {objects.job_name(state.job_id)} was deleted before it finished.",
        )
    if obs.done:
        return _finishing(state, obs), [Finish(obs, recompute=True)]
    created = job.metadata.creation_timestamp if job is not None else None
    if obs.status == "pending" and created is not None:
        state, obs, actions = _pending(state, obs, created, pods, events, now, policy)
        if actions is not None:
            return state, actions
    key = (obs.status, obs.message, obs.started_at)
    if key == state.reported:
        return state, []
    return dataclasses.replace(state, reported=key), [Report(obs)]


def _pending(
    state: JobState,
    obs: Observation,
    created: datetime,
    pods: Sequence[k.V1Pod],
    events: Sequence[k.CoreV1Event] | None,
    now: datetime,
    policy: Policy,
) -> tuple[JobState, Observation, list[Action] | None]:
    """A job not started yet: read its events while it has no pod, and end it at its deadline.
    While it waits only for room others hold (a full quota, Insufficient GPUs) it says so, the
    pending deadline's clock stays at zero (it measures the cluster's own delays once there is
    room: image pull, scheduling), and only the much longer capacity deadline applies."""
    age = (now - created).total_seconds()
    live = [p for p in pods if not _deleted(p)]
    waiting = reasons.waits_for_capacity(max(live, key=reasons.created, default=None), state.no_pod)
    if waiting and (not state.waited or state.room_at is not None):
        state = dataclasses.replace(state, waited=True, room_at=None)
    elif not waiting and state.waited and state.room_at is None:
        state = dataclasses.replace(state, room_at=now)  # there is room now: the clock starts
    clock = (now - ((state.room_at or now) if state.waited else created)).total_seconds()
    first_look = age >= policy.events_after and not state.events_read
    if events is None and not live and (first_look or clock >= policy.pending_deadline):
        return dataclasses.replace(state, events_read=True), obs, [ReadEvents()]
    if waiting:
        if age < policy.capacity_deadline:
            message = f"waiting for room in the cluster: {obs.message}"
            return state, dataclasses.replace(obs, message=message), None
        deadline = policy.capacity_deadline
    elif clock >= policy.pending_deadline:
        deadline = policy.pending_deadline
    else:
        return state, obs, None
    error = f"The job did not start within {deadline:g} s: {obs.message}"
    failed = Observation("failed", finished_at=now, error=error)
    return _finishing(state, failed), failed, [Delete("its pending deadline passed"), Finish(failed)]


def _finishing(state: JobState, end: Observation) -> JobState:
    return dataclasses.replace(state, phase=Phase.FINISHING, end=end)


# --- the shell's own steps ---------------------------------------------------------------------


def submitted(
    job_id: str, prefix: str, uid: str | None, *, parallelism: int = 1, completions: int = 1
) -> JobState:
    """Its Job was created (or found to exist already): whatever was known before is stale."""
    return JobState(job_id, Phase.EXPECTED, prefix=prefix, uid=uid, parallelism=parallelism,
                    completions=completions)


def scaled(state: JobState, parallelism: int) -> JobState:
    """Its Job's parallelism was raised (more of its tasks admitted)."""
    return dataclasses.replace(state, parallelism=max(state.parallelism, parallelism))


def cancelling(state: JobState) -> JobState:
    return dataclasses.replace(state, phase=Phase.CANCELLING, resume=state.phase)


def cancel_refused(state: JobState) -> JobState:
    """The delete did not go through: the job goes on as it was."""
    if state.phase is not Phase.CANCELLING:
        return state
    return dataclasses.replace(state, phase=state.resume or Phase.TRACKING, resume=None)


def cancelled(state: JobState, *, purged: bool, now: datetime) -> Decision:
    """The delete went through (`purged`), or found no Job: the job ends as cancelled unless
    its end was already decided."""
    resume = state.resume if state.phase is Phase.CANCELLING else state.phase
    state = dataclasses.replace(state, purged=state.purged or purged, resume=None)
    if resume in (Phase.FINISHING, Phase.UNREPORTED, Phase.ENDED, Phase.ORPHAN):
        return dataclasses.replace(state, phase=resume), []
    end = Observation("cancelled", finished_at=now)
    return _finishing(state, end), [Finish(end, save=False)]


def task_reported(state: JobState, task: int, key: tuple[object, ...], *, ok: bool, known: bool) -> JobState:
    if not known:
        return orphaned(state)
    if not ok and state.tasks_reported.get(task) == key:  # the next event or sweep reports it again
        left = {i: v for i, v in state.tasks_reported.items() if i != task}
        return dataclasses.replace(state, tasks_reported=left)
    return state


def progress_reported(state: JobState, key: tuple[object, ...], *, ok: bool, known: bool) -> JobState:
    if not known:
        return orphaned(state)
    if not ok and state.reported == key:
        return dataclasses.replace(state, reported=None)  # the next event or sweep reports it again
    return state


def end_reported(state: JobState, end: Observation, *, ok: bool, known: bool) -> JobState:
    if state.phase is not Phase.FINISHING:  # forgotten meanwhile: that stands
        return state
    if not ok:
        return dataclasses.replace(state, phase=Phase.UNREPORTED, end=end)
    return orphaned(state) if not known else dataclasses.replace(state, phase=Phase.ENDED, end=end)


def orphaned(state: JobState) -> JobState:
    """Its DB record is gone: nothing more is reported or saved; its Job is deleted."""
    return dataclasses.replace(state, phase=Phase.ORPHAN)


def delete_done(state: JobState, *, ok: bool) -> JobState:
    return dataclasses.replace(state, purged=state.purged or ok)


def is_orphan_age(created: datetime | None, built_at: datetime, margin: float) -> bool:
    return created is not None and built_at - created > timedelta(seconds=margin)
