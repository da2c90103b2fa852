"""Nothing stays active for ever: a pending or running record that no runner follows any more
(its end was lost, its process vanished) is ended, with the reason, after a grace period.

The runner says what it follows (`live()`); a runner that cannot tell (no `live`) keeps to its
own bookkeeping. Ends the tracker is still retrying to write are not lost. The grace covers a job
claimed a moment ago that the dispatcher has not handed to the runner yet.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import Engine

from scheduler import crud, db
from scheduler.runners.base import Runner, StatusReport
from scheduler.statuses import WITH_RUNNER
from scheduler.tracker import Tracker

log = logging.getLogger(__name__)


def lost_reason(grace: float) -> str:
    return (
        "the job's process was gone and its end was not recorded "
        f"(no runner followed it for {grace:g} seconds)"
    )


class Reconciler:
    def __init__(
        self, engine: Engine, runner: Runner, tracker: Tracker, *, interval: float, grace: float
    ) -> None:
        self.engine, self.runner, self.tracker = engine, runner, tracker
        self.interval, self.grace = interval, grace
        self._unseen: dict[str, float] = {}  # job id -> when it was first found unfollowed

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.reconcile()
            except Exception:  # a DB hiccup: the next round looks again
                log.warning("reconciling active jobs failed", exc_info=True)

    async def reconcile(self) -> list[str]:
        """One round: note the active records no runner follows; end those unfollowed for the
        whole grace period. Returns the ids it ended."""
        active = await db.in_thread(self.engine, lambda s: crud.jobs_with_status(s, statuses=WITH_RUNNER))
        followed = set(self.runner.live()) | set(self.tracker.unwritten)  # type: ignore[attr-defined]
        now = asyncio.get_running_loop().time()
        self._unseen = {j.id: self._unseen.get(j.id, now) for j in active if j.id not in followed}
        ended = [job_id for job_id, since in self._unseen.items() if now - since >= self.grace]
        for job_id in ended:
            log.warning("job %s: active in the database, followed by no runner: ending it", job_id)
            await self.tracker.report(StatusReport(job_id, "failed", error=lost_reason(self.grace)))
            del self._unseen[job_id]
        return ended
