"""The event feed on a real SQLite database: one log read for any number of streams, bounded
queues (a client that stops reading is dropped), and the per-user stream limit."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlmodel import Session

from scheduler import crud, job_status
from scheduler.events import BATCH, CURRENT_READS, EventFeed, ResumeRefused, TooManyStreams
from scheduler.models import Job


def make_feed(engine: Engine, **overrides: Any) -> EventFeed:
    options: dict[str, Any] = {
        "queue_size": 8,
        "poll_seconds": 30.0,  # only explicit reads in these tests
        "retention_seconds": 3600.0,
        "max_streams_per_user": 1000,
        "gap_grace_seconds": 1.0,
    }
    return EventFeed(engine, **(options | overrides))


def new_job(engine: Engine, owner: str = "alice") -> Job:
    with Session(engine, expire_on_commit=False) as session:
        return job_status.create(
            session, owner=owner, params={}, callback_url=None, runner="local", max_active=100
        )


def progress(engine: Engine, job_id: str, steps: int) -> None:
    with Session(engine) as session:
        for step in range(steps):
            job = session.get(Job, job_id)
            assert job is not None
            job.status, job.progress = "running", step / steps
            job_status.log_change(session, job)
            session.commit()


def count_queries(engine: Engine) -> list[str]:
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    return seen


def test_one_log_read_serves_every_stream(engine: Engine) -> None:
    async def run() -> None:
        feed = make_feed(engine)
        job = new_job(engine)
        subs = [await feed.subscribe("alice", job.id if i % 2 else None) for i in range(200)]
        queries = count_queries(engine)
        progress(engine, job.id, 3)
        writes = len(queries)
        await feed._read()
        assert len(queries) - writes <= 2  # the log read (and its empty follow-up), not 200
        assert all(sub.queue.qsize() == 3 for sub in subs)

    asyncio.run(run())


def test_a_client_that_stops_reading_is_dropped_with_a_bounded_queue(engine: Engine) -> None:
    async def run() -> None:
        feed = make_feed(engine, queue_size=4)
        job = new_job(engine)
        stalled = await feed.subscribe("alice", job.id)
        reader = await feed.subscribe("alice", job.id)
        got = []
        for _ in range(5):
            progress(engine, job.id, 2)
            await feed._read()
            while not reader.queue.empty():
                got.append(reader.queue.get_nowait())
        assert stalled.dropped and stalled.queue.qsize() == 1 and stalled.queue.get_nowait() is None
        assert not reader.dropped and len(got) == 10
        assert feed.streams == 1  # the dropped one no longer receives anything

    asyncio.run(run())


def test_a_dropped_stream_ends_and_the_client_can_resume_from_the_log(engine: Engine) -> None:
    async def run() -> None:
        feed = make_feed(engine, queue_size=2)
        job = new_job(engine)
        sub = await feed.subscribe("alice", job.id)
        seen = []
        async for batch in feed.follow(sub, None):
            seen += [ev.seq for ev in batch]
            if len(seen) == 1:
                progress(engine, job.id, 5)  # more than the queue holds, unread
                await feed._read()
        assert sub.dropped and len(seen) == 1
        resumed = await feed.subscribe("alice", job.id)
        rest = []
        async for batch in feed.follow(resumed, seen[-1]):
            rest += [ev.seq for ev in batch]
            if len(rest) >= 5:
                break
        assert rest == list(range(seen[0] + 1, seen[0] + 6))

    asyncio.run(run())


def test_streams_per_user_are_limited(engine: Engine) -> None:
    async def run() -> None:
        feed = make_feed(engine, max_streams_per_user=2)
        await feed.subscribe("alice", None)
        await feed.subscribe("alice", None)
        with pytest.raises(TooManyStreams):
            await feed.subscribe("alice", None)
        await feed.subscribe("bob", None)  # another user's are counted apart

    asyncio.run(run())


def test_a_hole_in_the_log_is_waited_for_before_it_is_skipped(engine: Engine) -> None:
    """On PostgreSQL a lower seq may commit after a higher one; the feed holds back at a hole
    for the grace period (SQLite commits in order, so there it never waits)."""

    async def run() -> None:
        feed = make_feed(engine)
        feed.gap_grace_seconds = 0.2  # as on PostgreSQL
        job = new_job(engine)
        sub = await feed.subscribe("alice", None)
        progress(engine, job.id, 3)
        with Session(engine) as session:  # seq cursor+1 "not yet committed"
            first = crud.events_after(session, seq=feed._cursor or 0, limit=1)[0]
            session.delete(first)
            session.commit()
        await feed._read()
        assert sub.queue.empty()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while sub.queue.qsize() < 2:  # once past the grace period the hole is final
            assert loop.time() < deadline, "the hole was never skipped"
            await asyncio.sleep(0.02)
            await feed._read()

    asyncio.run(run())


def test_a_fresh_stream_gives_the_documents_with_the_seq_they_were_read_at(engine: Engine) -> None:
    """A change committed while a fresh stream reads the current state: its first event is the
    changed document under that change's seq, not under the seq before it (which would make the
    change's own event follow as a repeat)."""
    job = new_job(engine)
    raced: list[str] = []

    def change_before_the_jobs_are_read(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if not raced and statement.lstrip().startswith("SELECT job."):
            raced.append(statement)
            progress(engine, job.id, 1)  # another connection commits the change and its event

    async def run() -> None:
        feed = make_feed(engine)
        event.listen(engine, "before_cursor_execute", change_before_the_jobs_are_read)
        first = (await anext(aiter(feed.follow(await feed.subscribe("alice", job.id), None))))[0]
        event.remove(engine, "before_cursor_execute", change_before_the_jobs_are_read)
        assert raced and first.document["status"] == "running"
        with Session(engine) as session:
            assert first.seq == crud.last_event_seq(session, job_id=job.id)

    asyncio.run(run())


def test_a_long_resume_is_read_in_worker_threads_a_batch_at_a_time(engine: Engine) -> None:
    """Resuming a long log never reads it on the event loop, nor whole: one BATCH per read."""
    job = new_job(engine)
    progress(engine, job.id, 2 * BATCH + 10)
    reads: list[tuple[str, bool]] = []

    async def run() -> None:
        loop_thread = threading.current_thread()
        event.listen(
            engine, "before_cursor_execute",
            lambda *args: reads.append((args[2], threading.current_thread() is loop_thread)),
        )
        feed = make_feed(engine)
        got, sizes = [], []
        async for batch in feed.follow(await feed.subscribe("alice", None), 0):
            got += [ev.seq for ev in batch]
            sizes.append(len(batch))
            if len(got) >= 2 * BATCH + 11:
                break
        assert got == list(range(1, 2 * BATCH + 12))
        assert sizes == [BATCH, BATCH, 11]  # the event loop handles a batch at a time

    asyncio.run(run())
    assert reads and not any(on_loop for _, on_loop in reads), [s for s, on_loop in reads if on_loop]
    assert sum("FROM jobevent" in s and "LIMIT" in s for s, _ in reads) >= 3  # three batches, not one


def test_a_resume_past_the_newest_event_or_too_far_back_is_refused(engine: Engine) -> None:
    job = new_job(engine)
    progress(engine, job.id, 9)  # seqs 1..10

    async def run() -> None:
        feed = make_feed(engine, max_resume_events=5)
        await feed.check_resume("alice", None, 5)  # 5 events back: allowed
        await feed.check_resume("bob", None, 0)  # nothing of bob's to replay
        with pytest.raises(ResumeRefused, match="no event has the id 11"):
            await feed.check_resume("alice", job.id, 11)
        with pytest.raises(ResumeRefused, match="more than EVENTS_MAX_RESUME"):
            await feed.check_resume("alice", job.id, 4)

    asyncio.run(run())


def test_a_fresh_stream_reads_the_documents_a_bounded_number_of_times(engine: Engine) -> None:
    """A log that grows at every read: the first documents still come, after CURRENT_READS
    reads, under the seq from before their read (a change may come twice, none is missed)."""
    job = new_job(engine)
    reads: list[int] = []
    changing = threading.local()

    def change_at_every_read(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().startswith("SELECT job.") and not getattr(changing, "now", False):
            reads.append(1)
            changing.now = True
            try:
                with Session(engine) as session:  # another connection commits a change and its event
                    changed = session.get(Job, job.id)
                    assert changed is not None
                    changed.status, changed.progress = "running", len(reads) / 10
                    job_status.log_change(session, changed)
                    session.commit()
            finally:
                changing.now = False

    async def run() -> None:
        feed = make_feed(engine)
        event.listen(engine, "before_cursor_execute", change_at_every_read)
        first = (await anext(aiter(feed.follow(await feed.subscribe("alice", job.id), None))))[0]
        event.remove(engine, "before_cursor_execute", change_at_every_read)
        assert len(reads) == CURRENT_READS
        with Session(engine) as session:
            logged = crud.events_after(session, seq=first.seq or 0, job_id=job.id, limit=100)
        assert logged and logged[-1].document["progress"] == first.document["progress"]

    asyncio.run(run())
