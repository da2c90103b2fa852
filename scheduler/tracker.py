"""Status tracking: runners report what they see, the tracker stores it (through `job_status`)
and tells who waits: the service's hooks (metrics, dispatcher, callbacks) and long-polls.

Client reads are served from the DB; `?wait=` long-polls sleep on a per-job event that the
tracker sets, and one periodic query wakes those whose job another replica has finished.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from scheduler import db, job_reads, job_status
from scheduler.models import Job, JobPublic, as_utc
from scheduler.runners.base import StatusReport
from scheduler.statuses import FINISHED

log = logging.getLogger(__name__)

WAIT_RECHECK_SECONDS = 1.0  # how stale a long-poll may be for changes made by another replica
RECHECK_BATCH = 500  # job ids per query: well under SQLite's 32766 bound parameters


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    start, end = as_utc(start), as_utc(end)
    return (end - start).total_seconds() if start and end else None


class Tracker:
    def __init__(
        self,
        engine: Engine,
        *,
        max_attempts: int,
        read_job: Callable[[str, str], Awaitable[Job | None]] | None = None,
        retry_seconds: float = 5.0,
        on_started: Callable[[Job], None] = lambda job: None,
        on_finished: Callable[[Job], None] = lambda job: None,
        on_requeued: Callable[[Job], None] = lambda job: None,
        on_change: Callable[[str], None] = lambda job_id: None,
        on_task_ended: Callable[[Job], None] = lambda job: None,
    ) -> None:
        self.engine = engine
        self.max_attempts = max_attempts
        # what a long-poll reads: the service's JobReads.owned; by default always in a thread
        self.read_job = read_job or functools.partial(job_reads.read_in_thread, engine)
        self.on_started, self.on_finished, self.on_requeued = on_started, on_finished, on_requeued
        self.on_change = on_change  # the event feed: a change was logged (job_status.log_change)
        self.on_task_ended = on_task_ended  # a task of a job still active ended: its slot is free
        self._changed: dict[str, asyncio.Event] = {}  # job id -> what its long-polls wait on
        self._waiting: collections.Counter[str] = collections.Counter()  # job id -> long-polls
        self._writing = asyncio.Lock()
        self.retry_seconds = retry_seconds
        # job id (`<job id>/<task>` for a task's but the first) -> its end, not yet in the DB
        self.unwritten: dict[str, StatusReport] = {}

    async def report(self, report: StatusReport) -> bool:
        """The `report` callback every runner is built with; False when the job has no record
        (deleted, perhaps through another replica: the runner then removes what is left).

        An end that cannot be written (a full disk, a database that is away) is kept and written
        again every `retry_seconds` until it is: the job must not stay active for ever.
        """
        try:
            return await self._write(report)
        except (SQLAlchemyError, OSError) as exc:
            if report.status not in FINISHED:
                log.warning("job %s: report %s not recorded: %s", report.job_id, report.status, exc)
                return True  # a later report says the same or more
            log.warning("job %s: its end (%s) not recorded: %s; retrying", report.job_id, report.status, exc)
            key = f"{report.job_id}/{report.task}" if report.task else report.job_id  # task 0: the job's
            self.unwritten.setdefault(key, report)
            return True

    async def _write(self, report: StatusReport) -> bool:
        # One at a time and in order, as they arrive: two reports of one job written at once
        # could each read the other's old state (a late progress report undoing an end).
        async with self._writing:
            job, changed, started, followers = await db.in_thread(
                self.engine, lambda s: job_status.record(s, report, max_attempts=self.max_attempts)
            )
        if job is None:  # deleted meanwhile: nothing to record
            log.debug("report for unknown job %s ignored", report.job_id)
            return False
        if not changed:
            return True
        if started:
            self.on_started(job)
        for changed_job in (job, *followers):  # the followers ended with it, or now render themselves
            log.info("job %s is %s%s", changed_job.id, changed_job.status,
                     f": {changed_job.error}" if changed_job.error else "")
            if changed_job.status in FINISHED:
                self.on_finished(changed_job)
            elif changed_job.status == "queued":
                self.on_requeued(changed_job)
            elif changed_job is job and report.status in FINISHED:  # a task ended: its slot is free
                self.on_task_ended(job)
            self.notify(changed_job.id)
        return True

    def notify(self, job_id: str) -> None:
        """`job_id` changed: wake its long-polls (they read the DB again) and the event feed."""
        self.on_change(job_id)
        event = self._changed.pop(job_id, None)
        if event is not None:
            event.set()

    async def wait_until_finished(self, job_id: str, owner: str, seconds: float) -> JobPublic | None:
        """The job's document once it has finished or `seconds` passed; None if it is gone."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        self._waiting[job_id] += 1
        try:
            while True:
                event = self._changed.setdefault(job_id, asyncio.Event())  # before reading: no lost wake-up
                job = await self.read_job(job_id, owner)
                doc = None if job is None else JobPublic.of(job)
                remaining = deadline - loop.time()
                if doc is None or doc.status in FINISHED or remaining <= 0:
                    return doc
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), remaining)
        finally:
            self._waiting[job_id] -= 1
            if not self._waiting[job_id]:  # the last waiter of this job: nothing to wake any more
                del self._waiting[job_id]
                self._changed.pop(job_id, None)

    async def retry_unwritten(self) -> None:
        """Write the ends that could not be written, until they are (or their job is gone)."""
        while True:
            await asyncio.sleep(self.retry_seconds)
            for job_id, report in list(self.unwritten.items()):
                try:
                    await self._write(report)
                except (SQLAlchemyError, OSError) as exc:
                    log.info("job %s: its end is still not recorded: %s", job_id, exc)
                    break  # the database is still away: try them all again later
                del self.unwritten[job_id]
                log.info("job %s: its end (%s) is recorded now", job_id, report.status)

    async def recheck_waiters(self) -> None:
        """Another replica may have finished or deleted a job that a long-poll here waits on:
        look every WAIT_RECHECK_SECONDS, with one query for all waited-on jobs (not one per
        waiting client), and wake those."""
        while True:
            await asyncio.sleep(WAIT_RECHECK_SECONDS)
            waited = list(self._waiting)
            if not waited:
                continue
            try:
                ended = await asyncio.to_thread(self._ended_among, waited)
            except Exception:  # a DB hiccup: the long-polls still end at their deadline
                log.warning("long-poll recheck failed", exc_info=True)
                continue
            for job_id in ended:
                self.notify(job_id)

    def _ended_among(self, job_ids: list[str]) -> set[str]:
        """Those of `job_ids` that have finished or no longer exist."""
        ended = set(job_ids)
        with Session(self.engine) as session:
            for i in range(0, len(job_ids), RECHECK_BATCH):
                batch = job_ids[i : i + RECHECK_BATCH]
                active = select(Job.id).where(col(Job.id).in_(batch), col(Job.status).not_in(FINISHED))
                ended.difference_update(session.exec(active))
        return ended
