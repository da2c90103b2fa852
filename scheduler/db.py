"""The database engine: SQLite in DATA_DIR by default, any SQLAlchemy URL (PostgreSQL) otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, text
from sqlmodel import SQLModel, create_engine

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


def init_db(engine: Engine) -> None:
    from scheduler import models  # noqa: F401  (registers the tables)

    SQLModel.metadata.create_all(engine)


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
