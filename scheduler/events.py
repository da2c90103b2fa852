"""Live job events (the SSE streams): one reader of the event log per replica, fanned out.

Every change of a job is logged in the transaction that makes it (`job_status.log_change`), with
an increasing `seq` that is the event's `id:`. The feed reads the log once per change (the
tracker wakes it) and every EVENTS_POLL_SECONDS while anyone listens (changes made by other
replicas), however many clients there are: no client ever queries the database itself after
its start. Each subscriber has a bounded queue; one that overflows is dropped, and its client
resumes with `Last-Event-ID` from the log, so a slow client costs neither memory nor events.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from scheduler import crud, db
from scheduler.models import Job, JobEvent, JobPublic, utcnow
from scheduler.statuses import ACTIVE, FINISHED

log = logging.getLogger(__name__)
T = TypeVar("T")

BATCH = 500  # events per log read
RESUME_WORKERS = 1  # threads reading or encoding resumes' batches at once, all streams together
CURRENT_READS = 5  # tries at reading a fresh stream's documents while no change is logged
CURRENT = "current"  # the kind of a stream's first events: documents as they are now, not from the log
PRUNE_EVERY_SECONDS = 60.0


class TooManyStreams(Exception):
    """The user has EVENTS_MAX_STREAMS_PER_USER streams open already."""


class ResumeRefused(Exception):
    """A Last-Event-ID that no event has, or too far back (str: why, a phrase)."""


@dataclass(eq=False)
class Subscription:
    owner: str
    job_id: str | None  # None: all of the owner's jobs
    queue: asyncio.Queue[JobEvent | None]  # None: the stream ends (dropped, or shutdown)
    dropped: bool = False


def ends_stream(event: JobEvent) -> bool:
    """A one-job stream ends after the job's terminal status (or its deletion)."""
    return event.kind == "deleted" or event.document.get("status") in FINISHED


def until_its_end(events: list[JobEvent], job_id: str | None) -> tuple[list[JobEvent], bool]:
    """`events` up to a one-job stream's end (its terminal event included), and whether it ended."""
    if job_id is not None:
        for i, event in enumerate(events):
            if ends_stream(event):
                return events[: i + 1], True
    return events, False


async def _drain(queue: asyncio.Queue[JobEvent | None]) -> tuple[list[JobEvent], bool]:
    """What the queue holds (waiting for one if empty), and whether the stream ends (None)."""
    taken = [await queue.get()]
    while taken[-1] is not None and not queue.empty():
        taken.append(queue.get_nowait())
    return [event for event in taken if event is not None], taken[-1] is None


class EventFeed:
    def __init__(
        self,
        engine: Engine,
        *,
        queue_size: int,
        poll_seconds: float,
        retention_seconds: float,
        max_streams_per_user: int,
        gap_grace_seconds: float,
        max_resume_events: int = 10_000,
    ) -> None:
        self.engine = engine
        self.queue_size, self.poll_seconds = queue_size, poll_seconds
        self.retention_seconds, self.max_streams_per_user = retention_seconds, max_streams_per_user
        self.max_resume_events = max_resume_events
        # PostgreSQL may commit seq 11 before seq 10: a hole is waited for this long before it
        # is taken as final (a rolled-back or deleted event). SQLite commits in seq order.
        self.gap_grace_seconds = gap_grace_seconds if engine.dialect.name != "sqlite" else 0.0
        self._subs: dict[str, set[Subscription]] = collections.defaultdict(set)
        self._cursor: int | None = None  # the newest seq fanned out; None while nobody listens
        self._hole_since: float | None = None
        self._wake = asyncio.Event()
        self._resume_workers = asyncio.Semaphore(RESUME_WORKERS)

    # --- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """End every stream (shutdown); the loop is stopped by its owner (scheduler/loops.py)."""
        for subs in list(self._subs.values()):
            for sub in list(subs):
                self._end(sub)

    def wake(self, _job_id: str = "") -> None:
        """A change was logged here: read the log now rather than at the next poll."""
        self._wake.set()

    @property
    def streams(self) -> int:
        return sum(len(subs) for subs in self._subs.values())

    # --- one client's stream ----------------------------------------------------------------------

    async def check_resume(self, owner: str, job_id: str | None, after: int) -> None:
        """Refuse (ResumeRefused) a Last-Event-ID past the newest event, or one more than
        `max_resume_events` of this stream's events back: a resume costs what it replays."""

        def read(session: Session) -> tuple[int, int]:
            limit = self.max_resume_events + 1
            behind = crud.count_events_after(session, seq=after, owner=owner, job_id=job_id, limit=limit)
            return crud.last_event_seq(session), behind

        newest, behind = await self._in_thread(read)
        if after > newest:
            raise ResumeRefused(f"no event has the id {after}: the newest is {newest}")
        if behind > self.max_resume_events:
            raise ResumeRefused(
                f"{after} is more than EVENTS_MAX_RESUME ({self.max_resume_events}) events back; "
                "reconnect without Last-Event-ID for the current state"
            )

    async def subscribe(self, owner: str, job_id: str | None) -> Subscription:
        """Register a stream (raises TooManyStreams); `follow` it, which also ends it."""
        if len(self._subs.get(owner, ())) >= self.max_streams_per_user:
            raise TooManyStreams(self.max_streams_per_user)
        sub = Subscription(owner, job_id, asyncio.Queue(self.queue_size))
        self._subs[owner].add(sub)
        if self._cursor is None:  # before the backlog is read: nothing falls between the two
            try:
                cursor = await self._in_thread(crud.last_event_seq)
            except BaseException:
                self._unsubscribe(sub)
                raise
            if self._cursor is None and self._subs:  # another stream may have set it meanwhile
                self._cursor = cursor
        return sub

    async def follow(self, sub: Subscription, after: int | None) -> AsyncIterator[list[JobEvent]]:
        """The events of one job (ending after its terminal one) or of all the owner's jobs:
        those after `after` from the log (or the current state without it), then live ones; in
        batches (a batch of the log, or what the queue held), so a long resume costs the event
        loop one step per batch, not per event."""
        job_id = sub.job_id
        try:
            last = after or 0
            async for batch in self._backlog(sub, after):
                batch, ended = until_its_end(batch, job_id)
                last = max(last, batch[-1].seq or 0) if batch else last
                if batch:
                    yield batch
                if ended:
                    return
            if job_id is not None and await self._in_thread(lambda s: _seen_its_end(s, job_id, last)):
                return
            while True:
                waiting, closed = await _drain(sub.queue)
                fresh = [event for event in waiting if (event.seq or 0) > last]  # not in the backlog
                batch, ended = until_its_end(fresh, job_id)
                if batch:
                    last = batch[-1].seq or last
                    yield batch
                if ended or closed:
                    return
        finally:
            self._unsubscribe(sub)

    async def _backlog(self, sub: Subscription, after: int | None) -> AsyncIterator[list[JobEvent]]:
        """The log after `after`, read in a worker thread BATCH events at a time: a long resume
        never holds the event loop, nor more than one batch in memory."""
        if after is None:  # a fresh stream starts from the current state
            yield await self._in_thread(lambda s: current(s, sub))
            return
        seq = after
        while batch := await self._read_log(
            partial(crud.events_after, seq=seq, owner=sub.owner, job_id=sub.job_id, limit=BATCH)
        ):
            yield batch
            seq = batch[-1].seq or seq
        if seq == after and sub.job_id is not None:  # nothing logged after it: pruned?
            yield await self._in_thread(lambda s: _pruned_current(s, sub))  # then its document

    async def _in_thread(self, work: Callable[[Session], T]) -> T:
        return await db.in_thread(self.engine, work)

    async def _read_log(self, work: Callable[[Session], T]) -> T:
        return await self.off_loop(partial(db.in_session, self.engine, work))

    async def off_loop(self, work: Callable[[], T]) -> T:
        """`work()` in a worker thread, one at a time with resumes' log reads (RESUME_WORKERS):
        building or encoding a batch holds the GIL, and with many at once the event loop would
        wait for it at every step, health checks included."""
        async with self._resume_workers:
            return await asyncio.to_thread(work)

    def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.owner)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.owner]
        if not self._subs:
            self._cursor = None  # nobody listens: stop reading the log

    def _end(self, sub: Subscription) -> None:
        self._unsubscribe(sub)
        while not sub.queue.empty():
            sub.queue.get_nowait()
        sub.queue.put_nowait(None)

    # --- the one reader -----------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        pruned = loop.time()
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel that
            # arrives with the wake-up, and stop() would then wait for ever
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._read()
                if loop.time() - pruned > PRUNE_EVERY_SECONDS:
                    pruned = loop.time()
                    await asyncio.to_thread(self._prune)
            except Exception:  # a DB hiccup: the next round reads from the same cursor
                log.warning("event feed: reading the log failed", exc_info=True)

    async def _read(self) -> None:
        """Fan out the events after the cursor, in seq order, holding back at a fresh hole. The
        log is read in a worker thread; the fan-out, on the loop, never waits."""
        while self._cursor is not None:
            cursor = self._cursor
            events = await self._in_thread(partial(crud.events_after, seq=cursor, limit=BATCH))
            for event in events:
                if self._cursor is None:  # the last subscriber left meanwhile
                    return
                if (event.seq or 0) <= self._cursor:  # a stream subscribing meanwhile set it past
                    continue
                if event.seq != self._cursor + 1 and not self._hole_is_final():
                    return
                self._hole_since, self._cursor = None, event.seq
                self._fan_out(event)
            if len(events) < BATCH:
                return

    def _hole_is_final(self) -> bool:
        now = asyncio.get_running_loop().time()
        if self._hole_since is None:
            self._hole_since = now
        return now - self._hole_since >= self.gap_grace_seconds

    def _fan_out(self, event: JobEvent) -> None:
        for sub in list(self._subs.get(event.owner, ())):
            if sub.job_id is not None and sub.job_id != event.job_id:
                continue
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:  # it stopped reading: drop it, not the service
                log.info("event stream of %s dropped: %d events unread", sub.owner, sub.queue.qsize())
                sub.dropped = True
                self._end(sub)

    def _prune(self) -> None:
        with Session(self.engine) as session:
            removed = crud.prune_events(session, before=utcnow() - timedelta(seconds=self.retention_seconds))
        if removed:
            log.debug("event feed: %d old events pruned", removed)


def current(session: Session, sub: Subscription) -> list[JobEvent]:
    """The current documents, as events with the newest seq (a resume from it misses nothing).
    Read again while the log grew meanwhile: each change logs its event in its own commit, so an
    unchanged newest seq means the documents are those of that seq. Under constant change, after
    CURRENT_READS tries they carry the seq from before their read: a change may come twice, none
    is missed."""
    query = select(Job).where(Job.owner == sub.owner).execution_options(populate_existing=True)
    if sub.job_id is not None:
        query = query.where(Job.id == sub.job_id)
    else:
        query = query.where(col(Job.status).in_(ACTIVE)).order_by(col(Job.created_at))
    newest = crud.last_event_seq(session)
    for _ in range(CURRENT_READS):
        seq = newest
        jobs = session.exec(query).all()
        newest = crud.last_event_seq(session)
        if newest == seq:
            break
    return [
        JobEvent(seq=seq, job_id=job.id, owner=job.owner, kind=CURRENT, document=document(job))
        for job in jobs
    ]


def document(job: Job) -> dict[str, Any]:
    return JobPublic.of(job).model_dump(mode="json")


def _pruned_current(session: Session, sub: Subscription) -> list[JobEvent]:
    """A job whose log is gone (pruned) starts from its document; one with a log has nothing new."""
    return [] if crud.last_event_seq(session, job_id=sub.job_id) else current(session, sub)


def _seen_its_end(session: Session, job_id: str, last: int) -> bool:
    """The job has ended (or is gone) and its stream gave every event of it up to `last`: an
    end logged after the backlog was read comes through the queue instead."""
    job = session.get(Job, job_id)
    ended = job is None or job.status in FINISHED
    return ended and crud.last_event_seq(session, job_id=job_id) <= last
