"""Pure: a Job and its Pods (as the watches last saw them) -> the job's status.

The Job's terminal conditions decide the end (Complete / Failed); pods only tell whether it
has started and why it has not.
https://kubernetes.io/docs/concepts/workloads/controllers/job/#terminal-job-conditions
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from kubernetes import client as k

from scheduler.runners.base import RunnerStatus
from scheduler.runners.kubernetes import reasons, tasks
from scheduler.statuses import FINISHED


@dataclass(frozen=True)
class Observation:
    status: RunnerStatus
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    message: str | None = None

    @property
    def done(self) -> bool:
        return self.status in FINISHED


def _started(pods: Sequence[k.V1Pod]) -> datetime | None:
    times = []
    for pod in pods:
        for cs in (pod.status and pod.status.container_statuses) or []:
            state = cs.state
            if state and state.running and state.running.started_at:
                times.append(state.running.started_at)
            elif state and state.terminated and state.terminated.started_at:
                times.append(state.terminated.started_at)
    return min(times) if times else None


def _newest(pods: Sequence[k.V1Pod]) -> k.V1Pod | None:
    return max(pods, key=reasons.created, default=None)


def observe(job: k.V1Job, pods: Sequence[k.V1Pod], no_pod: str | None = None) -> Observation:
    """What the job is doing now. `no_pod`: why no pod could be created, when that is known
    (the Job's FailedCreate event); it explains a pending job that has no pod."""
    started = _started(pods)
    complete = reasons.job_condition(job, "Complete")
    if complete is not None:
        finished = (job.status.completion_time if job.status else None) or complete.last_transition_time
        return Observation("succeeded", started_at=started, finished_at=finished)
    failed = reasons.job_condition(job, "Failed")
    if failed is not None:
        # An array whose tasks failed for good: each task's report says why, the job's error
        # sums them up; any other end (exit 2, the deadline) is the whole job's.
        summed = failed.reason == "FailedIndexes" and tasks.is_array(job)
        return Observation(
            "failed",
            started_at=started,
            finished_at=failed.last_transition_time,
            error=None if summed else reasons.job_error(job, pods),
        )
    live = [p for p in pods if not (p.metadata and p.metadata.deletion_timestamp)]
    newest = _newest(live)
    if started is not None or (
        newest is not None and newest.status and newest.status.phase in ("Running", "Succeeded", "Failed")
    ):
        # Ended pods on a Job without a terminal condition: the controller is about to mark
        # it, or a retry is coming. Once started, a job never goes back to pending.
        return Observation("running", started_at=started)
    return Observation("pending", started_at=started, message=reasons.pending_message(newest, no_pod))


def newest_started(pods: Sequence[k.V1Pod]) -> k.V1Pod | None:
    """The newest pod whose container has started (its log can be read)."""
    started = [
        p for p in pods
        if any(cs.state and (cs.state.running or cs.state.terminated)
               for cs in (p.status and p.status.container_statuses) or [])
    ]
    return _newest(started)
