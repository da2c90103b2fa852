"""MAX_QUEUED_JOBS and MAX_ACTIVE_JOBS_PER_USER hold when submits race: many threads submit at
once and no bound is ever overshot; each refused submit is refused whole (no job, no event).
On PostgreSQL, with two replicas' engines: test_postgres.py."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from scheduler import db, job_status
from scheduler.models import Job, JobEvent
from tests.scheduler.conftest import TINY, Client, sign_up_and_in

SUBMITTERS = 24
LIMIT = 5
TIMEOUT = 60  # seconds for the barrier: every thread is there long before
T = TypeVar("T")


def race(count: int, submit: Callable[[int], T]) -> list[T | Exception]:
    """`submit(i)` from `count` threads released at once; each one's result or exception."""
    start = threading.Barrier(count)

    def one(i: int) -> T | Exception:
        start.wait(timeout=TIMEOUT)
        try:
            return submit(i)
        except Exception as exc:  # the refusals are what is asserted
            return exc

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def create_racing(engines: Sequence[Engine], owner: Callable[[int], str], *, max_active: int,
                  max_queued: int) -> list[Job | Exception]:
    """SUBMITTERS threads create jobs at once, taking turns over the engines (one per replica)."""

    def submit(i: int) -> Job:
        with Session(engines[i % len(engines)], expire_on_commit=False) as session:
            return job_status.create(session, owner=owner(i), params=TINY, callback_url=None, runner="local",
                                     max_active=max_active, max_queued=max_queued)

    return race(SUBMITTERS, submit)


def assert_bound_held(engine: Engine, outcomes: list[Job | Exception], refusal: type[Exception]) -> None:
    """LIMIT jobs made, exactly; the rest refused with `refusal`; nothing stored for them."""
    made = [o for o in outcomes if isinstance(o, Job)]
    refused = [o for o in outcomes if not isinstance(o, Job)]
    assert len(made) == LIMIT, [type(o).__name__ for o in outcomes]
    assert all(isinstance(o, refusal) for o in refused), refused
    with Session(engine) as session:
        stored = set(session.exec(select(Job.id)).all())
        logged = set(session.exec(select(JobEvent.job_id)).all())
        assert session.exec(select(func.count()).select_from(JobEvent)).one() == LIMIT
    assert stored == logged == {job.id for job in made}


def queue_race(engines: Sequence[Engine]) -> None:
    """Also run on PostgreSQL by test_postgres.py."""
    outcomes = create_racing(engines, lambda i: f"user{i}", max_active=100, max_queued=LIMIT)
    assert_bound_held(engines[0], outcomes, job_status.QueueFull)


def per_user_race(engines: Sequence[Engine]) -> None:
    """Also run on PostgreSQL by test_postgres.py."""
    outcomes = create_racing(engines, lambda i: "alice", max_active=LIMIT, max_queued=1000)
    assert_bound_held(engines[0], outcomes, job_status.TooManyActiveJobs)


@pytest.mark.parametrize("race", [queue_race, per_user_race], ids=["queue", "per_user"])
def test_racing_submits_never_overshoot(tmp_path: Path, race: Callable[[Sequence[Engine]], None]) -> None:
    """MAX_QUEUED_JOBS and MAX_ACTIVE_JOBS_PER_USER, counted by many threads of one replica."""
    engine = db.make_engine(f"sqlite:///{tmp_path / 'race.db'}")
    try:
        db.init_db(engine)
        race([engine])
    finally:
        engine.dispose()


def http_race(replicas: Sequence[TestClient]) -> None:
    """Also run on PostgreSQL by test_postgres.py. A full queue (MAX_QUEUED_JOBS = LIMIT, no
    slot to run in) answers every submit past it with a 429 and Retry-After; the replicas
    share the database, so together they hold LIMIT jobs."""
    users = [sign_up_and_in(replicas[0], f"user{i}") for i in range(SUBMITTERS)]

    def submit(i: int) -> httpx.Response:
        return replicas[i % len(replicas)].post("/jobs", json=TINY, headers=users[i])

    answers = [a for a in race(SUBMITTERS, submit) if isinstance(a, httpx.Response)]
    codes = sorted(a.status_code for a in answers)
    assert codes == [202] * LIMIT + [429] * (SUBMITTERS - LIMIT), [a.text for a in answers]
    for answer in answers:
        if answer.status_code == 429:
            assert answer.headers["retry-after"] == "9"
            assert answer.json()["detail"].startswith(f"The queue is full ({LIMIT} jobs wait")
    counts = [replicas[0].get("/jobs", headers=user).json()["count"] for user in users]
    assert sorted(counts) == [0] * (SUBMITTERS - LIMIT) + [1] * LIMIT


def test_racing_http_submits_are_202_up_to_the_bound_then_429(make_client: Client) -> None:
    http_race([make_client(**RACE_SETTINGS)])


RACE_SETTINGS = {"local_max_concurrent": 0, "max_queued_jobs": LIMIT, "queue_full_retry_after_seconds": 9,
                 "signups_per_minute": SUBMITTERS}
