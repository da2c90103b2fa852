"""Job operations beyond one DB read: submit, cancel, retry, delete, logs.

Routes call this; this calls the runner, the storage and the tracker. Swapping the runner
(RUNNER=local|kubernetes) changes nothing above this module.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

from sqlalchemy import Engine

from job_image.params import FractalParams
from job_image.storage import Storage
from job_image.tasks import RenderArray
from scheduler import crud, db, idempotency, job_status
from scheduler.admission.limits import check_cost, check_device
from scheduler.core.config import Settings
from scheduler.models import Job, JobCreate, JobPublic, utcnow
from scheduler.pricing import Pricer
from scheduler.result_cache import cache_key, renderer_of
from scheduler.runners.base import Runner, StatusReport
from scheduler.statuses import ACTIVE, FINISHED, WITH_RUNNER
from scheduler.stored import read_object
from scheduler.tracker import Tracker

log = logging.getLogger(__name__)


class Submitted(NamedTuple):
    """What `POST /jobs` answers: the job's document, and whether it is a replay of the first
    answer to the request's Idempotency-Key."""

    document: dict[str, Any]
    replayed: bool = False


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

    async def submit(self, owner: str, request: JobCreate, idempotency_key: str | None = None) -> Submitted:
        """Record the request as a job, or answer its Idempotency-Key's first answer again.
        Raises KeyInProgress, KeyReused, NoSuchDevice, TooExpensive, TooManyActiveJobs or QueueFull."""
        if idempotency_key is None:
            return Submitted(JobPublic.of(await self._submit(owner, request, None)).model_dump(mode="json"))
        body = request.model_dump(mode="json")
        now, settings = utcnow(), self.settings
        replay = await db.in_thread(self.engine, lambda s: idempotency.claim(
            s, owner=owner, key=idempotency_key, fingerprint=idempotency.fingerprint(body), now=now,
            ttl=settings.idempotency_ttl_seconds, lease=settings.idempotency_lease_seconds))
        if replay is not None:
            log.info("job %s: Idempotency-Key replayed for %s", replay.job_id, owner)
            return Submitted(replay.document, replayed=True)
        try:
            job = await self._submit(owner, request, idempotency_key)
        except BaseException:  # refused or failed before it had an answer: the key may be used again
            await asyncio.shield(
                db.in_thread(self.engine, lambda s: idempotency.release(s, owner=owner, key=idempotency_key))
            )
            raise
        return Submitted(JobPublic.of(job).model_dump(mode="json"))

    async def _submit(self, owner: str, request: JobCreate, idempotency_key: str | None) -> Job:
        """Price the request and record it as queued; the dispatcher admits it when its class
        has room. An equal render of the owner's is reused instead (result cache): one that
        succeeded needs no estimate (it is not run), one still active is followed. Raises
        NoSuchDevice, TooManyActiveJobs, QueueFull, PricingBusy or TooExpensive."""
        settings, params, array = self.settings, request.params(), request.array()
        check_device(params, self.runner.view().snapshot({}))
        bounds = {
            "max_active": settings.max_active_jobs_per_user,
            "max_queued": settings.max_queued_jobs,
            "retry_after": settings.queue_full_retry_after_seconds,
        }
        key = self._cache_key(request)
        source = None
        if key is not None:
            source = await db.in_thread(
                self.engine, lambda s: job_status.reusable(s, owner=owner, cache_key=key)
            )
        if source is not None and source.status == "succeeded":
            estimate = source.estimated_iterations or 0.0
        else:
            # the cheap refusals first: a user at their quota is refused without pricing
            await db.in_thread(self.engine, lambda s: job_status.check_room(s, owner=owner, **bounds))
            estimate = await self.price(owner, params, array)
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
                cache_key=key,
                idempotency_key=idempotency_key,
                array=request.array_document(),
                tasks=array.tasks if array else 1,
            ),
        )
        if job.cached:
            log.info("job %s for %s served from the stored render at %s", job.id, owner, job.result_prefix)
        elif job.follows:
            log.info("job %s for %s follows job %s, which renders the same frame", job.id, owner, job.follows)
        else:
            log.info("job %s queued for %s (%.3g iterations estimated)", job.id, owner, estimate)
        self.tracker.notify(job.id)
        self.on_submitted(job)
        return job

    async def price(self, owner: str, params: FractalParams, array: RenderArray | None) -> float:
        """The job's estimated iterations; raises PricingBusy, or TooExpensive when one task
        would pass MAX_JOB_ITERATIONS."""
        estimate = await self.pricer.estimate(owner, params)  # PricingBusy past its bounds
        per_task = estimate / (array.tasks if array else 1)  # a split's bands share the frame's cost
        if array is not None and array.is_video:  # frames between the first and last cost in between
            last = await self.pricer.estimate(owner, params.model_copy(update={"zoom": array.zoom_to}))
            estimate, per_task = (estimate + last) / 2 * array.frames, max(estimate, last)
        check_cost(per_task, self.settings.max_job_iterations)
        return estimate

    def _cache_key(self, request: JobCreate) -> str | None:
        if not self.settings.result_cache:
            return None
        renderer = renderer_of(self.settings.runner, self.settings.job_image)
        return cache_key(request.model_dump(mode="json"), renderer=renderer)

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
        """End the job if it is active, every task of it (the runner reports their ends); its
        document after that, read again: the one read before may be stale (JobGone: a DELETE
        removed it meanwhile). A runner that cannot stop it now raises, and nothing changed."""
        if job.status in WITH_RUNNER:
            await self.runner.cancel(job.id)
        if job.status in ACTIVE:  # queued, or a runner that reported nothing: it ends here
            await self.tracker.report(StatusReport(job.id, "cancelled"))
            if job.tasks_total > 1:  # tasks admitted while the others were stopped: stop them too
                await self.runner.cancel(job.id)
        now = await db.in_thread(self.engine, lambda s: s.get(Job, job.id))
        if now is None:
            raise JobGone(job.id)
        return JobPublic.of(now)

    async def retry(self, job: Job) -> JobPublic:
        """Queue a failed render array's failed tasks again; raises NotRetryable (409) otherwise."""
        again = await db.in_thread(self.engine, lambda s: job_status.retry(s, job_id=job.id))
        log.info("job %s: its failed tasks are queued again", job.id)
        self.tracker.notify(job.id)
        self.on_submitted(again)  # the dispatcher looks at the queue again
        return JobPublic.of(again)

    async def delete(self, job: Job) -> JobPublic:
        """Cancel it if active, remove its process/Job and stored objects, then the record.
        Raises JobGone when another request deleted it meanwhile."""
        final = await self._stop(job)
        if not await db.in_thread(self.engine, lambda s: crud.release_result(s, job=job)):  # else shared
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
