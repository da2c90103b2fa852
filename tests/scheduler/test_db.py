"""An existing database made by an older version gains the columns added since."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import JSON, Column, DateTime, Engine, Integer, MetaData, String, Table, inspect
from sqlmodel import Session

from scheduler import crud, db, job_status
from scheduler.models import JobPublic


def test_columns_added_since_are_added_to_an_old_database(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    old_database_gains_new_columns(engine)
    engine.dispose()


def old_database_gains_new_columns(engine: Engine) -> None:
    """Also run on PostgreSQL by test_postgres.py."""
    old = MetaData()  # the tables as the version before callbacks' state and webhook secrets
    Table(
        "user",
        old,
        Column("id", Integer, primary_key=True),
        Column("username", String, unique=True),
        Column("password_hash", String, nullable=False),
        Column("created_at", DateTime, nullable=False),
    )
    Table(
        "job",
        old,
        Column("id", String(32), primary_key=True),
        Column("owner", String, nullable=False),
        Column("status", String, nullable=False),
        Column("params", JSON, nullable=False),
        Column("callback_url", String),
        Column("created_at", DateTime, nullable=False),
        Column("started_at", DateTime),
        Column("finished_at", DateTime),
        Column("error", String),
        Column("message", String),
        Column("progress", Integer),
        Column("attempts", Integer, nullable=False),
        Column("runner", String, nullable=False),
    )
    old.create_all(engine)
    db.init_db(engine)
    db.init_db(engine)  # and again: nothing left to add
    columns = {c["name"] for c in inspect(engine).get_columns("job")}
    assert {"callback_state", "callback_attempts", "callback_next_at", "cached", "storage_prefix"} <= columns
    with Session(engine, expire_on_commit=False) as session:
        crud.create_user(session, username="alice", password_hash="x")
        assert crud.webhook_secret(session, username="alice").startswith("whsec_")
        job = job_status.create(
            session,
            owner="alice",
            params={},
            callback_url="https://example.com/h",
            runner="local",
            max_active=1,
        )
    assert JobPublic.of(job).callback is not None and JobPublic.of(job).callback.attempts == 0
    assert JobPublic.of(job).cached is False
