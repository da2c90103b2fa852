"""The runner interface: how the scheduler starts, tracks and stops jobs, whatever runs them.

A runner never touches the database. It reports what it sees through the `report` callback
it was built with; the scheduler's status tracker writes that to the DB. Routes only talk to
the runner through the job operations (`scheduler/jobs.py`), so a new runner needs no route changes.

Tasks (docs/design.md, "Render arrays"). Every job is an array of `JobSpec.total` tasks,
indexes 0..total-1 (a plain render: one task, index 0). Admission admits tasks, not jobs:
- `submit(spec)` starts the tasks `spec.tasks` (indexes, ascending; always the lowest indexes
  still waiting, so they are the ones an Indexed Job's controller would start next). A job the
  runner already runs gets more tasks this way (Kubernetes: one Indexed Job per job, its
  `parallelism` raised by len(spec.tasks)). A job whose earlier run ended (`POST .../retry`
  after it failed) gets its failed tasks again: start those anew; succeeded tasks' parts stay.
- Every task gets the same environment (`JobSpec.env`: `RENDER_ARRAY` describes the array) plus
  its index as `JOB_COMPLETION_INDEX`; task i writes `parts/<i>.png` and `parts/<i>.json`
  (a one-task job: `image.png` and `result.json`).
- A task that fails is retried by the runner, in its slot, up to `JOB_BACKOFF_LIMIT` times
  (Kubernetes: `backoffLimitPerIndex`); exit code 2 (invalid parameters) is never retried and
  fails the whole job at once (Kubernetes: the podFailurePolicy's FailJob).
- Reports: `StatusReport(job_id, status, task=i)` is task i's change (running, progress, its
  end; `attempts` = tries so far); `task=None` concerns the whole job: `cancelled`, `failed`
  (e.g. exit 2, a lost Job), or `queued` (give every unfinished task back to the queue). The
  tracker folds task reports into the job: `running` once a task runs, `succeeded` when all
  tasks have, `failed` when all have ended and one failed for good.
- `cancel(job_id)` stops every task of the job; `forget(job_id)` after a DELETE.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from job_image.params import FractalParams
from job_image.tasks import RenderArray
from scheduler.admission.capacity import Snapshot
from scheduler.admission.throughput import DeviceClass
from scheduler.core.config import Settings
from scheduler.statuses import JobStatus

# "queued" from a runner means: give the job back to the dispatcher (e.g. the local runner after a
# service restart killed its process); the tracker re-queues it, up to a bounded number of attempts.
RunnerStatus = JobStatus


@dataclass(frozen=True)
class JobSpec:
    """Everything a runner needs to start one job."""

    job_id: str  # 32 lowercase hex chars
    owner: str
    params: FractalParams  # `device` is the class it was admitted to (never `auto` once admitted)
    result_prefix: str  # e.g. "alice/<job_id>/"
    array: RenderArray | None = None  # None: one task, the whole frame
    tasks: tuple[int, ...] = (0,)  # the task indexes to start now (ascending)

    @property
    def total(self) -> int:
        """The job's number of tasks (an Indexed Job's `completions`)."""
        return self.array.tasks if self.array else 1

    @property
    def placement(self) -> DeviceClass:
        return "gpu" if self.params.device == "gpu" else "cpu"

    def env(self, settings: Settings, *, opencl_cache_dir: str) -> dict[str, str]:
        """The job contract's variables that every runner sets the same way: the job's own and
        the limits it checks again. Storage variables are the runner's to pass (the local
        runner from settings, a pod through envFrom)."""
        env = {
            "JOB_ID": self.job_id,
            "FRACTAL_PARAMS": self.params.model_dump_json(),
            "RESULT_PREFIX": self.result_prefix,
            "MAX_PIXELS": str(settings.max_pixels),
            "MAX_ITER": str(settings.max_iter),
            "MAX_COORDINATE_DIGITS": str(settings.max_coordinate_digits),
            "MAX_ZOOM": str(settings.max_zoom),
            "OPENCL_CACHE_DIR": opencl_cache_dir,  # compiled kernels: a warm build is 16x faster
        }
        if self.array is not None:  # each task adds its JOB_COMPLETION_INDEX
            env["RENDER_ARRAY"] = self.array.model_dump_json(exclude_defaults=True)
        return env


@dataclass(frozen=True)
class StatusReport:
    """One observed change of a job, or of one of its tasks. Fields left None are unchanged."""

    job_id: str
    status: RunnerStatus
    task: int | None = None  # the task's index; None: the whole job (see the module doc)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None  # a human sentence: the job's last stderr line, OOMKilled, ...
    message: str | None = None  # why it is waiting (pending), shown in the job document
    progress: float | None = None  # 0..1 where the runner can tell
    attempts: int | None = None  # a task's tries so far (1 = its first), where the runner counts them


Report = Callable[[StatusReport], Awaitable[bool | None]]  # False: the DB has no record of that job


class RunnerUnavailable(Exception):
    """The runner cannot take a job right now (e.g. API server down); the job stays queued."""


class RunnerView(Protocol):
    """What a runner holds, captured on the event loop (`Runner.view`) and immutable: the
    dispatcher's worker thread reads it while the loop goes on changing the runner's own state."""

    def snapshot(self, in_use: Mapping[DeviceClass, int]) -> Snapshot:
        """What each device class may still take now, in tasks. `in_use`: the admitted (pending
        or running) tasks per class the database knows, of every replica. The dispatcher admits
        only what fits; the rest stays queued with the snapshot's reason."""


class Runner(Protocol):
    name: str
    # True: its jobs are processes of the replica that started them, theirs alone to re-queue,
    # fail or clean up (scheduler/replicas.py); False: every replica follows every job
    per_replica: bool

    async def start(self, active: list[JobSpec]) -> None:
        """Begin tracking. `active` are the jobs the DB believes were pending or running when
        the service last stopped: re-adopt them, or report them failed with a reason."""

    async def stop(self) -> None:
        """Stop tracking (service shutdown). Running jobs are left alone where possible."""

    def view(self) -> RunnerView:
        """The runner's state as an immutable snapshot; called on the event loop only."""

    def live(self) -> Collection[str] | None:
        """The jobs this runner follows now (its processes or Jobs, and ends not yet reported),
        or None while it cannot tell (the Kubernetes runner before its first lists). The
        reconciler ends an active record that no runner follows (scheduler/reconciler.py)."""

    async def submit(self, job: JobSpec) -> None:
        """Start the tasks `job.tasks` of the job (more tasks of a job already started are
        added to it); raises RunnerUnavailable to keep them queued and retry later."""

    async def cancel(self, job_id: str) -> None:
        """Stop every task of the job and remove its processes/Job. Unknown ids are not an error."""

    async def logs(self, job_id: str) -> str | None:
        """The job's output while the runner still has it, else None (then storage is asked)."""

    async def check(self) -> None:
        """Raise with a sentence when the runner cannot work (for /readyz)."""

    def forget(self, job_id: str) -> None:
        """The job's record was deleted: report and save nothing more for it; remove what is left."""
