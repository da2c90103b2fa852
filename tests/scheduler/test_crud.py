"""DB functions on a real SQLite file: the per-user cap, ordering, and the dispatcher's claim."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session

from scheduler import crud, db
from scheduler.models import Job


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'test.db'}")
    db.init_db(engine)
    with Session(engine, expire_on_commit=False) as s:
        yield s


def add(session: Session, owner: str = "alice") -> Job:
    return crud.create_job(session, owner=owner, params={}, callback_url=None, runner="local", max_active=10)


def test_claims_oldest_first_and_each_job_once(session: Session) -> None:
    first, second = add(session), add(session)
    claimed = [crud.claim_next_queued(session) for _ in range(3)]
    assert [j.id if j else None for j in claimed] == [first.id, second.id, None]
    assert all(j.status == "pending" and j.attempts == 1 for j in claimed[:2] if j)


def test_a_job_claimed_by_another_dispatcher_is_not_claimed_again(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = add(session)
    stale = Job.model_validate(job.model_dump())  # what a second dispatcher read a moment ago
    assert crud.claim_next_queued(session).id == job.id
    reads = iter([[stale], []])
    monkeypatch.setattr(crud, "jobs_with_status", lambda *a, **k: next(reads))
    assert crud.claim_next_queued(session) is None
    assert session.get(Job, job.id, populate_existing=True).attempts == 1


def test_active_jobs_per_owner_are_capped(session: Session) -> None:
    for _ in range(2):
        crud.create_job(session, owner="alice", params={}, callback_url=None, runner="local", max_active=2)
    with pytest.raises(crud.TooManyActiveJobs):
        crud.create_job(session, owner="alice", params={}, callback_url=None, runner="local", max_active=2)
    crud.create_job(session, owner="bob", params={}, callback_url=None, runner="local", max_active=2)
    assert crud.count_by_status(session) == {"queued": 3}
