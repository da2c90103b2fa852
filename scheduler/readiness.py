"""What `/readyz` checks: the database, the storage and the runner, each bounded in time."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from sqlalchemy import Engine

from job_image.storage import Storage
from scheduler import db
from scheduler.runners.base import Runner


class Readiness:
    def __init__(self, engine: Engine, storage: Storage, runner: Runner, *, timeout: float) -> None:
        self.engine, self.storage, self.runner, self.timeout = engine, storage, runner, timeout

    async def problems(self, exclude: Collection[str] = ()) -> dict[str, str]:
        """A sentence per part that cannot work, none when ready."""
        found: dict[str, str] = {}
        checks = {
            "database": lambda: asyncio.to_thread(db.check, self.engine),
            "storage": lambda: asyncio.to_thread(self.storage.check),
            "runner": self.runner.check,
        }
        for name, check in checks.items():
            if name in exclude:
                continue
            try:
                await asyncio.wait_for(check(), self.timeout)
            except Exception as exc:  # whatever the failure, the answer is "not ready, because ..."
                found[name] = db.describe(exc)
        return found
