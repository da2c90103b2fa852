"""Every change of a job's status, and only here: create (queued), admit (queued -> pending),
requeue (pending -> queued) and a runner's report (pure `apply_report`, stored by `record`).
Each change also writes its event (`log_change`) in the same transaction: the SSE streams' log.

The dispatcher and the tracker call these; nothing else writes `Job.status`. Updates that can
race another replica (admit, requeue) are conditional on the status they start from, and an
admission also on the ledger's generation the dispatcher planned with (see `admit`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from scheduler import idempotency
from scheduler.models import AdmissionLedger, Job, JobEvent, JobPublic, utcnow
from scheduler.runners.base import StatusReport
from scheduler.statuses import ACTIVE, FINISHED


class TooManyActiveJobs(Exception):
    """The owner already has the most unfinished jobs allowed; the argument is how many."""


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
    )
    job.storage_prefix = job.own_prefix
    if source is not None and source.status == "succeeded":
        _reuse(job, source, now=utcnow())
    elif source is not None:
        job.follows, job.message = source.id, following(source.id)
    session.add(job)
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
    _callback_due(job)


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


def admit(
    session: Session, picks: Sequence[Pick], *, generation: int, now: datetime | None = None,
    replica: str | None = None,
) -> list[Job] | None:
    """Mark the picked queued jobs `pending` in their class, all in one transaction; None when
    another replica admitted first (then nothing changed).

    The transaction first advances the ledger from `generation`, the value read before the
    dispatcher looked at the jobs and capacity it planned with. If another replica admitted
    anything since, that update matches no row and nothing is admitted: the caller plans
    again on fresh state, so two replicas can never both spend the same free slot. (In
    PostgreSQL the second update waits for the first transaction's row lock, then finds the
    generation moved; SQLite runs one writer at a time.) Each job's update is also conditional
    on it still being queued (it may have been deleted meanwhile). `replica`: the admitting
    replica, recorded as the job's owner when its runner's jobs are its own (local processes).
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
    admitted = []
    for pick in picks:
        claimed = session.execute(
            update(Job)
            .where(col(Job.id) == pick.job_id, col(Job.status) == "queued")
            .values(status="pending", placement=pick.placement, admitted_at=now, message="starting",
                    attempts=Job.attempts + 1, queue_position=None, estimated_start_at=None,
                    estimated_finish_at=now + timedelta(seconds=pick.seconds), replica=replica)
        )
        if claimed.rowcount == 1:
            admitted.append(pick.job_id)
    jobs = [job for job_id in admitted if (job := session.get(Job, job_id, populate_existing=True))]
    for job in jobs:
        log_change(session, job)
    session.commit()
    return jobs


def requeue(session: Session, *, job_id: str, reason: str) -> bool:
    """Give a claimed job back to the queue (the runner refused it): the attempt did not
    count. False when it is no longer pending (deleted, or reported on meanwhile)."""
    changed = session.execute(
        update(Job)
        .where(col(Job.id) == job_id, col(Job.status) == "pending")
        .values(status="queued", attempts=Job.attempts - 1, message=f"waiting for the runner: {reason}",
                placement=None, admitted_at=None, estimated_finish_at=None)
    )
    job = session.get(Job, job_id, populate_existing=True) if changed.rowcount == 1 else None
    if job is not None:
        log_change(session, job)
    session.commit()
    return job is not None


def apply_report(job: Job, report: StatusReport, *, max_attempts: int) -> bool:
    """Fold one report into the job record (pure); False when it changes nothing.

    A finished job never changes again (runners may report an end twice, e.g. a cancel seen
    both by the caller and by the watch). A "queued" report gives the job back to the
    dispatcher until it has been started `max_attempts` times.
    """
    if job.status in FINISHED:
        return False
    if report.status == "queued":
        if job.attempts >= max_attempts:
            job.status, job.finished_at = "failed", report.finished_at or utcnow()
            job.error = f"the job was interrupted {job.attempts} times (service restarts) and was given up"
            _callback_due(job)
        else:
            job.status, job.message, job.progress, job.started_at = "queued", report.message, None, None
            job.placement, job.admitted_at, job.estimated_finish_at = None, None, None
        return True
    before = (job.status, job.started_at, job.finished_at, job.error, job.message, job.progress)
    job.status = report.status
    if report.started_at is not None and job.started_at is None:
        job.started_at = report.started_at
    if report.status in FINISHED:
        job.finished_at = report.finished_at or utcnow()
        job.error = report.error if report.status == "failed" else None
        job.message = None
        if report.status == "succeeded":
            job.progress = 1.0
        _callback_due(job)
    else:
        job.message = report.message
        if report.progress is not None:
            job.progress = report.progress
    return before != (job.status, job.started_at, job.finished_at, job.error, job.message, job.progress)


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
    """Apply a runner's report to the stored job and commit it when it changed something.
    An end also ends (or, cancelled, frees) the jobs that follow its render, in the same
    transaction and under the submit lock: a job that starts to follow it meanwhile is either
    seen here or sees the end (`create`)."""
    job = session.get(Job, report.job_id)
    if job is None:
        return Recorded(None, False, False)
    was_started = job.started_at is not None
    if not apply_report(job, report, max_attempts=max_attempts):
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
        _callback_due(job)


def log_change(session: Session, job: Job) -> None:
    """Log the job's new document in the transaction that changes it (the caller commits), so
    a change and its event are never one without the other. Any other change of what the job
    document shows (progress, queue position) must call this too, or streams won't see it.
    The event keeps the document as of now: replayed later, its estimates may lie in the past
    (an event says what was known then; GET /jobs/{id} says what is known now)."""
    session.add(JobEvent(job_id=job.id, owner=job.owner, document=JobPublic.of(job).model_dump(mode="json")))
