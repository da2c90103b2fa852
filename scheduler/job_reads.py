"""A user's job by id, read the cheapest way the database allows: every status poll, long-poll
and route on one job starts with this read.

On SQLite it is read on the event loop itself. Profiling `GET /jobs/{id}` showed the hop to a
worker thread (~150 µs) and SQLAlchemy's execution of the Core query (~80 µs) costing more than
the rest of the poll together, while SQLite answers the point read in ~15 µs. So on SQLite the
read is LoopReads: one raw connection, the same SELECT compiled once, and the columns converted
by the column types' own result processors (a row equal to the one the Core query returns).

It runs on the loop because it cannot wait: the connection is read-only with a busy timeout of
0, so a locked database (or any other sqlite3 error) raises at once and the caller falls back to
the threaded read. Only a hung disk could stall it, and SQLite's DATA_DIR is local.
Other databases are read in a worker thread, on a bare pooled connection.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from scheduler import crud, db
from scheduler.crud import OWNED_JOB
from scheduler.models import Job


class JobReads:
    """`owned(job_id, owner)`: the job if `owner` has it, else None (another user's job is as if
    missing)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.loop = LoopReads.for_engine(engine)

    async def owned(self, job_id: str, owner: str) -> Job | None:
        if self.loop is not None:
            with contextlib.suppress(sqlite3.Error):  # SQLite cannot answer at once: wait in a thread
                return self.loop.read_owned_job(job_id, owner)
        return await read_in_thread(self.engine, job_id, owner)

    def close(self) -> None:
        if self.loop is not None:
            self.loop.close()


async def read_in_thread(engine: Engine, job_id: str, owner: str) -> Job | None:
    """The read in a worker thread, on a bare pooled connection (any database)."""
    return await db.read_in_thread(engine, lambda c: crud.read_owned_job(c, job_id=job_id, owner=owner))


class LoopReads:
    """Reads a user's job without leaving the calling thread (SQLite files only: see `for_engine`)."""

    def __init__(self, path: str, engine: Engine) -> None:
        compiled = OWNED_JOB.compile(dialect=engine.dialect)
        self._sql = str(compiled)
        self._params: list[str] = list(compiled.positiontup or [])
        self._columns: list[tuple[str, Callable[[Any], Any] | None]] = [
            (column.name, column.type.dialect_impl(engine.dialect).result_processor(engine.dialect, None))
            for column in OWNED_JOB.selected_columns
        ]
        self._path = path
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # open and close may race (a test's service stops from another thread)

    @classmethod
    def for_engine(cls, engine: Engine) -> LoopReads | None:
        """The reader for an SQLite file; None for other databases (their reads stay in threads)."""
        database = engine.url.database
        if engine.url.get_backend_name() != "sqlite" or not database or database == ":memory:":
            return None
        return cls(database, engine)

    def read_owned_job(self, job_id: str, owner: str) -> Job | None:
        """The job if `owner` has it; raises sqlite3.Error at once where SQLite cannot answer now."""
        values = {"job_id": job_id, "owner": owner}
        row = self._open().execute(self._sql, [values[name] for name in self._params]).fetchone()
        if row is None:
            return None
        return Job.model_construct(**{
            name: value if convert is None or value is None else convert(value)
            for (name, convert), value in zip(self._columns, row, strict=True)
        })

    def _open(self) -> sqlite3.Connection:
        with self._lock:
            if self._connection is None:
                connection = sqlite3.connect(
                    self._path, timeout=0, isolation_level=None, check_same_thread=False
                )
                connection.execute("PRAGMA query_only=ON")
                self._connection = connection
            return self._connection

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
