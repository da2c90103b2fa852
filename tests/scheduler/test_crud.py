"""Job status changes on a real SQLite file: the per-user and queue caps, admission (once, and
never on stale state) and the requeue."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import Session

from scheduler import crud, db, job_status
from scheduler.models import Job, Task, utcnow


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'test.db'}")
    db.init_db(engine)
    with Session(engine, expire_on_commit=False) as s:
        yield s


def add(session: Session, owner: str = "alice") -> Job:
    return job_status.create(
        session, owner=owner, params={}, callback_url=None, runner="local", max_active=10
    )


def admit(session: Session, *jobs: Job, placement: str = "cpu") -> list[Job] | None:
    generation = job_status.ledger_generation(session)
    picks = [job_status.Pick(job.id, placement, 10.0) for job in jobs]
    admitted = job_status.admit(session, picks, generation=generation)
    return None if admitted is None else [a.job for a in admitted]


def test_admission_marks_jobs_pending_in_their_class_once(session: Session) -> None:
    first, second = add(session), add(session)
    admitted = admit(session, first, second, placement="gpu")
    assert [j.id for j in admitted] == [first.id, second.id]
    assert all((j.status, j.placement, j.attempts) == ("pending", "gpu", 1) for j in admitted)
    assert all(j.admitted_at is not None and j.estimated_finish_at is not None for j in admitted)
    assert admit(session, first) == []  # no longer queued: nothing to admit


def test_an_admission_planned_on_stale_state_changes_nothing(session: Session) -> None:
    """Another replica admitted since this plan read the ledger: the whole admission is refused."""
    first, second = add(session), add(session)
    seen = job_status.ledger_generation(session)
    assert admit(session, first) is not None  # the other replica, meanwhile
    stale = job_status.admit(session, [job_status.Pick(second.id, "cpu", 1.0)], generation=seen)
    assert stale is None
    assert session.get(Job, second.id, populate_existing=True).status == "queued"


def test_the_queue_of_all_users_is_bounded(session: Session) -> None:
    for owner in ("alice", "bob"):
        job_status.create(session, owner=owner, params={}, callback_url=None, runner="local",
                          max_active=10, max_queued=2)
    with pytest.raises(job_status.QueueFull) as refused:
        job_status.create(session, owner="carol", params={}, callback_url=None, runner="local",
                          max_active=10, max_queued=2, retry_after=7)
    assert refused.value.retry_after == 7 and str(refused.value) == "2"


def test_active_jobs_per_owner_are_capped(session: Session) -> None:
    for _ in range(2):
        job_status.create(session, owner="alice", params={}, callback_url=None, runner="local", max_active=2)
    with pytest.raises(job_status.TooManyActiveJobs):
        job_status.create(session, owner="alice", params={}, callback_url=None, runner="local", max_active=2)
    job_status.create(session, owner="bob", params={}, callback_url=None, runner="local", max_active=2)
    assert crud.count_by_status(session) == {"queued": 3}


def test_requeue_gives_a_claimed_job_back_and_the_attempt_does_not_count(session: Session) -> None:
    job = add(session)
    admit(session, job)
    assert job_status.requeue(session, job_id=job.id, reason="API server down")
    again = session.get(Job, job.id, populate_existing=True)
    assert (again.status, again.attempts, again.placement) == ("queued", 0, None)
    assert again.message == "waiting for the runner: API server down"
    assert not job_status.requeue(session, job_id=job.id, reason="twice")  # only a pending job goes back


def test_fair_share_history_is_what_ended_lately_however_early_admitted(session: Session) -> None:
    """A long job admitted ten minutes ago that ended a second ago still counts; one that ended
    five minutes ago does not, nor a job cancelled before it was ever admitted."""
    now = utcnow()
    long_one, old_one, never = add(session), add(session), add(session)
    admit(session, long_one, old_one)
    for job, status, admitted, ended in ((long_one, "succeeded", 600, 1), (old_one, "failed", 700, 300),
                                         (never, "cancelled", None, 0)):
        task = session.get(Task, (job.id, 0))
        task.status, task.finished_at = status, now - timedelta(seconds=ended)
        task.admitted_at = None if admitted is None else now - timedelta(seconds=admitted)
        session.add(task)
    session.commit()
    queued, active, history = crud.admission_view(session, since=now - timedelta(seconds=30))
    assert (queued, active) == ([], [])
    assert [j.id for _, j in history] == [long_one.id]
