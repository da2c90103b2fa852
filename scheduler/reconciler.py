"""Nothing stays active for ever: a pending or running record that no runner follows any more
(its end was lost, its process vanished) is ended, with the reason, after a grace period.

The runner says what it follows (`live()`: the local runner's processes, the Kubernetes runner's
Jobs); while it cannot tell (None), nothing is ended. Ends the tracker is still retrying to write
are not lost. The grace covers a job claimed a moment ago that the dispatcher has not handed to
the runner yet, and a Job the watch has not shown yet. Another live replica's local jobs are left
to it; those of a replica gone silent are re-queued, to run again here or elsewhere
(scheduler/replicas.py).
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import Engine

from scheduler import crud, db
from scheduler.replicas import Replicas
from scheduler.runners.base import Runner, StatusReport
from scheduler.tracker import Tracker

log = logging.getLogger(__name__)


WORKER = {"local": "process", "kubernetes": "Kubernetes Job"}  # what a runner runs a job as


def orphaned_message(lost_after: float) -> str:
    return f"the replica that ran it stopped answering (no heartbeat for {lost_after:g} s); it runs again"


def lost_reason(grace: float, runner: str) -> str:
    return (
        f"the job's {WORKER.get(runner, 'worker')} was gone and its end was not recorded "
        f"(no runner followed it for {grace:g} seconds)"
    )


class Reconciler:
    def __init__(
        self, engine: Engine, runner: Runner, tracker: Tracker, replicas: Replicas, *, interval: float,
        grace: float,
    ) -> None:
        self.engine, self.runner, self.tracker, self.replicas = engine, runner, tracker, replicas
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
        live = self.runner.live()
        if live is None:  # the runner cannot tell yet: no job is unfollowed for now
            self._unseen.clear()
            return []
        # jobs with a task handed to a runner (an array between tasks, waiting for a slot, is not lost)
        active = await db.in_thread(self.engine, lambda s: self.replicas.ours(s, crud.jobs_holding_tasks(s)))
        unwritten = {key.split("/")[0] for key in self.tracker.unwritten}  # a job's, or a task's end
        followed = set(live) | unwritten
        now = asyncio.get_running_loop().time()
        replica_of = {j.id: j.replica for j in active if j.id not in followed}
        self._unseen = {job_id: self._unseen.get(job_id, now) for job_id in replica_of}
        ended = [job_id for job_id, since in self._unseen.items() if now - since >= self.grace]
        for job_id in ended:
            if replica_of[job_id] not in (None, self.replicas.id):
                log.warning("job %s: its replica %s is gone: re-queueing it", job_id, replica_of[job_id])
                message = orphaned_message(self.replicas.lost_after)
                await self.tracker.report(StatusReport(job_id, "queued", message=message))
            else:
                log.warning("job %s: active in the database, followed by no runner: ending it", job_id)
                error = lost_reason(self.grace, self.runner.name)
                await self.tracker.report(StatusReport(job_id, "failed", error=error))
            del self._unseen[job_id]
        return ended
