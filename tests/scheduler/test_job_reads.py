"""A user's job by id (scheduler/job_reads.py). On SQLite the read on the loop gives the same job,
typed as the Core query types it, for its owner only, and raises at once where it cannot read now;
JobReads then reads in a thread."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine
from sqlmodel import Session

from scheduler import crud
from scheduler.job_reads import JobReads, LoopReads
from scheduler.models import Job, utcnow


def every_column_set() -> Job:
    """A job with no column left at its default or None: each type's conversion is exercised."""
    now = utcnow()
    return Job(
        id="a" * 32, owner="alice", status="failed", params={"width": 64, "center": ["-0.5", "0"]},
        callback_url="http://127.0.0.1:9/hook", callback_state="pending", callback_attempts=2,
        callback_last_error="refused", callback_next_at=now + timedelta(seconds=30), created_at=now,
        started_at=now + timedelta(seconds=1), finished_at=now + timedelta(seconds=2), error="exit 1",
        message="waiting", progress=0.5, attempts=3, runner="local", priority="high",
        estimated_iterations=1.5e9, placement="gpu", admitted_at=now, queue_position=4,
        estimated_start_at=now, estimated_finish_at=now + timedelta(seconds=9), replica="r" * 32,
        cache_key="c" * 64, storage_prefix="jobs/" + "b" * 32, follows="b" * 32, cached=True,
        array={"split": 4}, tasks_total=4, task_counts={"succeeded": 3, "failed": 1}, failed_tasks=[2],
    )


def test_the_row_is_the_one_the_core_query_returns(engine: Engine) -> None:
    full = every_column_set()
    assert all(value is not None for value in full.model_dump().values())
    with Session(engine) as session:
        session.add(full)
        session.add(Job(id="b" * 32, owner="alice", status="queued", params={}, runner="local"))
        session.commit()
    reads = LoopReads.for_engine(engine)
    assert reads is not None
    with engine.connect() as connection:
        for job_id in ("a" * 32, "b" * 32):
            expected = crud.read_owned_job(connection, job_id=job_id, owner="alice")
            got = reads.read_owned_job(job_id, "alice")
            assert expected is not None and got is not None
            assert got.model_dump() == expected.model_dump()
            assert type(got.created_at) is type(expected.created_at)
    assert reads.read_owned_job("a" * 32, "bob") is None  # another user's job: as if missing
    assert reads.read_owned_job("c" * 32, "alice") is None
    reads.close()


def test_it_reads_what_was_committed_since_and_never_writes(engine: Engine) -> None:
    reads = LoopReads.for_engine(engine)
    assert reads is not None
    assert reads.read_owned_job("a" * 32, "alice") is None  # the connection is open from here on
    with Session(engine) as session:
        session.add(every_column_set())
        session.commit()
    job = reads.read_owned_job("a" * 32, "alice")
    assert job is not None and job.status == "failed"
    with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|query_only"):
        reads._open().execute("DELETE FROM job")
    reads.close()
    reads.close()  # twice: harmless (a service stopped twice)


def test_other_databases_keep_the_threaded_read(tmp_path: Path) -> None:
    assert LoopReads.for_engine(create_engine("postgresql+psycopg://u:p@127.0.0.1:9/db")) is None
    assert LoopReads.for_engine(create_engine("sqlite://")) is None
    assert LoopReads.for_engine(create_engine("sqlite:///:memory:")) is None
    assert LoopReads.for_engine(create_engine(f"sqlite:///{tmp_path / 'x.db'}")) is not None


def test_job_reads_wait_in_a_thread_where_the_loop_cannot_read(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Session(engine) as session:
        session.add(every_column_set())
        session.commit()
    reads = JobReads(engine)
    assert reads.loop is not None
    on_the_loop = asyncio.run(reads.owned("a" * 32, "alice"))

    def locked(job_id: str, owner: str) -> None:
        raise sqlite3.OperationalError("database is locked")  # what busy timeout 0 gives at once

    monkeypatch.setattr(reads.loop, "read_owned_job", locked)
    in_a_thread = asyncio.run(reads.owned("a" * 32, "alice"))
    assert on_the_loop is not None and in_a_thread is not None
    assert in_a_thread.model_dump() == on_the_loop.model_dump()
    assert asyncio.run(reads.owned("a" * 32, "bob")) is None
    reads.close()
