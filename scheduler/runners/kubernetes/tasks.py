"""Pure: a render array's tasks as its Indexed Job and pods show them.

A Job runs the tasks of its `fractal-scheduler/tasks` annotation in order, its index k the k-th
of them (a retry's Job runs only the tasks with no part stored; its pods read the same list from
TASK_INDEXES); without the annotation, index k is task k. A task has succeeded once its index is
in the Job's `completedIndexes`, has failed for good once in `failedIndexes` (backoffLimitPerIndex
spent), and runs while a pod of its index runs.
https://kubernetes.io/docs/concepts/workloads/controllers/job/#completion-mode
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from kubernetes import client as k

from job_image.indexes import parse
from scheduler.runners.base import RunnerStatus
from scheduler.runners.kubernetes import reasons
from scheduler.runners.kubernetes.objects import TASKS_ANNOTATION

INDEX_KEY = "batch.kubernetes.io/job-completion-index"  # a pod's label (1.28+) and annotation


@dataclass(frozen=True)
class TaskObservation:
    status: RunnerStatus  # running | succeeded | failed
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    attempts: int = 1  # its pods so far

    @property
    def key(self) -> tuple[object, ...]:
        return self.status, self.started_at, self.attempts


def pod_index(pod: k.V1Pod) -> int | None:
    """The Job index a pod runs: its label, else its annotation."""
    meta = pod.metadata
    raw = (meta.labels or {}).get(INDEX_KEY) or (meta.annotations or {}).get(INDEX_KEY) or ""
    return int(raw) if raw.isdigit() else None


def job_tasks(job: k.V1Job) -> tuple[int, ...]:
    """The tasks the Job runs, its index k the k-th."""
    listed = (job.metadata.annotations or {}).get(TASKS_ANNOTATION)
    return parse(listed) if listed else tuple(range((job.spec and job.spec.completions) or 1))


def is_array(job: k.V1Job) -> bool:
    """A render array's Job (its tasks are reported one by one), not a single frame's."""
    completions = (job.spec and job.spec.completions) or 1
    return completions > 1 or TASKS_ANNOTATION in (job.metadata.annotations or {})


def ended(job: k.V1Job) -> int:
    """How many of the Job's indexes have ended (succeeded, or failed for good)."""
    status = job.status
    return len(parse(status and status.completed_indexes)) + len(parse(status and status.failed_indexes))


def _started(pod: k.V1Pod) -> datetime | None:
    for cs in (pod.status and pod.status.container_statuses) or []:
        state = cs.state
        if state and state.running and state.running.started_at:
            return state.running.started_at
        if state and state.terminated and state.terminated.started_at:
            return state.terminated.started_at
    return None


def observe_tasks(job: k.V1Job, pods: Sequence[k.V1Pod]) -> dict[int, TaskObservation]:
    """Each task that has started or ended, by task index (tasks still waiting are left out)."""
    tasks = job_tasks(job)
    status = job.status
    done = set(parse(status and status.completed_indexes))
    failed = set(parse(status and status.failed_indexes))
    by_index: dict[int, list[k.V1Pod]] = defaultdict(list)
    for pod in pods:
        index = pod_index(pod)
        if index is not None and index < len(tasks):
            by_index[index].append(pod)
    out = {}
    for index in sorted(set(by_index) | (done | failed) & set(range(len(tasks)))):
        own = sorted(by_index.get(index, []), key=reasons.created)
        starts = [t for t in map(_started, own) if t is not None]
        first = min(starts, default=None)
        attempts = max(1, len(own))
        if index in done or index in failed:
            ends = [s.finished_at for p in own if (s := reasons.terminated(p)) and s.finished_at]
            error = None
            if index in failed:
                error = next((e for p in reversed(own) if (e := reasons.pod_error(p))), "The task failed.")
            out[tasks[index]] = TaskObservation("succeeded" if index in done else "failed", first,
                                                max(ends, default=None), error, attempts)
        elif any(_started(p) and reasons.terminated(p) is None and not p.metadata.deletion_timestamp
                 for p in own):
            out[tasks[index]] = TaskObservation("running", first, attempts=attempts)
    return out
