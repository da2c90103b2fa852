"""The runner interface: how the scheduler starts, tracks and stops jobs, whatever runs them.

A runner never touches the database. It reports what it sees through the `report` callback
it was built with; the scheduler's status tracker writes that to the DB. Routes only talk to
the runner through the job operations (`scheduler/jobs.py`), so a new runner needs no route changes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from job_image.params import FractalParams
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

    @property
    def placement(self) -> DeviceClass:
        return "gpu" if self.params.device == "gpu" else "cpu"

    def env(self, settings: Settings, *, opencl_cache_dir: str) -> dict[str, str]:
        """The job contract's variables that every runner sets the same way: the job's own and
        the limits it checks again. Storage variables are the runner's to pass (the local
        runner from settings, a pod through envFrom)."""
        return {
            "JOB_ID": self.job_id,
            "FRACTAL_PARAMS": self.params.model_dump_json(),
            "RESULT_PREFIX": self.result_prefix,
            "MAX_PIXELS": str(settings.max_pixels),
            "MAX_ITER": str(settings.max_iter),
            "MAX_COORDINATE_DIGITS": str(settings.max_coordinate_digits),
            "MAX_ZOOM": str(settings.max_zoom),
            "OPENCL_CACHE_DIR": opencl_cache_dir,  # compiled kernels: a warm build is 16x faster
        }


@dataclass(frozen=True)
class StatusReport:
    """One observed change of a job. Fields left None are unchanged."""

    job_id: str
    status: RunnerStatus
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None  # a human sentence: the job's last stderr line, OOMKilled, ...
    message: str | None = None  # why it is waiting (pending), shown in the job document
    progress: float | None = None  # 0..1 where the runner can tell


Report = Callable[[StatusReport], Awaitable[bool | None]]  # False: the DB has no record of that job


class RunnerUnavailable(Exception):
    """The runner cannot take a job right now (e.g. API server down); the job stays queued."""


class Runner(Protocol):
    name: str

    async def start(self, active: list[JobSpec]) -> None:
        """Begin tracking. `active` are the jobs the DB believes were pending or running when
        the service last stopped: re-adopt them, or report them failed with a reason."""

    async def stop(self) -> None:
        """Stop tracking (service shutdown). Running jobs are left alone where possible."""

    def snapshot(self, in_use: Mapping[DeviceClass, int]) -> Snapshot:
        """What each device class may still take now. `in_use`: the admitted (pending or
        running) jobs per class the database knows, of every replica. The dispatcher admits
        only what fits; the rest stays queued with the snapshot's reason."""

    async def submit(self, job: JobSpec) -> None:
        """Start the job; raises RunnerUnavailable to keep it queued and retry later."""

    async def cancel(self, job_id: str) -> None:
        """Stop the job and remove its process/Job. Unknown ids are not an error."""

    async def logs(self, job_id: str) -> str | None:
        """The job's output while the runner still has it, else None (then storage is asked)."""

    async def check(self) -> None:
        """Raise with a sentence when the runner cannot work (for /readyz)."""

    def forget(self, job_id: str) -> None:
        """The job's record was deleted: report and save nothing more for it; remove what is left."""
