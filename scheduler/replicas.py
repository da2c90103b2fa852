"""Replicas and ownership (docs/design.md): several services may share one database, and a job a
replica runs as a local process is that replica's alone to re-queue, fail or clean up.

Each replica has an id, kept in its DATA_DIR (which only one service holds at a time, see
core/lock.py: a restarted service is the same replica and takes its jobs back at once), and a
heartbeat row it writes every REPLICA_HEARTBEAT_SECONDS. A job admitted for a local process
records its replica. Another replica's job may be acted on only once that replica's heartbeat
is older than REPLICA_LOST_AFTER_SECONDS, and only by a replica whose own heartbeat has been
written without a gap for that long: after a database outage every heartbeat is old, and no
replica takes the others' jobs before they have had the time to beat again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from scheduler.core import files
from scheduler.models import Job, Replica, utcnow

log = logging.getLogger(__name__)

ID_FILE = "replica_id"


def load_id(data_dir: Path) -> str:
    """This DATA_DIR's replica id, made once."""
    path = data_dir / ID_FILE
    if not path.exists():
        files.private_file(path)
        path.write_text(uuid.uuid4().hex + "\n")
    return path.read_text().strip()


class Replicas:
    def __init__(
        self, engine: Engine, replica_id: str, *, heartbeat_seconds: float, lost_after: float
    ) -> None:
        self.engine, self.id = engine, replica_id
        self.heartbeat_seconds, self.lost_after = heartbeat_seconds, lost_after
        self._last_beat: float | None = None  # monotonic time of the last heartbeat written
        self._steady_since: float | None = None  # heartbeats written without a gap since then

    def _write_heartbeat(self) -> None:
        with Session(self.engine) as session:
            row = session.get(Replica, self.id) or Replica(id=self.id, host="", pid=0, heartbeat_at=utcnow())
            row.host, row.pid, row.heartbeat_at = socket.gethostname()[:255], os.getpid(), utcnow()
            session.add(row)
            session.commit()

    async def beat(self) -> None:
        """Write the heartbeat (off the loop); a failure is logged and breaks the steady run."""
        try:
            await asyncio.to_thread(self._write_heartbeat)
        except Exception as exc:  # the database is away: the next beat tries again
            log.warning("replica %s: heartbeat not written: %s", self.id, exc)
            return
        now = time.monotonic()
        if self._last_beat is None or now - self._last_beat > 2 * self.heartbeat_seconds:
            self._steady_since = now
        self._last_beat = now

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            await self.beat()

    def may_judge(self) -> bool:
        """Whether this replica may take another for gone (see the module's docstring)."""
        since = self._steady_since
        return since is not None and time.monotonic() - since >= self.lost_after

    def ours(self, session: Session, jobs: list[Job]) -> list[Job]:
        """Those of `jobs` this replica may act on: its own, those of no replica (Kubernetes
        Jobs, which every replica follows), and those of replicas gone silent."""
        others = {job.replica for job in jobs} - {None, self.id}
        if not others or not self.may_judge():
            return [job for job in jobs if job.replica in (None, self.id)]
        cutoff = utcnow() - timedelta(seconds=self.lost_after)
        alive = set(session.exec(
            select(Replica.id).where(col(Replica.id).in_(others), col(Replica.heartbeat_at) >= cutoff)
        ))
        return [job for job in jobs if job.replica not in alive]
