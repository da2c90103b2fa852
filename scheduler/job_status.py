"""Every change of a job's status, and only here: create (queued), admit (queued -> pending),
requeue (pending -> queued), a runner's report (pure `apply_report`, stored by `record`) and
retry (failed -> active). Each change also writes its event (`log_change`) in the same
transaction: the SSE streams' log.

A job is an array of tasks (docs/design.md, "Render arrays"; a plain render is one task). The
changes above move tasks; the job's status, progress, error and task summary follow from its
tasks' (`summarize`, `derived_status`), refreshed in the same transaction.

The dispatcher and the tracker call these; nothing else writes `Job.status`. Updates that can
race another replica (admit, requeue) are conditional on the status they start from, and an
admission also on the ledger's generation the dispatcher planned with (see `admit`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import false, func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from scheduler import idempotency
from scheduler.models import AdmissionLedger, Job, JobEvent, JobPublic, Task, utcnow
from scheduler.runners.base import StatusReport
from scheduler.statuses import ACTIVE, FINISHED, WITH_RUNNER, JobStatus


class TooManyActiveJobs(Exception):
    """The owner already has the most unfinished jobs allowed; the argument is how many."""


class NotRetryable(Exception):
    """Only a failed render array can be retried (409); the argument says why not."""


class QueueFull(Exception):
    """All users' queued jobs together reach MAX_QUEUED_JOBS; the argument is how many."""

    def __init__(self, queued: int, retry_after: int) -> None:
        super().__init__(queued)
        self.retry_after = retry_after


def create(
    session: Session,
    *,
    owner: str,
    params: dict[str, Any],
    callback_url: str | None,
    runner: str,
    max_active: int,
    priority: str = "normal",
    estimated_iterations: float | None = None,
    max_queued: int | None = None,
    retry_after: int = 30,
    cache_key: str | None = None,
    idempotency_key: str | None = None,
    array: dict[str, Any] | None = None,
    tasks: int = 1,
) -> Job:
    """Insert a queued job unless the owner already has `max_active` unfinished ones, or the
    whole queue already holds `max_queued`. The counts and the insert are one step for every
    thread and replica (`hold_submits`): racing submits never overshoot either bound.

    With a `cache_key`, an equal render of the owner's is reused (scheduler/result_cache.py):
    a succeeded one makes this job succeeded at once (no bound applies: it costs nothing); an
    active one is followed (`follows`): this job waits for its end and ends with it (`record`).
    Under the same lock, so a render ending or deleted meanwhile is seen either way. With an
    `idempotency_key` (already claimed), its answer is stored with the job."""
    hold_submits(session)
    source = reusable(session, owner=owner, cache_key=cache_key) if cache_key else None
    if source is None or source.status != "succeeded":
        try:
            check_room(
                session, owner=owner, max_active=max_active, max_queued=max_queued, retry_after=retry_after
            )
        except (TooManyActiveJobs, QueueFull):
            session.rollback()  # lets the next submit go now, not when the session closes
            raise
    job = Job(
        id=uuid.uuid4().hex,
        owner=owner,
        status="queued",
        params=params,
        callback_url=callback_url,
        callback_state="pending" if callback_url else None,
        runner=runner,
        priority=priority,
        estimated_iterations=estimated_iterations,
        cache_key=cache_key,
        array=array,
        tasks_total=tasks,
        task_counts={"queued": tasks, "running": 0, "succeeded": 0, "failed": 0},
        failed_tasks=[],
    )
    job.storage_prefix = job.own_prefix
    if source is not None and source.status == "succeeded":
        _reuse(job, source, now=utcnow())
    elif source is not None:
        job.follows, job.message = source.id, following(source.id)
    session.add(job)
    session.add_all(Task(job_id=job.id, index=i, status=job.status, finished_at=job.finished_at)
                    for i in range(tasks))  # succeeded already when reused
    log_change(session, job)
    if idempotency_key is not None:
        idempotency.answer(session, owner=owner, key=idempotency_key, job_id=job.id,
                           document=JobPublic.of(job).model_dump(mode="json"))
    session.commit()
    session.refresh(job)
    return job


def reusable(session: Session, *, owner: str, cache_key: str) -> Job | None:
    """The owner's latest succeeded render with this key, else the active one that renders it."""
    same = select(Job).where(Job.owner == owner, Job.cache_key == cache_key)
    done = session.exec(same.where(Job.status == "succeeded").order_by(col(Job.finished_at).desc())).first()
    if done is not None:
        return done
    return session.exec(same.where(col(Job.status).in_(ACTIVE), col(Job.follows).is_(None))).first()


def following(job_id: str) -> str:
    return f"waiting for job {job_id}, which renders the same frame"


def _reuse(job: Job, source: Job, *, now: datetime) -> None:
    """`job` ends as `source` succeeded: served from its stored objects (shared, by reference)."""
    job.status, job.cached, job.storage_prefix, job.progress = "succeeded", True, source.result_prefix, 1.0
    job.started_at = job.finished_at = now
    job.follows = job.message = None
    job.estimated_iterations = source.estimated_iterations
    settle_tasks(job)
    _callback_due(job)


def settle_tasks(job: Job) -> None:
    """The task summary of a job that another's render ended (pure): every task as the job. A
    failed follower's tasks all failed, so a retry renders all of them into its own prefix."""
    n, ok = job.tasks_total, job.status == "succeeded"
    job.task_counts = {"queued": 0, "running": 0, "succeeded": n if ok else 0, "failed": 0 if ok else n}
    job.failed_tasks = [] if ok else list(range(n))


def check_room(
    session: Session, *, owner: str, max_active: int, max_queued: int | None, retry_after: int = 30
) -> None:
    """Raise TooManyActiveJobs or QueueFull when a job of `owner` would overshoot a bound. Two
    indexed counts: a submit asks this before its costly steps, and `create` again under the lock."""
    active = session.exec(
        select(func.count()).select_from(Job).where(Job.owner == owner, col(Job.status).in_(ACTIVE))
    ).one()
    if active >= max_active:
        raise TooManyActiveJobs(active)
    if max_queued is not None:
        queued = session.exec(select(func.count()).select_from(Job).where(Job.status == "queued")).one()
        if queued >= max_queued:
            raise QueueFull(queued, retry_after)


SUBMIT_LOCK = 0x66726163_7375626D  # pg_advisory_xact_lock's key for submits ("fracsubm")


def hold_submits(session: Session) -> None:
    """Take, for the rest of this transaction, the lock every submit takes before it counts.

    PostgreSQL: a transaction-scoped advisory lock (another replica's submit waits for our
    commit, then counts our job). SQLite: its single write lock, taken now by BEGIN IMMEDIATE
    rather than at the insert (pysqlite begins a transaction only at the first write, so the
    counts would otherwise read outside it); a transaction that has written holds it already.
    https://www.postgresql.org/docs/current/explicit-locking.html#ADVISORY-LOCKS
    https://www.sqlite.org/lang_transaction.html
    """
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_advisory_xact_lock(SUBMIT_LOCK)))
    elif connection.dialect.name == "sqlite" and not connection.connection.dbapi_connection.in_transaction:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def ledger_generation(session: Session) -> int:
    """The admission ledger's generation (its row is made on first use)."""
    ledger = session.get(AdmissionLedger, 1, populate_existing=True)
    if ledger is None:
        session.add(AdmissionLedger(id=1, generation=0))
        try:
            session.commit()
        except IntegrityError:  # another replica made it first
            session.rollback()
        return ledger_generation(session)
    return ledger.generation


def hold_ledger(session: Session, *, generation: int) -> bool:
    """Lock the ledger row for this transaction (PostgreSQL: FOR UPDATE; SQLite has one writer
    anyway): while it is held no replica admits. False when it moved past `generation`."""
    current = session.execute(
        select(AdmissionLedger.generation).where(col(AdmissionLedger.id) == 1).with_for_update()
    ).scalar_one_or_none()
    return current == generation


class Pick(NamedTuple):
    job_id: str
    placement: str  # the device class it is admitted to
    seconds: float  # its estimated run time there
    task: int = 0  # the task's index


class Admission(NamedTuple):
    job: Job
    tasks: tuple[int, ...]  # the indexes admitted now, ascending


def admit(
    session: Session, picks: Sequence[Pick], *, generation: int, now: datetime | None = None,
    replica: str | None = None,
) -> list[Admission] | None:
    """Mark the picked queued tasks `pending` in their class, all in one transaction; None when
    another replica admitted first (then nothing changed).

    The transaction first advances the ledger from `generation`, the value read before the
    dispatcher looked at the tasks and capacity it planned with. If another replica admitted
    anything since, that update matches no row and nothing is admitted: the caller plans
    again on fresh state, so two replicas can never both spend the same free slot. (In
    PostgreSQL the second update waits for the first transaction's row lock, then finds the
    generation moved; SQLite runs one writer at a time.) Each task's update is also conditional
    on it still being queued (its job may have been cancelled or deleted meanwhile). `replica`:
    the admitting replica, recorded as the job's owner when its runner's jobs are its own (local
    processes; the dispatcher admits no task of a job another replica runs tasks of).
    """
    now = now or utcnow()
    advanced = session.execute(
        update(AdmissionLedger)
        .where(col(AdmissionLedger.id) == 1, col(AdmissionLedger.generation) == generation)
        .values(generation=generation + 1)
    )
    if advanced.rowcount != 1:
        session.rollback()
        return None
    admitted: dict[str, list[Pick]] = {}
    for pick in picks:
        claimed = session.execute(
            update(Task)
            .where(col(Task.job_id) == pick.job_id, col(Task.index) == pick.task,
                   col(Task.status) == "queued")
            .values(status="pending", placement=pick.placement, admitted_at=now, attempts=0, error=None,
                    admissions=Task.admissions + 1)
        )
        if claimed.rowcount == 1:
            admitted.setdefault(pick.job_id, []).append(pick)
    out = []
    for job_id, mine in admitted.items():
        job = session.get(Job, job_id, populate_existing=True)
        if job is None:
            continue
        first = job.status == "queued"
        job.placement = job.placement or mine[0].placement
        job.admitted_at, job.replica = now, replica
        job.attempts = max(job.attempts, _most_admissions(session, job_id))
        if first:
            job.message, job.queue_position, job.estimated_start_at = "starting", None, None
            job.estimated_finish_at = now + timedelta(seconds=max(p.seconds for p in mine))
        refresh(session, job)
        session.add(job)
        log_change(session, job)
        out.append(Admission(job, tuple(sorted(p.task for p in mine))))
    session.commit()
    return out


def _most_admissions(session: Session, job_id: str) -> int:
    return session.exec(select(func.max(Task.admissions)).where(Task.job_id == job_id)).one() or 0


def requeue(session: Session, *, job_id: str, reason: str, tasks: Iterable[int] = (0,)) -> bool:
    """Give claimed tasks back to the queue (the runner refused them): the admission did not
    count. False when none is pending any more (deleted, or reported on meanwhile)."""
    changed = session.execute(
        update(Task)
        .where(col(Task.job_id) == job_id, col(Task.index).in_(list(tasks)), col(Task.status) == "pending")
        .values(status="queued", admissions=Task.admissions - 1, placement=None, admitted_at=None)
    )
    job = session.get(Job, job_id, populate_existing=True) if changed.rowcount else None
    if job is not None:
        refresh(session, job)
        job.message = f"waiting for the runner: {reason}"
        if job.status == "queued":
            job.attempts = max(0, job.attempts - 1)
        session.add(job)
        log_change(session, job)
    session.commit()
    return job is not None


def apply_report(task: Task, report: StatusReport, *, max_attempts: int) -> bool:
    """Fold one report into a task's record (pure); False when it changes nothing.

    A finished task never changes again (runners may report an end twice, e.g. a cancel seen
    both by the caller and by the watch). A "queued" report gives the task back to the
    dispatcher until it has been handed to a runner `max_attempts` times.
    """
    if task.status in FINISHED:
        return False
    if report.status == "queued":
        if task.status == "queued":
            return False
        if task.admissions >= max_attempts:
            task.status, task.finished_at = "failed", report.finished_at or utcnow()
            times = task.admissions
            task.error = f"the job was interrupted {times} times (service restarts) and was given up"
        else:
            task.status, task.progress, task.started_at = "queued", None, None
            task.placement, task.admitted_at = None, None
        return True
    before = _task_state(task)
    task.status = report.status
    if report.started_at is not None and task.started_at is None:
        task.started_at = report.started_at
    if report.attempts is not None:
        task.attempts = report.attempts
    if report.status in FINISHED:
        task.finished_at = report.finished_at or utcnow()
        task.error = report.error if report.status == "failed" else None
        if report.status == "succeeded":
            task.progress = 1.0
    elif report.progress is not None:
        task.progress = report.progress
    return before != _task_state(task)


def _task_state(task: Task) -> tuple[Any, ...]:
    return task.status, task.started_at, task.finished_at, task.error, task.progress, task.attempts


def derived_status(counts: Mapping[str, int]) -> JobStatus:
    """A job's status from its tasks' (status -> how many): ended when every task has
    (failed if any failed), `running` once any task runs or has ended, else `pending` while
    any is admitted, else `queued`."""
    if not any(counts.get(s, 0) for s in ACTIVE):
        if counts.get("failed"):
            return "failed"
        return "cancelled" if counts.get("cancelled") else "succeeded"
    if counts.get("running") or counts.get("succeeded") or counts.get("failed"):
        return "running"
    return "pending" if counts.get("pending") else "queued"


class Summary(NamedTuple):
    counts: dict[str, int]  # status -> tasks
    progress: float | None  # over all tasks; None while no task has said
    failed: list[int]  # indexes, ascending
    first_error: str | None  # the lowest failed task's


def summarize(tasks: Iterable[Any], total: int) -> Summary:
    """Counts, progress and failures of a job's tasks (Task records, or rows of their columns)."""
    counts: dict[str, int] = {}
    done, said, failed, first_error = 0.0, False, [], None
    for t in sorted(tasks, key=lambda t: t.index):
        counts[t.status] = counts.get(t.status, 0) + 1
        if t.status == "succeeded" or t.progress is not None:
            said = True
            done += 1.0 if t.status == "succeeded" else (t.progress or 0.0)
        if t.status == "failed":
            failed.append(t.index)
            first_error = first_error or t.error
    return Summary(counts, done / max(total, 1) if said else None, failed, first_error)


def refresh(session: Session, job: Job, report: StatusReport | None = None) -> None:
    """Recompute the job's status and summary from its tasks (not committed). `report`: the
    runner's report that moved them (its message, time and error where it says more)."""
    # the columns alone (no ORM objects): an array's every task report reads them all
    columns = (Task.index, Task.status, Task.progress, Task.error, Task.started_at, Task.finished_at)
    tasks = session.exec(select(*columns).where(Task.job_id == job.id)).all()
    if not tasks:  # a record from before tasks: it changes as its one task would
        return
    s = summarize(tasks, job.tasks_total)
    job.status = derived_status(s.counts)
    job.task_counts = {
        "queued": s.counts.get("queued", 0),
        "running": sum(s.counts.get(k, 0) for k in WITH_RUNNER),
        "succeeded": s.counts.get("succeeded", 0),
        "failed": s.counts.get("failed", 0),
    }
    job.failed_tasks = s.failed
    job.progress = s.progress
    started = [t.started_at for t in tasks if t.started_at is not None]
    if job.started_at is None and started:
        job.started_at = min(started)
    if job.status == "queued":
        job.placement, job.admitted_at, job.started_at = None, None, None
    if job.status in FINISHED:
        ends = [t.finished_at for t in tasks if t.finished_at is not None]
        job.finished_at = report.finished_at if report and report.finished_at else max(ends, default=utcnow())
        job.message = None
        job.error = _error(job, s, report) if job.status == "failed" else None
        _callback_due(job)
    else:
        job.finished_at, job.error = None, None
        # a report's message (or its lack of one) is the job's; an array's task that says
        # nothing leaves the job's (e.g. why its other tasks wait) as it is
        if report is not None and report.status not in FINISHED and (
            report.message is not None or report.task is None or job.tasks_total == 1
        ):
            job.message = report.message


def _error(job: Job, s: Summary, report: StatusReport | None) -> str | None:
    if report is not None and report.task is None and report.error:  # the whole job failed
        return report.error
    if job.tasks_total == 1:
        return s.first_error
    n = len(s.failed)
    return f"{n} of {job.tasks_total} tasks failed; task {s.failed[0]}: {s.first_error}"


def _callback_due(job: Job) -> None:
    """A job that ends owes its callback now; stored with the end, so a restart cannot lose it."""
    if job.callback_url and job.callback_state == "pending" and job.callback_next_at is None:
        job.callback_next_at = job.finished_at


class Recorded(NamedTuple):
    job: Job | None  # None: the job has no record (deleted, perhaps through another replica)
    changed: bool
    started: bool  # this report gave it its started_at
    followers: tuple[Job, ...] = ()  # the jobs that followed its render, changed with its end


def record(session: Session, report: StatusReport, *, max_attempts: int) -> Recorded:
    """Apply a runner's report to the stored job's tasks, and the job, and commit it when it
    changed something. A report without a task is the whole job's (runners/base.py): of a
    one-task job, its task's; else it moves every unfinished task (`queued`: those admitted).
    An end also ends (or, cancelled, frees) the jobs that follow its render, in the same
    transaction and under the submit lock: a job that starts to follow it meanwhile is either
    seen here or sees the end (`create`)."""
    job = session.get(Job, report.job_id)
    if job is None:
        return Recorded(None, False, False)
    if job.status in FINISHED:
        return Recorded(job, False, False)
    if report.task is None and job.tasks_total == 1:
        report = replace(report, task=0)
    query = select(Task).where(Task.job_id == job.id, col(Task.status).in_(ACTIVE))
    if report.task is not None:
        query = query.where(Task.index == report.task)
    elif report.status == "queued":
        query = query.where(col(Task.status).in_(WITH_RUNNER))
    elif report.status not in ("failed", "cancelled"):
        # a job-level pending/running: its message only; success is each task's to report
        query = query.where(false())
    before = _shown(job)
    was_started = job.started_at is not None
    for task in session.exec(query).all():
        if apply_report(task, report, max_attempts=max_attempts):
            session.add(task)
    session.flush()
    refresh(session, job, report)
    if _shown(job) == before:  # e.g. a task's attempts: nothing the document shows
        session.commit()
        return Recorded(job, False, False)
    followers: list[Job] = []
    if job.status in FINISHED:
        hold_submits(session)
        waiting = select(Job).where(Job.follows == job.id, col(Job.status).not_in(FINISHED))
        followers = list(session.exec(waiting.order_by(col(Job.created_at))).all())
        end_followers(job, followers)
    session.add(job)
    log_change(session, job)
    for follower in followers:
        session.add(follower)
        if follower.status in FINISHED:
            session.execute(update(Task).where(col(Task.job_id) == follower.id).values(
                status=follower.status, finished_at=follower.finished_at, error=follower.error))
        log_change(session, follower)
    session.commit()
    return Recorded(job, True, job.started_at is not None and not was_started, tuple(followers))


def end_followers(leader: Job, followers: list[Job]) -> None:
    """The jobs that waited for `leader`'s render end as it did (pure). A cancelled render
    helps no one: the oldest follower is queued to render itself, and the rest follow it."""
    if leader.status == "cancelled":
        if followers:
            first, *rest = followers
            first.follows, first.message = None, "queued: the job whose render it waited for was cancelled"
            for job in rest:
                job.follows, job.message = first.id, following(first.id)
        return
    for job in followers:
        job.status, job.follows, job.message, job.finished_at = leader.status, None, None, leader.finished_at
        job.started_at = leader.started_at or leader.finished_at
        if leader.status == "succeeded":
            job.cached, job.storage_prefix, job.progress = True, leader.result_prefix, 1.0
        else:
            job.error = leader.error
        settle_tasks(job)
        _callback_due(job)


def _shown(job: Job) -> tuple[Any, ...]:
    return (job.status, job.started_at, job.finished_at, job.error, job.message, job.progress,
            job.task_counts, job.failed_tasks)


def retry(session: Session, *, job_id: str) -> Job:
    """Queue a failed render array's failed (and never run) tasks again; its succeeded tasks
    and their parts stay. The job is active again and owes its callback anew. Raises
    NotRetryable with the reason for any other job (also when another request retried first)."""
    job = session.get(Job, job_id)
    if job is None or job.tasks_total < 2:
        raise NotRetryable("only a render array (split or animation) can be retried; submit the job again")
    claimed = session.execute(
        update(Job).where(col(Job.id) == job_id, col(Job.status) == "failed").values(status="queued")
    )
    if claimed.rowcount != 1:
        session.rollback()
        raise NotRetryable(f"the job is {job.status}: only a failed job's tasks can run again")
    session.execute(
        update(Task)
        .where(col(Task.job_id) == job_id, col(Task.status).in_(("failed", "cancelled")))
        .values(status="queued", admissions=0, attempts=0, error=None, progress=None, started_at=None,
                finished_at=None, placement=None, admitted_at=None)
    )
    job = session.get(Job, job_id, populate_existing=True)
    assert job is not None
    refresh(session, job)
    job.message, job.attempts = "queued again: retrying the failed tasks", 0
    if job.callback_url:
        job.callback_state, job.callback_next_at = "pending", None
    session.add(job)
    log_change(session, job)
    session.commit()
    return job


def log_change(session: Session, job: Job) -> None:
    """Log the job's new document in the transaction that changes it (the caller commits), so
    a change and its event are never one without the other. Any other change of what the job
    document shows (progress, queue position) must call this too, or streams won't see it.
    The event keeps the document as of now: replayed later, its estimates may lie in the past
    (an event says what was known then; GET /jobs/{id} says what is known now)."""
    session.add(JobEvent(job_id=job.id, owner=job.owner, document=JobPublic.of(job).model_dump(mode="json")))
