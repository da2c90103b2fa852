"""The database engine: SQLite in DATA_DIR by default, any SQLAlchemy URL (PostgreSQL) otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    Table,
    event,
    insert,
    inspect,
    literal,
    select,
    text,
    update,
)
from sqlmodel import Session, SQLModel, create_engine

from scheduler.core import files


def make_engine(database_url: str) -> Engine:
    if not database_url.startswith("sqlite"):
        return create_engine(database_url, pool_pre_ping=True)
    path = database_url.split("///", 1)[-1].split("?", 1)[0]
    if path and path != ":memory:" and "///" in database_url:
        files.private_file(Path(path))  # it holds the password hashes; WAL and SHM take its mode
    engine = create_engine(database_url, connect_args={"check_same_thread": False, "timeout": 10})

    @event.listens_for(engine, "connect")
    def _pragmas(conn: Any, _record: Any) -> None:
        # WAL lets status reads go on while the tracker writes; NORMAL sync is safe with WAL.
        cur = conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.close()

    return engine


T = TypeVar("T")


async def in_thread(engine: Engine, work: Callable[[Session], T]) -> T:
    """`work(session)` in a worker thread, with a short session whose objects stay readable.

    Every DB call of the service goes through here (or another thread): a query waiting on a
    lock, a full disk or a slow server then holds one worker thread, never the event loop, so
    health checks and every other request go on meanwhile. (The one exception, the status
    read of one job on SQLite in scheduler/job_reads.py, cannot wait: it raises where it would.)
    """
    return await asyncio.to_thread(in_session, engine, work)


async def read_in_thread(engine: Engine, read: Callable[[Connection], T]) -> T:
    """`read(connection)` in a worker thread, on a bare pooled connection: for the reads on the
    hot path, where an ORM session's set-up and close cost more than the query."""
    return await asyncio.to_thread(_on_connection, engine, read)


def _on_connection(engine: Engine, read: Callable[[Connection], T]) -> T:
    with engine.connect() as connection:
        return read(connection)


def in_session(engine: Engine, work: Callable[[Session], T]) -> T:
    """`work(session)` here, with a short session (in_thread's worker; for a thread of one's own)."""
    with Session(engine, expire_on_commit=False) as session:
        return work(session)


def init_db(engine: Engine) -> None:
    from scheduler import models  # noqa: F401  (registers the tables)

    SQLModel.metadata.create_all(engine)
    add_missing_columns(engine)
    add_missing_tasks(engine)


def add_missing_columns(engine: Engine) -> None:
    """`create_all` makes missing tables, not missing columns: add the columns a newer version
    declares (nullable, or with a plain default) and their indexes, so a database made by an
    older version keeps working after an upgrade."""
    inspector = inspect(engine)
    with engine.begin() as conn:
        for table in SQLModel.metadata.sorted_tables:
            have = {column["name"] for column in inspector.get_columns(table.name)}
            missing = [column for column in table.columns if column.name not in have]
            for column in missing:
                name = engine.dialect.identifier_preparer.format_table(table)  # "user" is reserved
                conn.execute(text(f"ALTER TABLE {name} ADD COLUMN {_column_ddl(column, engine)}"))
            if missing:
                for index in table.indexes:
                    index.create(conn, checkfirst=True)


def add_missing_tasks(engine: Engine) -> None:
    """Jobs recorded before tasks existed become one task each, in the job's status, so an
    upgrade finds its active jobs' tasks (admission and reports move tasks)."""
    from scheduler.models import Job, Task

    job, task = Job.__table__, Task.__table__  # type: ignore[attr-defined]
    orphans = select(job.c.id, literal(0), job.c.status, job.c.placement, job.c.attempts, job.c.admitted_at,
                     job.c.started_at, job.c.finished_at, job.c.progress, job.c.error)
    orphans = orphans.where(~select(task.c.job_id).where(task.c.job_id == job.c.id).exists())
    columns = ["job_id", "index", "status", "placement", "admissions", "admitted_at", "started_at",
               "finished_at", "progress", "error"]
    with engine.begin() as conn:
        conn.execute(insert(task).from_select(columns, orphans))


def _column_ddl(column: Column[Any], engine: Engine) -> str:
    name = engine.dialect.identifier_preparer.quote(column.name)
    ddl = f"{name} {column.type.compile(engine.dialect)}"
    if column.nullable:
        return ddl
    default = getattr(column.default, "arg", None)
    if not isinstance(default, int | float | str):
        raise RuntimeError(f"cannot add the required column {column.table.name}.{column.name} by itself")
    if isinstance(default, bool):  # PostgreSQL's booleans take no 0 or 1; SQLite reads TRUE as 1
        value = str(default).upper()
    else:
        value = repr(default) if isinstance(default, str) else str(default)
    return f"{ddl} NOT NULL DEFAULT {value}"


# One row that /readyz rewrites: a database that can be reached but not written (a full disk, a
# read-only file or server) is not ready, and `SELECT 1` would not notice.
readiness_probe = Table(
    "readiness_probe",
    SQLModel.metadata,
    Column("id", Integer, primary_key=True),
    Column("checked_at", DateTime(timezone=True), nullable=False),
)


def check(engine: Engine) -> None:
    """What requests need of the database: the tables can be read and a row can be written."""
    from scheduler.models import Job, User

    with engine.begin() as conn:
        for table in (User.__table__, Job.__table__):
            conn.execute(select(literal(1)).select_from(table).limit(1))
        now = datetime.now(UTC)
        row = readiness_probe.c.id == 1
        if conn.execute(update(readiness_probe).where(row).values(checked_at=now)).rowcount == 0:
            conn.execute(insert(readiness_probe).values(id=1, checked_at=now))


def describe(exc: BaseException) -> str:
    """The driver's own first line ("database or disk is full"), without SQLAlchemy's SQL and links."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return (reason[0] if reason else type(exc).__name__)[:300].rstrip(".")
