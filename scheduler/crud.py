"""Database reads, accounts and job removal, with keyword-only arguments. No HTTP, no runner.

A job's status changes only in `job_status`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from scheduler import job_status
from scheduler.models import Job, JobEvent, Task, User, new_webhook_secret
from scheduler.statuses import ACTIVE, FINISHED, WITH_RUNNER, JobStatus


class UsernameTaken(Exception):
    pass


def create_user(session: Session, *, username: str, password_hash: str) -> User:
    user = User(username=username, password_hash=password_hash)
    session.add(user)
    try:
        session.commit()
    except IntegrityError as exc:  # the unique index decides, so two racing sign-ups can't both win
        session.rollback()
        raise UsernameTaken(username) from exc
    session.refresh(user)
    return user


def get_user(session: Session, *, username: str) -> User | None:
    return session.exec(select(User).where(User.username == username)).first()


def webhook_secret(session: Session, *, username: str) -> str:
    """The user's callback-signing secret; an account made before secrets existed gets one now
    (conditionally, so two replicas filling it at once agree on one)."""
    session.execute(
        update(User)
        .where(col(User.username) == username, col(User.webhook_secret).is_(None))
        .values(webhook_secret=new_webhook_secret())
    )
    session.commit()
    return session.exec(select(User.webhook_secret).where(User.username == username)).one() or ""


def get_job(session: Session, *, job_id: str, owner: str) -> Job | None:
    """The owner's job; another user's job is None, exactly like a missing one."""
    job = session.get(Job, job_id)
    return job if job is not None and job.owner == owner else None


OWNED_JOB = select(Job.__table__).where(  # type: ignore[attr-defined]
    Job.__table__.c.id == bindparam("job_id"), Job.__table__.c.owner == bindparam("owner")  # type: ignore[attr-defined]
)


def read_owned_job(connection: Connection, *, job_id: str, owner: str) -> Job | None:
    """`get_job` for the hot path (every status poll): one Core query on a bare connection and
    the row as a detached Job, without an ORM session (its set-up, identity map and close
    cost three times the query)."""
    row = connection.execute(OWNED_JOB, {"job_id": job_id, "owner": owner}).mappings().first()
    return Job.model_construct(**row) if row is not None else None


def list_jobs(
    session: Session, *, owner: str, status: JobStatus | None, limit: int, offset: int
) -> tuple[list[Job], int]:
    where = [Job.owner == owner]
    if status is not None:
        where.append(Job.status == status)
    count = session.exec(select(func.count()).select_from(Job).where(*where)).one()
    page = session.exec(
        select(Job)
        .where(*where)
        .order_by(col(Job.created_at).desc(), col(Job.id).desc())
        .offset(offset)
        .limit(limit)
    ).all()
    return list(page), count


def jobs_with_status(session: Session, *, statuses: tuple[str, ...]) -> list[Job]:
    """Oldest first."""
    query = select(Job).where(col(Job.status).in_(statuses)).order_by(col(Job.created_at), col(Job.id))
    return list(session.exec(query).all())


TaskOf = tuple[Task, Job]


def admission_view(session: Session, *, since: datetime) -> tuple[list[TaskOf], list[TaskOf], list[TaskOf]]:
    """What the dispatcher plans with, task by task (each with its job): the queued tasks, the
    admitted ones (pending, running), and the admitted tasks that finished since `since` (fair
    share remembers them for a while: by when they ended, so a long task's user still has some
    use just after it, however early it was admitted)."""
    joined = select(Task, Job).join(Job, col(Job.id) == col(Task.job_id))
    order = (col(Job.created_at), col(Job.id), col(Task.index))
    history = session.exec(
        joined.where(col(Task.status).in_(FINISHED), col(Task.admitted_at).is_not(None),
                     col(Task.finished_at) >= since)
    ).all()
    waiting = joined.where(Task.status == "queued", col(Job.follows).is_(None))  # followers never run
    queued = session.exec(waiting.order_by(*order)).all()
    active = session.exec(joined.where(col(Task.status).in_(WITH_RUNNER)).order_by(*order)).all()
    return [tuple(r) for r in queued], [tuple(r) for r in active], [tuple(r) for r in history]  # type: ignore[misc]


def jobs_holding_tasks(session: Session) -> list[Job]:
    """The jobs with a task handed to a runner (pending or running)."""
    holding = select(Task.job_id).where(col(Task.status).in_(WITH_RUNNER))
    return list(session.exec(select(Job).where(col(Job.id).in_(holding))).all())


def admitted_tasks(session: Session, *, job_ids: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """job id -> the indexes of its tasks handed to a runner (pending or running)."""
    found: dict[str, list[int]] = {}
    for i in range(0, len(job_ids), 500):  # well under SQLite's bound parameters
        rows = session.exec(
            select(Task.job_id, Task.index)
            .where(col(Task.job_id).in_(job_ids[i : i + 500]), col(Task.status).in_(WITH_RUNNER))
            .order_by(col(Task.index))
        ).all()
        for job_id, index in rows:
            found.setdefault(job_id, []).append(index)
    return {k: tuple(v) for k, v in found.items()}


def recently_succeeded(session: Session, *, limit: int) -> list[Job]:
    """The latest succeeded jobs that were admitted to a class, oldest first."""
    latest = session.exec(
        select(Job)
        .where(Job.status == "succeeded", col(Job.placement).is_not(None))
        .order_by(col(Job.finished_at).desc())
        .limit(limit)
    ).all()
    return list(reversed(latest))


ESTIMATE_FIELDS = ("queue_position", "message", "estimated_start_at", "estimated_finish_at")


def set_estimates(
    session: Session, changes: Sequence[tuple[Job, Mapping[str, Any]]], *, generation: int
) -> bool:
    """Store queued jobs' place in line, estimates and reason in one batch (`changes`: each
    job as loaded, and its new values of ESTIMATE_FIELDS), unless a replica admitted since the
    plan's `generation` of the ledger (then False, nothing written: the plan is stale). A new
    position or reason is a change of the job document: it is logged for the event streams;
    an estimate that only drifted is not."""
    if not changes:
        return True
    if not job_status.hold_ledger(session, generation=generation):
        session.rollback()
        return False
    table = Job.__table__  # type: ignore[attr-defined]
    statement = (
        update(table)
        .where(table.c.id == bindparam("job_id"), table.c.status != "succeeded", table.c.status != "failed",
               table.c.status != "cancelled")  # still active (executemany cannot expand IN)
        .values({name: bindparam(f"new_{name}") for name in ESTIMATE_FIELDS})
    )
    rows = [{"job_id": job.id, **{f"new_{n}": values[n] for n in ESTIMATE_FIELDS}} for job, values in changes]
    session.connection().execute(statement, rows)
    for job, values in changes:
        shown = (job.queue_position, job.message) != (values["queue_position"], values["message"])
        for name in ESTIMATE_FIELDS:
            setattr(job, name, values[name])
        if shown:
            job_status.log_change(session, job)
    session.commit()
    return True


def job_exists(session: Session, *, job_id: str) -> bool:
    return session.get(Job, job_id) is not None


def job_is_active(session: Session, *, job_id: str) -> bool:
    """The job exists and has not ended (cancelled or deleted meanwhile: it has)."""
    job = session.get(Job, job_id)
    return job is not None and job.status in ACTIVE


def count_by_status(session: Session) -> dict[str, int]:
    rows = session.exec(select(Job.status, func.count()).group_by(Job.status)).all()
    return {status: count for status, count in rows}


def release_result(session: Session, *, job: Job) -> bool:
    """Make `job`'s render reusable no more, and say whether another job still uses its stored
    objects (then they must stay). Under the submit lock, so no new job starts to use them
    after this answered: the objects may then be removed, before the record is."""
    job_status.hold_submits(session)
    session.execute(update(Job).where(col(Job.id) == job.id).values(cache_key=None))
    prefix = job.result_prefix
    owner_id = prefix.rstrip("/").rsplit("/", 1)[-1]
    users = session.exec(
        select(func.count()).select_from(Job).where(
            col(Job.id) != job.id,
            (col(Job.storage_prefix) == prefix)
            | (col(Job.storage_prefix).is_(None) & (col(Job.id) == owner_id)),  # a job from before the cache
        )
    ).one()
    session.commit()
    return users > 0


def delete_job(session: Session, *, job_id: str) -> bool:
    """Remove the job and its event log, leaving one `deleted` event for the owner's stream.
    False when there was no such job (another request removed it)."""
    job = session.get(Job, job_id)
    # conditional: of two deletes at once, the second removes no row and changes nothing
    if job is None or session.execute(delete(Job).where(col(Job.id) == job_id)).rowcount == 0:
        session.rollback()
        return False
    session.execute(delete(Task).where(col(Task.job_id) == job_id))
    session.execute(delete(JobEvent).where(col(JobEvent.job_id) == job_id))
    session.add(JobEvent(job_id=job_id, owner=job.owner, kind="deleted", document={"job_id": job_id}))
    session.commit()
    return True


# --- the callback queue (deliveries.py) -------------------------------------------------------


def due_callbacks(session: Session, *, now: datetime, limit: int, per_owner: int | None = None) -> list[Job]:
    """Ended jobs whose callback is due (first attempt or a retry), the longest waiting first;
    at most `per_owner` of each owner, so one owner's backlog cannot hide the others'."""
    due = (Job.callback_state == "pending", col(Job.callback_next_at) <= now)
    query = select(Job).where(*due)
    if per_owner is not None:
        rank = func.row_number().over(partition_by=col(Job.owner), order_by=col(Job.callback_next_at))
        ranked = select(col(Job.id).label("id"), rank.label("rank")).where(*due).subquery()
        query = query.join(ranked, col(Job.id) == ranked.c.id).where(ranked.c.rank <= per_owner)
    return list(session.exec(query.order_by(col(Job.callback_next_at)).limit(limit)).all())


def next_callback_at(session: Session) -> datetime | None:
    """When the next pending callback is due, if any is."""
    query = select(func.min(Job.callback_next_at)).where(Job.callback_state == "pending")
    return session.exec(query).one()


def claim_callback(session: Session, *, job: Job, lease_until: datetime) -> bool:
    """Take the job's due callback for one attempt: conditional on it being unchanged, so two
    replicas never send it at once; the lease makes it due again if this one dies meanwhile."""
    claimed = session.execute(
        update(Job)
        .where(
            col(Job.id) == job.id,
            col(Job.callback_state) == "pending",
            col(Job.callback_next_at) == job.callback_next_at,
        )
        .values(callback_next_at=lease_until)
    )
    session.commit()
    return claimed.rowcount == 1


def record_callback(
    session: Session, *, job_id: str, state: str, error: str | None, next_at: datetime | None
) -> Job | None:
    """Store one attempt's outcome: its state, one more attempt, the error, when to try again."""
    job = session.get(Job, job_id)
    if job is None:  # deleted meanwhile
        return None
    job.callback_state, job.callback_last_error, job.callback_next_at = state, error, next_at
    job.callback_attempts += 1
    session.add(job)
    job_status.log_change(session, job)  # the document shows it: the streams get it too
    session.commit()
    return job


# --- the event log (written by job_status.log_change), read by the SSE feed --------------------


def last_event_seq(session: Session, *, job_id: str | None = None) -> int:
    """The newest event's seq (of one job, or of all), 0 when there is none."""
    query = select(func.max(JobEvent.seq))
    if job_id is not None:
        query = query.where(JobEvent.job_id == job_id)
    return session.exec(query).one() or 0


def events_after(
    session: Session, *, seq: int, owner: str | None = None, job_id: str | None = None, limit: int
) -> list[JobEvent]:
    """Events newer than `seq`, oldest first (of one owner or job, or everyone's)."""
    query = select(JobEvent).where(col(JobEvent.seq) > seq)
    if owner is not None:
        query = query.where(JobEvent.owner == owner)
    if job_id is not None:
        query = query.where(JobEvent.job_id == job_id)
    return list(session.exec(query.order_by(col(JobEvent.seq)).limit(limit)).all())


def count_events_after(
    session: Session, *, seq: int, owner: str, job_id: str | None = None, limit: int
) -> int:
    """How many of the owner's (or one job's) events are newer than `seq`, counted up to `limit`."""
    query = select(JobEvent.seq).where(col(JobEvent.seq) > seq, JobEvent.owner == owner)
    if job_id is not None:
        query = query.where(JobEvent.job_id == job_id)
    return session.exec(select(func.count()).select_from(query.limit(limit).subquery())).one()


def prune_events(session: Session, *, before: datetime) -> int:
    """Drop events older than `before` (a resume from before then starts from the current document)."""
    removed = session.execute(delete(JobEvent).where(col(JobEvent.created_at) < before)).rowcount
    session.commit()
    return removed
