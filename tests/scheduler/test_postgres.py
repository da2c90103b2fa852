"""The service on a real PostgreSQL server (DATABASE_URL), as several replicas run it: the whole
flow through the app, two replicas sharing one database, admission under contention (never
over capacity), and a restart. Each test gets a database of its own on one server per session.

Skips (with the reason) where the PostgreSQL server binaries are absent; CI installs them
through `scripts/setup requirements-dev.txt`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from job_image.storage import LocalStorage
from scheduler import crud, db, job_status
from scheduler.admission.throughput import Throughput
from scheduler.core.config import Settings
from scheduler.dispatcher import Dispatcher
from scheduler.models import Job, Task
from scheduler.runners.local import LocalRunner
from scheduler.tracker import Tracker
from tests.postgres import PostgresServer, Unavailable, running_postgres
from tests.scheduler.conftest import TINY, Client, sign_up_and_in, submit, wait_for
from tests.scheduler.test_db import old_database_gains_new_columns
from tests.scheduler.test_idempotency import QUEUE_ONLY, idempotent_race
from tests.scheduler.test_submit_limits import RACE_SETTINGS, http_race, per_user_race, queue_race

CLOCK_SLACK = timedelta(minutes=2)  # generous: a time-zone mistake is hours, not minutes


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(running_postgres())
        except Unavailable as exc:
            if os.environ.get("REQUIRE_POSTGRES") == "1":  # CI installs it: a skip there is a failure
                pytest.fail(f"REQUIRE_POSTGRES=1 but {exc}")
            pytest.skip(str(exc))
        yield server


@pytest.fixture
def database_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for this test only."""
    with postgres_server.fresh_database() as url:
        yield url


@pytest.fixture
def make_pg_client(database_url: str, make_client: Client) -> Client:
    """make_client on this test's PostgreSQL database. Depends on database_url first, so the
    apps are shut down before the database is dropped."""

    def make(**overrides: Any) -> TestClient:
        return make_client(database_url=database_url, **overrides)

    return make


def engine_of(client: TestClient) -> Engine:
    return client.app.state.service.engine


def jobs_in_db(engine: Engine) -> dict[str, Job]:
    with Session(engine) as session:
        return {job.id: job for job in session.exec(select(Job)).all()}


def parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_whole_flow_on_postgres(make_pg_client: Client) -> None:
    client = make_pg_client()
    assert client.get("/readyz").status_code == 200

    creds = {"username": "alice", "password": "correct-horse"}
    assert client.post("/auth/sign-up", json=creds).status_code == 201
    assert client.post("/auth/sign-up", json=creds).status_code == 409  # PostgreSQL's unique index
    assert client.post("/auth/sign-in", json={**creds, "password": "wrong-horse"}).status_code == 401
    alice = sign_up_and_in(client, "alice")
    bob = sign_up_and_in(client, "bob")

    before = datetime.now(UTC)
    ids = [submit(client, alice, kind=kind)["job_id"] for kind in ("mandelbrot", "julia", "burning_ship")]
    docs = [wait_for(client, job_id, alice) for job_id in ids]
    after = datetime.now(UTC)
    for doc in docs:
        assert doc["status"] == "succeeded", doc
        assert doc["error"] is None and doc["progress"] == 1.0
        stamps = [doc[k] for k in ("created_at", "started_at", "finished_at")]
        # Stored and read back as UTC whatever the server's time zone (the test server's is +05:30),
        # in the same form as on SQLite.
        assert all(ts.endswith("Z") for ts in stamps), doc
        created, started, finished = map(parse_ts, stamps)
        assert before - CLOCK_SLACK <= created <= after + CLOCK_SLACK, doc
        assert created <= started <= finished <= after + CLOCK_SLACK, doc

    png = client.get(f"/jobs/{ids[0]}/result", headers=alice)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert png.headers["etag"] == f'"{hashlib.sha256(png.content).hexdigest()}"'
    meta = client.get(f"/jobs/{ids[0]}/result", params={"file": "result.json"}, headers=alice).json()
    assert meta["job_id"] == ids[0] and meta["width"] == TINY["width"]

    # newest first, filtered by status, paginated; count is all matches, not the page
    page = client.get("/jobs", params={"status": "succeeded", "limit": 2}, headers=alice).json()
    assert page["count"] == 3 and [d["job_id"] for d in page["data"]] == [ids[2], ids[1]]
    rest = client.get("/jobs", params={"status": "succeeded", "limit": 2, "offset": 2}, headers=alice).json()
    assert rest["count"] == 3 and [d["job_id"] for d in rest["data"]] == [ids[0]]
    none = client.get("/jobs", params={"status": "queued"}, headers=alice).json()
    assert none["count"] == 0 and none["data"] == []
    assert client.get("/jobs", params={"status": "done"}, headers=alice).status_code == 422
    far = client.get("/jobs", params={"offset": 2**31 - 1}, headers=alice)  # the largest allowed
    assert far.status_code == 200 and far.json()["count"] == 3 and far.json()["data"] == []
    assert client.get("/jobs", headers=bob).json()["count"] == 0
    assert client.get(f"/jobs/{ids[0]}", headers=bob).status_code == 404

    deleted = client.delete(f"/jobs/{ids[1]}", headers=alice)
    assert deleted.status_code == 200 and deleted.json()["status"] == "succeeded"
    assert client.get(f"/jobs/{ids[1]}", headers=alice).status_code == 404
    assert client.get(f"/jobs/{ids[1]}/result", headers=alice).status_code == 404
    left = client.get("/jobs", headers=alice).json()
    assert left["count"] == 2 and [d["job_id"] for d in left["data"]] == [ids[2], ids[0]]


def test_two_replicas_run_each_job_exactly_once(make_pg_client: Client, tmp_path: Path) -> None:
    """Two apps, each with its own local runner and DATA_DIR, share the database and the result
    storage. Each runner writes `<its DATA_DIR>/logs/<job_id>.log` for every job it starts."""
    results = tmp_path / "results"
    replicas = {name: make_pg_client(data_dir=tmp_path / name, storage_dir=results) for name in ("a", "b")}
    a, b = replicas["a"], replicas["b"]
    alice = sign_up_and_in(a, "alice")  # one account and one secret: the token works on both

    ids = [submit(client, alice)["job_id"] for client in (a, b) * 3]  # both dispatchers wake
    for i, job_id in enumerate(ids):
        doc = wait_for((a, b)[i % 2], job_id, alice)
        assert doc["status"] == "succeeded", doc

    ran_by = {
        job_id: [name for name in replicas if (tmp_path / name / "logs" / f"{job_id}.log").exists()]
        for job_id in ids
    }
    # no job started by both (which replica admits a job is a race: their capacity is shared)
    assert all(len(names) == 1 for names in ran_by.values()), ran_by
    stored = jobs_in_db(engine_of(a))
    assert {job_id: stored[job_id].attempts for job_id in ids} == dict.fromkeys(ids, 1)
    for job_id in ids:
        meta = json.loads((results / "alice" / job_id / "result.json").read_text())
        assert meta["job_id"] == job_id
        # either replica serves any job's result: the record and the storage are shared
        assert b.get(f"/jobs/{job_id}/result", headers=alice).status_code == 200


def decide_at_once(
    engines: list[Engine], settings: Settings, tmp_path: Path, rounds: int, half_lives: list[float]
) -> None:
    """One dispatcher per engine (a replica each, with its fair-share half-life), all running
    `rounds` admission cycles together, each cycle started at once by a barrier."""
    async def report(_: Any) -> bool:
        return True

    dispatchers = [
        Dispatcher(engine, LocalRunner(settings, report, LocalStorage(tmp_path / "results")),
                   Tracker(engine, max_attempts=3), retry_max_seconds=1.0, throughput=Throughput(),
                   half_life=half_life)
        for engine, half_life in zip(engines, half_lives, strict=True)
    ]
    start = threading.Barrier(len(dispatchers))

    def cycles(dispatcher: Dispatcher) -> None:
        for _ in range(rounds):
            start.wait(timeout=30)
            dispatcher.decide(dispatcher.runner.view())  # None when another replica won: nothing changed

    with ThreadPoolExecutor(len(dispatchers)) as pool:
        list(pool.map(cycles, dispatchers))


def test_replicas_never_over_admit(database_url: str, tmp_path: Path) -> None:
    """Four dispatchers (four replicas' engines) run their admission cycle at once, over and
    over, on one queue: no class ever holds more admitted jobs than its capacity.

    The replicas disagree on purpose, as replicas with differently learned figures do: half
    of them have forgotten user0's earlier work (a short half-life), half still count it, so
    they would admit different jobs for the same free slots; only one may."""
    workers, rounds = 4, 10
    settings = Settings(data_dir=tmp_path, database_url=database_url, local_max_concurrent=3, local_gpus=1)
    engines = [db.make_engine(database_url) for _ in range(workers)]
    try:
        db.init_db(engines[0])
        with Session(engines[0]) as session:
            create = functools.partial(job_status.create, session, callback_url=None, runner="local",
                                       max_active=100, estimated_iterations=1e9)
            for _ in range(2):  # user0's earlier, long renders
                done = create(owner="user0", params={**TINY, "device": "cpu"}, estimated_iterations=1e14)
                done.status, done.placement = "succeeded", "cpu"
                done.admitted_at = datetime.now(UTC) - timedelta(seconds=1000)
                session.add(done)
                session.commit()
            for i in range(20):
                create(owner=f"user{i % 5}", params={**TINY, "device": "gpu" if i % 4 == 3 else "cpu"})

        decide_at_once(engines, settings, tmp_path, rounds, half_lives=[1e6, 10.0] * (workers // 2))
        admitted = [job for job in jobs_in_db(engines[0]).values() if job.status == "pending"]
        assert sorted(job.placement for job in admitted) == ["cpu", "cpu", "cpu", "gpu"]  # capacity, exactly
        assert all(job.attempts == 1 for job in admitted)
        with Session(engines[0]) as session:  # each change logged once, in its own transaction
            events = crud.events_after(session, seq=0, limit=100_000)
        assert len({e.seq for e in events}) == len(events)
        for job in admitted:  # admitted once: one `pending` event, after its last `queued` one
            statuses = [e.document["status"] for e in events if e.job_id == job.id]
            assert statuses.count("pending") == 1 and statuses[-1] == "pending", statuses
    finally:
        for engine in engines:
            engine.dispose()


def test_replicas_admit_an_arrays_tasks_never_over_capacity(database_url: str, tmp_path: Path) -> None:
    """Render arrays: four replicas admit task by task at once; the admitted tasks never exceed
    the class's capacity, each is admitted once, and the big array leaves room for the single
    jobs of others (tasks are the unit of fair share)."""
    workers, rounds = 4, 8
    settings = Settings(data_dir=tmp_path, database_url=database_url, local_max_concurrent=5, local_gpus=0)
    engines = [db.make_engine(database_url) for _ in range(workers)]
    try:
        db.init_db(engines[0])
        with Session(engines[0]) as session:
            create = functools.partial(job_status.create, session, callback_url=None, runner="local",
                                       max_active=100, estimated_iterations=1e9,
                                       params={**TINY, "device": "cpu"})
            big = create(owner="user0", array={"split": 64}, tasks=64).id
            singles = {create(owner=f"user{i}").id for i in range(1, 4)}

        decide_at_once(engines, settings, tmp_path, rounds, half_lives=[10.0] * workers)
        with Session(engines[0]) as session:
            admitted = session.exec(select(Task).where(Task.status == "pending")).all()
            assert len(admitted) == 5 and all(t.admissions == 1 for t in admitted)  # capacity, exactly
            assert {t.job_id for t in admitted} >= singles  # none waits behind the array
            doc = session.get(Job, big)
            assert doc.task_counts == {"queued": 62, "running": 2, "succeeded": 0, "failed": 0}
    finally:
        for engine in engines:
            engine.dispose()


@pytest.mark.parametrize("race", [queue_race, per_user_race], ids=["queue", "per_user"])
def test_submits_racing_on_two_replicas_never_overshoot(database_url: str, race: Any) -> None:
    """MAX_QUEUED_JOBS and MAX_ACTIVE_JOBS_PER_USER, counted on two engines at once."""
    engines = [db.make_engine(database_url) for _ in range(2)]
    try:
        db.init_db(engines[0])
        race(engines)
    finally:
        for engine in engines:
            engine.dispose()


def test_two_replicas_answer_429_past_a_full_queue(make_pg_client: Client, tmp_path: Path) -> None:
    http_race([make_pg_client(data_dir=tmp_path / name, **RACE_SETTINGS) for name in ("a", "b")])


def test_one_key_racing_on_two_replicas_is_one_job(make_pg_client: Client, tmp_path: Path) -> None:
    idempotent_race([make_pg_client(data_dir=tmp_path / name, **QUEUE_ONLY) for name in ("a", "b")])


def test_an_old_database_gains_the_new_columns(database_url: str) -> None:
    engine = db.make_engine(database_url)
    try:
        old_database_gains_new_columns(engine)
    finally:
        engine.dispose()


def test_restart_keeps_accounts_tokens_and_queued_jobs(make_pg_client: Client, tmp_path: Path) -> None:
    """All state lives in PostgreSQL: the new app has a different, empty DATA_DIR."""
    secret = "postgres-restart-secret-" + "z" * 40
    first = make_pg_client(jwt_secret=secret, local_max_concurrent=0, data_dir=tmp_path / "first")
    alice = sign_up_and_in(first, "alice")
    queued, interrupted = (submit(first, alice)["job_id"] for _ in range(2))
    first.__exit__(None, None, None)
    with Session(engine_of(first)) as session:  # as a crash mid-render leaves a running job
        job, task = session.get(Job, interrupted), session.get(Task, (interrupted, 0))
        job.status, job.attempts = "running", 1
        task.status, task.admissions = "running", 1
        session.add_all([job, task])
        session.commit()

    second = make_pg_client(jwt_secret=secret, data_dir=tmp_path / "second")
    listed = second.get("/jobs", headers=alice)  # the token from before the restart
    assert listed.status_code == 200, listed.text
    assert {d["job_id"] for d in listed.json()["data"]} == {queued, interrupted}
    creds = {"username": "alice", "password": "correct-horse"}
    assert second.post("/auth/sign-up", json=creds).status_code == 409
    assert second.post("/auth/sign-in", json=creds).status_code == 200

    for job_id in (queued, interrupted):
        doc = wait_for(second, job_id, alice)
        assert doc["status"] == "succeeded", doc
        assert second.get(f"/jobs/{job_id}/result", headers=alice).status_code == 200
    stored = jobs_in_db(engine_of(second))
    assert (stored[queued].attempts, stored[interrupted].attempts) == (1, 2)


def test_replicas_act_only_on_their_own_jobs(make_pg_client: Client, tmp_path: Path) -> None:
    """Three replicas on one database: a long job runs on `a`; `b` starts meanwhile (its start-up
    recovery) and `c` reconciles with a short grace. Nothing of `a`'s is failed or re-queued
    while `a` beats. Once `a` is gone (its process ended with it, its heartbeat stopped), its job
    is re-queued and runs again on another replica."""
    fast = {
        "reconcile_interval_seconds": 0.1, "job_lost_after_seconds": 0.5, "replica_heartbeat_seconds": 0.1,
        "replica_lost_after_seconds": 2, "storage_dir": tmp_path / "results",
    }
    long_job = tmp_path / "long-job"  # a's "interpreter": a job process that runs until stopped
    long_job.write_text('#!/bin/sh\necho "progress 0%"\nexec sleep 600\n')
    long_job.chmod(0o700)
    a = make_pg_client(data_dir=tmp_path / "a", job_python=str(long_job), **fast)
    alice = sign_up_and_in(a, "alice")
    job_id = submit(a, alice)["job_id"]
    wait_for(a, job_id, alice, ("running",))
    pid = int((tmp_path / "a" / "local-jobs" / f"{job_id}.pid").read_text())

    b = make_pg_client(data_dir=tmp_path / "b", **fast)
    c = make_pg_client(data_dir=tmp_path / "c", **fast)
    # a long-poll through c outlasting many of its reconciler's rounds, and a's heartbeat limit
    doc = c.get(f"/jobs/{job_id}", params={"wait": 8}, headers=alice).json()
    assert doc["status"] == "running", doc
    job = jobs_in_db(engine_of(c))[job_id]
    a_id = (tmp_path / "a" / "replica_id").read_text().strip()
    assert (job.status, job.attempts, job.replica) == ("running", 1, a_id)
    assert Path(f"/proc/{pid}").exists()  # a's process, untouched

    a.__exit__(None, None, None)  # a stops: its job's process with it, and its heartbeat
    doc = wait_for(c, job_id, alice, timeout=120)
    assert doc["status"] == "succeeded", doc
    job = jobs_in_db(engine_of(c))[job_id]
    assert job.attempts == 2 and job.replica not in (None, a_id), job  # re-queued once, run by b or c
    assert b.get(f"/jobs/{job_id}/result", headers=alice).status_code == 200
