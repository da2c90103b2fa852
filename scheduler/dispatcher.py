"""The dispatcher: each cycle, admission decides which queued tasks start and where, and the
dispatcher hands those to the runner. A task is the unit of capacity and of fair share (a
plain job is one task); a job's estimates span its tasks: its first task's start, its last's
finish.

A cycle takes the runner's view on the event loop (immutable: the loop goes on changing the
runner meanwhile), then in a worker thread (`decide`) reads the ledger's generation, the queued,
admitted and recently finished jobs, computes the capacity snapshot from that view, and runs
the pure plan (scheduler/admission). The picks are admitted in one transaction conditional on that
generation, so two replicas planning on the same state cannot both spend a slot; the loser
plans again. Every job left waiting gets its queue position, estimates and reason stored.

A job is marked `pending` before the runner sees it, so a status report racing the submit
never finds it still `queued`. When the runner refuses (RunnerUnavailable, e.g. the API server
is down) the job goes back to `queued` with the reason and the dispatcher retries with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session

from job_image.backoff import Backoff
from job_image.params import FractalParams
from scheduler import crud, db, job_status
from scheduler.admission.assign import HISTORY_HALF_LIVES, Admitted, Estimate, plan
from scheduler.admission.queue import Waiting
from scheduler.admission.throughput import DeviceClass, Method, Throughput
from scheduler.models import Job, Task, as_utc, utcnow
from scheduler.runners.base import JobSpec, Runner, RunnerUnavailable, RunnerView, StatusReport
from scheduler.tracker import Tracker

log = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 0.5
IDLE_RECHECK_SECONDS = 5.0  # jobs queued through another replica are seen within this
RACES_PER_CYCLE = 5  # plans lost to another replica's admission before waiting for a wake-up
ESTIMATE_SLACK_SECONDS = 1.0  # an estimate that moved less than this is not written again


def placement_of(job: Job) -> DeviceClass:
    """The class a job holds (jobs admitted before placements were recorded: by their device)."""
    if job.placement in ("cpu", "gpu"):
        return job.placement  # type: ignore[return-value]
    return "gpu" if job.params.get("device") == "gpu" else "cpu"


def job_spec(job: Job, tasks: tuple[int, ...] = (0,)) -> JobSpec:
    """The runner's view; `device` becomes the class admission chose (an `auto` job renders there)."""
    params = FractalParams.model_validate({**job.params, "device": placement_of(job)})
    return JobSpec(job_id=job.id, owner=job.owner, params=params, result_prefix=job.result_prefix,
                   array=job.render_array(), tasks=tasks)


def method_of(job: Job) -> Method:
    """How the job renders: its precision, or what auto picks for its frame (job_image/precision.py)."""
    return FractalParams.model_validate(job.params).plan().precision


def task_iterations(job: Job) -> float:
    """One task's share of the job's estimated iterations."""
    return (job.estimated_iterations or 0.0) / max(job.tasks_total, 1)


def waiting(task: Task, job: Job, method: Method) -> Waiting:
    # a job some of whose tasks were admitted waits for that class only: one Job, one template
    device = job.placement if job.placement in ("cpu", "gpu") else job.params.get("device", "auto")
    return Waiting(job.id, job.owner, device, job.priority,  # type: ignore[arg-type]
                   as_utc(job.created_at), task_iterations(job), method, task.index)  # type: ignore[arg-type]


def admitted(task: Task, job: Job, throughput: Throughput, method: Method) -> Admitted:
    c = task.placement if task.placement in ("cpu", "gpu") else placement_of(job)
    since = as_utc(task.admitted_at or task.started_at or job.created_at)
    return Admitted(job.id, job.owner, c, since, throughput.seconds(c, task_iterations(job), method))  # type: ignore[arg-type]


def admissible(
    queued: list[crud.TaskOf], active: list[crud.TaskOf], replica: str | None
) -> list[crud.TaskOf]:
    """The queued tasks `replica` may admit: with a runner of its own (local processes), none of
    a job another replica runs tasks of (one replica follows a job, see replicas.py)."""
    if replica is None:
        return queued
    elsewhere = {job.id for _, job in active if job.replica not in (None, replica)}
    return [(task, job) for task, job in queued if job.id not in elsewhere]


def job_estimates(waiting_tasks: dict[str, Estimate], tasks: list[tuple[Task, Job]]) -> dict[str, Estimate]:
    """Per job, from its waiting tasks': the first task's place in line, start and reason, the
    last task's finish."""
    out: dict[str, Estimate] = {}
    for task, job in tasks:
        e = waiting_tasks.get(Waiting(job.id, "", "auto", "normal", job.created_at, 0.0, task=task.index).key)
        if e is None:
            continue
        seen = out.get(job.id)
        if seen is None:
            out[job.id] = e
            continue
        first = seen if (seen.position or 1 << 62) <= (e.position or 1 << 62) else e
        finish = max((f for f in (seen.finish, e.finish) if f is not None), default=None)
        start = min((f for f in (seen.start, e.start) if f is not None), default=None)
        out[job.id] = Estimate(first.placement, first.position, start, finish, first.message)
    return out


def changed_estimates(jobs: list[Job], estimates: dict[str, Estimate]) -> list[tuple[Job, dict[str, object]]]:
    """The waiting jobs whose stored position, reason or estimates the plan changes."""
    out: list[tuple[Job, dict[str, object]]] = []
    for job in jobs:
        e = estimates.get(job.id)
        if e is None:
            continue
        new = {"queue_position": e.position, "message": e.message,
               "estimated_start_at": e.start, "estimated_finish_at": e.finish}
        if (job.queue_position, job.message) != (e.position, e.message) or _moved(
            job.estimated_start_at, e.start) or _moved(job.estimated_finish_at, e.finish):
            out.append((job, new))
    return out


def _moved(old: datetime | None, new: datetime | None) -> bool:
    old = as_utc(old)
    if old is None or new is None:
        return old is not new
    return abs((new - old).total_seconds()) >= ESTIMATE_SLACK_SECONDS


class Dispatcher:
    def __init__(self, engine: Engine, runner: Runner, tracker: Tracker, *, retry_max_seconds: float,
                 throughput: Throughput, half_life: float, replica: str | None = None,
                 on_admitted: Callable[[Job], None] = lambda job: None) -> None:
        self.engine, self.runner, self.tracker = engine, runner, tracker
        self.retry_max_seconds = retry_max_seconds
        self.throughput, self.half_life = throughput, half_life
        self.on_admitted = on_admitted
        self.replica = replica  # recorded on the jobs it admits (their owner), see replicas.py
        self.queue_lengths: dict[str, int] = {}  # per class, as the latest plan saw them
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Something changed (a job was queued or a slot freed): look at the queue again."""
        self._wake.set()

    async def _woken_or(self, seconds: float) -> None:
        """Wait for wake() or `seconds`. Not asyncio.wait_for: on Python 3.11 it can swallow a
        cancel that arrives with the wake-up, and stopping would then wait for ever."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def run(self) -> None:
        """The endless loop: dispatch on every wake-up, every few seconds, back off on refusal."""
        backoff = Backoff(FIRST_RETRY_SECONDS, self.retry_max_seconds)
        while True:
            self._wake.clear()
            try:
                started = time.monotonic()
                await self.dispatch()
                backoff.reset()
                # a cycle over a long queue costs CPU: rest at least as long as it took
                await asyncio.sleep(min(time.monotonic() - started, IDLE_RECHECK_SECONDS))
                await self._woken_or(IDLE_RECHECK_SECONDS)
            except RunnerUnavailable:
                await self._woken_or(backoff.next())
            except Exception:  # a bug here must not stop every future job
                log.exception("dispatcher failed; retrying")
                await asyncio.sleep(backoff.next())

    async def dispatch(self) -> None:
        """Admit what fits and submit it; raises RunnerUnavailable to back off."""
        for _ in range(RACES_PER_CYCLE):
            admissions = await asyncio.to_thread(self.decide, self.runner.view())
            if admissions is not None:
                for job, tasks in admissions:
                    self.on_admitted(job)
                    self.tracker.notify(job.id)
                    await self._submit(job, tasks)
                return
            log.info("another replica admitted jobs meanwhile; planning again")

    def decide(self, view: RunnerView, now: datetime | None = None) -> list[job_status.Admission] | None:
        """One admission cycle (blocking: DB and CPU) with the runner's `view`. The tasks admitted,
        by job, or None when another replica admitted since this cycle read the state (nothing
        was changed then)."""
        now = now or utcnow()
        since = now - timedelta(seconds=HISTORY_HALF_LIVES * self.half_life)
        with Session(self.engine, expire_on_commit=False) as session:
            generation = job_status.ledger_generation(session)  # first: see job_status.admit
            queued, active, history = crud.admission_view(session, since=since)
            queued = admissible(queued, active, self.replica)
        t = self.throughput
        methods = {job.id: method_of(job) for _, job in (*queued, *active, *history)}  # once a job
        held = [admitted(task, job, t, methods[job.id]) for task, job in active]
        snapshot = view.snapshot(Counter(a.placement for a in held))
        decided = plan([waiting(task, job, methods[job.id]) for task, job in queued], held, snapshot, t, now,
                       history=[admitted(task, job, t, methods[job.id]) for task, job in history],
                       half_life=self.half_life)
        estimates = job_estimates(decided.waiting, queued)
        self.queue_lengths = dict(Counter(e.placement for e in estimates.values() if e.placement))
        picks = [job_status.Pick(w.job_id, c, t.seconds(c, w.iterations, w.method), w.task)
                 for w, c in decided.admit]
        with Session(self.engine, expire_on_commit=False) as session:
            admissions = job_status.admit(session, picks, generation=generation, now=now,
                                          replica=self.replica) if picks else []
        if admissions is None:
            return None
        # a session of its own: a stale plan's rollback there must not expire the admitted jobs
        with Session(self.engine, expire_on_commit=False) as session:
            seen = generation + 1 if picks else generation  # our own admission moved it by one
            jobs = list({job.id: job for _, job in queued}.values())
            crud.set_estimates(session, changed_estimates(jobs, estimates), generation=seen)
        return admissions

    async def _submit(self, job: Job, tasks: tuple[int, ...]) -> None:
        try:
            await self.runner.submit(job_spec(job, tasks))
        except RunnerUnavailable as exc:
            log.warning("runner refused job %s: %s", job.id, exc)
            await self._requeue(job, tasks, str(exc))
            raise
        except Exception as exc:
            log.exception("could not start job %s", job.id)
            await self.tracker.report(
                StatusReport(job.id, "failed", error=f"the job could not be started: {exc}")
            )
            return
        ended = not await db.in_thread(self.engine, lambda s: crud.job_is_active(s, job_id=job.id))
        if ended:  # DELETE or cancel arrived while it was being submitted: don't leave it running
            await self.runner.cancel(job.id)

    async def _requeue(self, job: Job, tasks: tuple[int, ...], reason: str) -> None:
        await db.in_thread(
            self.engine, lambda s: job_status.requeue(s, job_id=job.id, reason=reason, tasks=tasks)
        )
        self.tracker.notify(job.id)
