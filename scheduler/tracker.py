"""Status tracking: runners report what they see, the tracker writes it to the DB.

Client reads are served from the DB; `?wait=` long-polls sleep on a per-job event that the
tracker sets, with a short re-read so a change written by another replica is seen too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session

from scheduler.models import FINISHED, Job, JobPublic, as_utc, utcnow
from scheduler.runners.base import StatusReport

log = logging.getLogger(__name__)

WAIT_RECHECK_SECONDS = 1.0  # how stale a long-poll may be for changes made by another replica


def apply_report(job: Job, report: StatusReport, *, max_attempts: int) -> bool:
    """Fold one report into the job record; False when it changes nothing.

    A finished job never changes again (runners may report an end twice, e.g. a cancel seen
    both by the caller and by the watch). A "queued" report gives the job back to the
    dispatcher until it has been started `max_attempts` times.
    """
    if job.status in FINISHED:
        return False
    if report.status == "queued":
        if job.attempts >= max_attempts:
            job.status, job.finished_at = "failed", report.finished_at or utcnow()
            job.error = f"the job was interrupted {job.attempts} times (service restarts) and was given up"
        else:
            job.status, job.message, job.progress, job.started_at = "queued", report.message, None, None
        return True
    before = (job.status, job.started_at, job.finished_at, job.error, job.message, job.progress)
    job.status = report.status
    if report.started_at is not None and job.started_at is None:
        job.started_at = report.started_at
    if report.status in FINISHED:
        job.finished_at = report.finished_at or utcnow()
        job.error = report.error if report.status == "failed" else None
        job.message = None
        if report.status == "succeeded":
            job.progress = 1.0
    else:
        job.message = report.message
        if report.progress is not None:
            job.progress = report.progress
    return before != (job.status, job.started_at, job.finished_at, job.error, job.message, job.progress)


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    start, end = as_utc(start), as_utc(end)
    return (end - start).total_seconds() if start and end else None


class Tracker:
    def __init__(
        self,
        engine: Engine,
        *,
        max_attempts: int,
        on_started: Callable[[Job], None] = lambda job: None,
        on_finished: Callable[[Job], None] = lambda job: None,
        on_requeued: Callable[[Job], None] = lambda job: None,
    ) -> None:
        self.engine = engine
        self.max_attempts = max_attempts
        self.on_started, self.on_finished, self.on_requeued = on_started, on_finished, on_requeued
        self._changed: dict[str, asyncio.Event] = {}

    async def report(self, report: StatusReport) -> bool:
        """The `report` callback every runner is built with; False when the job has no record
        (deleted, perhaps through another replica: the runner then removes what is left)."""
        with Session(self.engine, expire_on_commit=False) as session:
            job = session.get(Job, report.job_id)
            if job is None:  # deleted meanwhile: nothing to record
                log.debug("report for unknown job %s ignored", report.job_id)
                return False
            was_started = job.started_at is not None
            if not apply_report(job, report, max_attempts=self.max_attempts):
                return True
            session.add(job)
            session.commit()
        log.info("job %s is %s%s", job.id, job.status, f": {job.error}" if job.error else "")
        if job.started_at is not None and not was_started:
            self.on_started(job)
        if job.status in FINISHED:
            self.on_finished(job)
        elif job.status == "queued":
            self.on_requeued(job)
        self.notify(job.id)
        return True

    def notify(self, job_id: str) -> None:
        event = self._changed.pop(job_id, None)
        if event is not None:
            event.set()

    async def wait_until_finished(self, job_id: str, owner: str, seconds: float) -> JobPublic | None:
        """The job's document once it has finished or `seconds` passed; None if it is gone."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            event = self._changed.setdefault(job_id, asyncio.Event())  # before reading: no lost wake-up
            with Session(self.engine) as session:
                job = session.get(Job, job_id)
                doc = JobPublic.of(job) if job is not None and job.owner == owner else None
            remaining = deadline - loop.time()
            if doc is None or doc.status in FINISHED or remaining <= 0:
                if not event.is_set():  # nobody will set it for us: don't keep it around
                    self._changed.pop(job_id, None)
                return doc
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, WAIT_RECHECK_SECONDS))
