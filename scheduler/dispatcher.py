"""The dispatcher: hands queued jobs to the runner, oldest first, while it has capacity.

A job is marked `pending` before the runner sees it, so a status report racing the submit
never finds it still `queued`. When the runner refuses (RunnerUnavailable, e.g. the API server
is down) the job goes back to `queued` with the reason and the dispatcher retries with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import Engine
from sqlmodel import Session

from job_image.backoff import Backoff
from job_image.params import FractalParams
from scheduler import crud, job_status
from scheduler.models import Job
from scheduler.runners.base import JobSpec, Runner, RunnerUnavailable, StatusReport
from scheduler.tracker import Tracker

log = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 0.5
IDLE_RECHECK_SECONDS = 5.0  # jobs queued through another replica are seen within this


def job_spec(job: Job) -> JobSpec:
    return JobSpec(
        job_id=job.id,
        owner=job.owner,
        params=FractalParams.model_validate(job.params),
        result_prefix=job.result_prefix,
    )


class Dispatcher:
    def __init__(self, engine: Engine, runner: Runner, tracker: Tracker, *, retry_max_seconds: float) -> None:
        self.engine, self.runner, self.tracker = engine, runner, tracker
        self.retry_max_seconds = retry_max_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Something changed (a job was queued or a slot freed): look at the queue again."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="dispatcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        backoff = Backoff(FIRST_RETRY_SECONDS, self.retry_max_seconds)
        while True:
            self._wake.clear()
            try:
                await self.dispatch()
                backoff.reset()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_RECHECK_SECONDS)
            except RunnerUnavailable:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), backoff.next())
            except Exception:  # a bug here must not stop every future job
                log.exception("dispatcher failed; retrying")
                await asyncio.sleep(backoff.next())

    async def dispatch(self) -> None:
        """Submit queued jobs while the runner has room; raises RunnerUnavailable to back off."""
        while self.runner.capacity() > 0:
            with Session(self.engine, expire_on_commit=False) as session:
                job = job_status.claim_next(session)
            if job is None:
                return
            self.tracker.notify(job.id)
            await self._submit(job)

    async def _submit(self, job: Job) -> None:
        try:
            await self.runner.submit(job_spec(job))
        except RunnerUnavailable as exc:
            log.warning("runner refused job %s: %s", job.id, exc)
            await self._requeue(job, str(exc))
            raise
        except Exception as exc:
            log.exception("could not start job %s", job.id)
            await self.tracker.report(
                StatusReport(job.id, "failed", error=f"the job could not be started: {exc}")
            )
            return
        with Session(self.engine) as session:
            deleted = not crud.job_exists(session, job_id=job.id)
        if deleted:  # DELETE arrived while it was being submitted: don't leave it running
            await self.runner.cancel(job.id)

    async def _requeue(self, job: Job, reason: str) -> None:
        with Session(self.engine) as session:
            job_status.requeue(session, job_id=job.id, reason=reason)
        self.tracker.notify(job.id)
