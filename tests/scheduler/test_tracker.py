"""How runner reports fold into a job record (pure): a finished job never changes again; and
how `?wait=` long-polls are woken, by this process's reports or another replica's writes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine, event
from sqlmodel import Session

from scheduler import crud, job_status
from scheduler.job_status import apply_report
from scheduler.loops import Loops
from scheduler.models import Job, Task
from scheduler.runners.base import StatusReport
from scheduler.tracker import WAIT_RECHECK_SECONDS, Tracker

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 1, 1, 0, 1, tzinfo=UTC)


def job(**fields: object) -> Job:
    defaults: dict[str, object] = {
        "id": "a" * 32,
        "owner": "alice",
        "status": "pending",
        "params": {},
        "runner": "local",
    }
    return Job(**{**defaults, **fields})


def task(**fields: object) -> Task:
    return Task(**{"job_id": "a" * 32, "index": 0, "status": "pending", **fields})


def test_running_then_succeeded() -> None:
    t = task()
    assert apply_report(t, StatusReport(t.job_id, "running", started_at=T0, progress=0.5), max_attempts=3)
    assert (t.status, t.started_at, t.progress) == ("running", T0, 0.5)
    assert apply_report(t, StatusReport(t.job_id, "succeeded", finished_at=T1), max_attempts=3)
    assert (t.status, t.finished_at, t.progress, t.error) == ("succeeded", T1, 1.0, None)


def test_finished_is_final() -> None:
    t = task(status="cancelled", finished_at=T0)
    assert not apply_report(t, StatusReport(t.job_id, "failed", error="SIGTERM"), max_attempts=3)
    assert not apply_report(t, StatusReport(t.job_id, "cancelled"), max_attempts=3)
    assert not apply_report(t, StatusReport(t.job_id, "queued"), max_attempts=3)
    assert (t.status, t.error, t.finished_at) == ("cancelled", None, T0)


def test_same_report_twice_changes_nothing(engine: Engine) -> None:
    job_id = admitted_job(engine)
    report = StatusReport(job_id, "pending", message="Unschedulable: 0/3 nodes have a GPU")
    with Session(engine) as session:
        assert job_status.record(session, report, max_attempts=3).changed
        assert not job_status.record(session, report, max_attempts=3).changed
        assert session.get(Job, job_id).message == "Unschedulable: 0/3 nodes have a GPU"


def test_failed_keeps_the_error_and_clears_the_message(engine: Engine) -> None:
    job_id = admitted_job(engine)
    with Session(engine) as session:
        job_status.record(session, StatusReport(job_id, "pending", message="pulling"), max_attempts=3)
        failed = StatusReport(job_id, "failed", error="The container was OOMKilled.", finished_at=T1)
        j = job_status.record(session, failed, max_attempts=3).job
        assert (j.status, j.error, j.message) == ("failed", "The container was OOMKilled.", None)


def test_requeue_until_the_attempt_cap() -> None:
    t = task(status="running", admissions=2, progress=0.4)
    assert apply_report(t, StatusReport(t.job_id, "queued", message="restarted"), max_attempts=3)
    assert (t.status, t.progress) == ("queued", None)
    t = task(status="running", admissions=3)
    assert apply_report(t, StatusReport(t.job_id, "queued"), max_attempts=3)
    assert t.status == "failed" and "3 times" in (t.error or "") and t.finished_at is not None


# --- long-polls (?wait=) against a real SQLite database -----------------------------------------


def queued_job(engine: Engine) -> str:
    with Session(engine) as session:
        crud.create_user(session, username="alice", password_hash="x")
    with Session(engine, expire_on_commit=False) as session:
        return job_status.create(
            session, owner="alice", params={}, callback_url=None, runner="local", max_active=10
        ).id


def admitted_job(engine: Engine) -> str:
    job_id = queued_job(engine)
    with Session(engine) as session:
        picks = [job_status.Pick(job_id, "cpu", 1.0)]
        assert job_status.admit(session, picks, generation=job_status.ledger_generation(session))
    return job_id


def finish_elsewhere(engine: Engine, job_id: str) -> None:
    """What another replica's tracker does: the row changes, this process is not told."""
    with Session(engine) as session:
        job = session.get(Job, job_id)
        job.status, job.finished_at = "succeeded", T1
        session.add(job)
        session.commit()


def test_a_job_finished_by_another_replica_wakes_the_long_poll(engine: Engine) -> None:
    job_id = queued_job(engine)

    async def scenario() -> None:
        tracker, loops = Tracker(engine, max_attempts=3), Loops()
        loops.start({"recheck": tracker.recheck_waiters})
        waiting = asyncio.create_task(tracker.wait_until_finished(job_id, "alice", 30))
        await asyncio.sleep(0)  # it has read the row (queued) and sleeps
        await asyncio.to_thread(finish_elsewhere, engine, job_id)
        doc = await asyncio.wait_for(waiting, 20)  # the recheck, not the 30 s deadline, ends it
        assert doc is not None and doc.status == "succeeded"
        await loops.stop()

    asyncio.run(scenario())


def test_waiters_on_one_job_are_all_woken_when_one_gives_up(engine: Engine) -> None:
    job_id = queued_job(engine)

    async def scenario() -> None:
        tracker = Tracker(engine, max_attempts=3)
        patient = asyncio.create_task(tracker.wait_until_finished(job_id, "alice", 30))
        hasty = await tracker.wait_until_finished(job_id, "alice", 0.05)
        assert hasty is not None and hasty.status == "queued"
        await tracker.report(StatusReport(job_id, "succeeded", finished_at=T1))
        doc = await asyncio.wait_for(patient, 20)  # no recheck runs here: only notify can end it
        assert doc is not None and doc.status == "succeeded"

    asyncio.run(scenario())


def test_the_recheck_is_one_query_for_all_waiting_clients(engine: Engine) -> None:
    job_id = queued_job(engine)
    queries: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: queries.append(args[2]))

    async def scenario() -> None:
        tracker, loops = Tracker(engine, max_attempts=3), Loops()
        loops.start({"recheck": tracker.recheck_waiters})
        waiters = [asyncio.create_task(tracker.wait_until_finished(job_id, "alice", 30)) for _ in range(50)]
        await until_true(lambda: len(queries) >= 50)  # each waiter's first read
        first_reads = len(queries)
        await asyncio.sleep(2.5 * WAIT_RECHECK_SECONDS)  # a window holding two or three rechecks
        rechecks = len(queries) - first_reads
        assert 1 <= rechecks <= 3, queries[first_reads:]
        await asyncio.to_thread(finish_elsewhere, engine, job_id)
        docs = await asyncio.wait_for(asyncio.gather(*waiters), 20)
        assert {d.status for d in docs if d is not None} == {"succeeded"}
        await loops.stop()

    asyncio.run(scenario())


async def until_true(predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)
