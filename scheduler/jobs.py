"""Job operations beyond one DB read: submit, cancel, delete, logs.

Routes call this; this calls the runner, the storage and the tracker. Swapping the runner
(RUNNER=local|kubernetes) changes nothing above this module.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy import Engine

from job_image.storage import Storage
from scheduler import crud, db, job_status
from scheduler.admission.limits import check_cost, check_device
from scheduler.core.config import Settings
from scheduler.models import Job, JobCreate, JobPublic
from scheduler.pricing import Pricer
from scheduler.runners.base import Runner, StatusReport
from scheduler.statuses import ACTIVE, FINISHED, WITH_RUNNER
from scheduler.stored import read_object
from scheduler.tracker import Tracker

log = logging.getLogger(__name__)


class JobFinished(Exception):
    """The job had already ended (str: its status): there is nothing to cancel."""


class JobGone(Exception):
    """The job was deleted while a request about it ran (str: its id): a 404, as if never found."""


class Jobs:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        storage: Storage,
        runner: Runner,
        tracker: Tracker,
        pricer: Pricer,
        *,
        on_submitted: Callable[[Job], None] = lambda job: None,
    ) -> None:
        self.settings, self.engine, self.storage = settings, engine, storage
        self.runner, self.tracker, self.pricer = runner, tracker, pricer
        self.on_submitted = on_submitted  # metrics, and the dispatcher's wake-up

    async def submit(self, owner: str, request: JobCreate) -> Job:
        """Price the request and record it as queued; the dispatcher admits it when its class
        has room. Raises NoSuchDevice, TooManyActiveJobs, QueueFull, PricingBusy or TooExpensive."""
        settings, params = self.settings, request.params()
        check_device(params, self.runner.snapshot({}))
        bounds = {
            "max_active": settings.max_active_jobs_per_user,
            "max_queued": settings.max_queued_jobs,
            "retry_after": settings.queue_full_retry_after_seconds,
        }
        # the cheap refusals first: a user at their quota is refused without pricing
        await db.in_thread(self.engine, lambda s: job_status.check_room(s, owner=owner, **bounds))
        estimate = await self.pricer.estimate(owner, params)  # PricingBusy past its bounds
        check_cost(estimate, settings.max_job_iterations)
        job = await db.in_thread(
            self.engine,
            lambda s: job_status.create(
                s,
                owner=owner,
                params=params.model_dump(mode="json"),
                callback_url=request.callback_url,
                runner=self.runner.name,
                priority=request.priority,
                estimated_iterations=estimate,
                **bounds,
            ),
        )
        log.info("job %s queued for %s (%.3g iterations estimated)", job.id, owner, estimate)
        self.tracker.notify(job.id)
        self.on_submitted(job)
        return job

    async def cancel(self, job: Job) -> JobPublic:
        """Stop an active job; it stays, `cancelled`, with its logs and what it stored.
        Raises JobFinished when it had ended (perhaps while this ran, then with the status it
        ended with), JobGone when it was deleted meanwhile."""
        if job.status in FINISHED:
            raise JobFinished(job.status)
        final = await self._stop(job)
        if final.status != "cancelled":
            raise JobFinished(final.status)
        log.info("job %s cancelled", job.id)
        return final

    async def _stop(self, job: Job) -> JobPublic:
        """End the job if it is active (the runner reports its end); its document after that, read
        again: the one read before may be stale (JobGone: a DELETE removed it meanwhile)."""
        if job.status in WITH_RUNNER:
            await self.runner.cancel(job.id)
        if job.status in ACTIVE:  # queued, or a runner that reported nothing: it ends here
            await self.tracker.report(StatusReport(job.id, "cancelled"))
        now = await db.in_thread(self.engine, lambda s: s.get(Job, job.id))
        if now is None:
            raise JobGone(job.id)
        return JobPublic.of(now)

    async def delete(self, job: Job) -> JobPublic:
        """Cancel it if active, remove its process/Job and stored objects, then the record.
        Raises JobGone when another request deleted it meanwhile."""
        final = await self._stop(job)
        await asyncio.to_thread(self.storage.delete_prefix, job.result_prefix)
        self.runner.forget(job.id)
        if not await db.in_thread(self.engine, lambda s: crud.delete_job(s, job_id=job.id)):
            raise JobGone(job.id)
        self.tracker.notify(job.id)
        log.info("job %s deleted", job.id)
        return final

    async def logs(self, job: Job) -> str | None:
        """The runner's copy while it has one, else the `job.log` saved beside the result."""
        try:
            text = await self.runner.logs(job.id)
        except Exception as exc:  # e.g. the API server is away: the saved copy may still answer
            log.warning("job %s: live log unavailable: %s", job.id, exc)
            text = None
        if text is not None:
            return text
        saved = await asyncio.to_thread(read_object, self.storage, f"{job.result_prefix}job.log")
        return saved.decode("utf-8", "replace") if saved is not None else None
