"""Job status changes on a real SQLite file: the per-user cap, ordering, the dispatcher's claim
and its requeue."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session

from scheduler import crud, db, job_status
from scheduler.models import Job


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


def test_claims_oldest_first_and_each_job_once(session: Session) -> None:
    first, second = add(session), add(session)
    claimed = [job_status.claim_next(session) for _ in range(3)]
    assert [j.id if j else None for j in claimed] == [first.id, second.id, None]
    assert all(j.status == "pending" and j.attempts == 1 for j in claimed[:2] if j)


def test_a_job_claimed_by_another_dispatcher_is_not_claimed_again(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = add(session)
    stale = Job.model_validate(job.model_dump())  # what a second dispatcher read a moment ago
    assert job_status.claim_next(session).id == job.id
    reads = iter([stale, None])
    monkeypatch.setattr(job_status, "oldest_queued", lambda *a, **k: next(reads))
    assert job_status.claim_next(session) is None
    assert session.get(Job, job.id, populate_existing=True).attempts == 1


def test_active_jobs_per_owner_are_capped(session: Session) -> None:
    for _ in range(2):
        job_status.create(session, owner="alice", params={}, callback_url=None, runner="local", max_active=2)
    with pytest.raises(job_status.TooManyActiveJobs):
        job_status.create(session, owner="alice", params={}, callback_url=None, runner="local", max_active=2)
    job_status.create(session, owner="bob", params={}, callback_url=None, runner="local", max_active=2)
    assert crud.count_by_status(session) == {"queued": 3}


def test_requeue_gives_a_claimed_job_back_and_the_attempt_does_not_count(session: Session) -> None:
    job = add(session)
    job_status.claim_next(session)
    assert job_status.requeue(session, job_id=job.id, reason="API server down")
    again = session.get(Job, job.id, populate_existing=True)
    assert (again.status, again.attempts) == ("queued", 0)
    assert again.message == "waiting for the runner: API server down"
    assert not job_status.requeue(session, job_id=job.id, reason="twice")  # only a pending job goes back
