"""Throughput learning: each succeeded job's `result.json` and wall time teach its device class's
rate for the method it rendered with (admission/throughput.py), read off the event loop, one small
task per job."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from sqlalchemy import Engine

from job_image.storage import Storage, StorageError
from scheduler import crud, db
from scheduler.admission.throughput import Throughput
from scheduler.models import Job
from scheduler.stored import read_object
from scheduler.tracker import seconds_between

log = logging.getLogger(__name__)

PRIME_JOBS = 20  # finished jobs read at start to learn throughput from (a few result.json reads)


class Learning:
    def __init__(self, engine: Engine, storage: Storage, throughput: Throughput) -> None:
        self.engine, self.storage, self.throughput = engine, storage, throughput
        self._tasks: set[asyncio.Task[None]] = set()

    async def prime(self) -> None:
        """Learn from the latest succeeded jobs, as if they had just ended."""
        for job in await db.in_thread(self.engine, lambda s: crud.recently_succeeded(s, limit=PRIME_JOBS)):
            self.learn(job)

    def learn(self, job: Job) -> None:
        """Fold the succeeded `job` in, in the background."""
        task = asyncio.get_running_loop().create_task(self._learn(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def _learn(self, job: Job) -> None:
        wall = seconds_between(job.started_at, job.finished_at)
        if job.placement not in ("cpu", "gpu") or wall is None:
            return
        try:
            data = await asyncio.to_thread(read_object, self.storage, f"{job.result_prefix}result.json")
            doc: Any = json.loads(data) if data else None
        except (StorageError, ValueError) as exc:  # the estimate just stays as it was
            log.warning("job %s: result.json unreadable for the throughput: %s", job.id, exc)
            return
        if isinstance(doc, dict) and self.throughput.learn(job.placement, doc, wall):  # type: ignore[arg-type]
            c, method = self.throughput.classes[job.placement], doc.get("precision", "float32")  # type: ignore[index]
            log.info("%s %s throughput: %.3g iterations/s, %.2f s start-up", job.placement, method,
                     c.rate(method), c.startup)
