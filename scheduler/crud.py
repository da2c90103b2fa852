"""Database reads and writes, with keyword-only arguments. No HTTP and no runner in here."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from scheduler.models import ACTIVE, Job, JobStatus, User


class UsernameTaken(Exception):
    pass


class TooManyActiveJobs(Exception):
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


def create_job(
    session: Session,
    *,
    owner: str,
    params: dict[str, Any],
    callback_url: str | None,
    runner: str,
    max_active: int,
) -> Job:
    """Insert a queued job unless the owner already has `max_active` unfinished ones."""
    active = session.exec(
        select(func.count()).select_from(Job).where(Job.owner == owner, col(Job.status).in_(ACTIVE))
    ).one()
    if active >= max_active:
        raise TooManyActiveJobs(active)
    job = Job(
        id=uuid.uuid4().hex,
        owner=owner,
        status="queued",
        params=params,
        callback_url=callback_url,
        runner=runner,
    )
    session.add(job)
    session.commit()
    session.refresh(job)
    return job


def get_job(session: Session, *, job_id: str, owner: str) -> Job | None:
    """The owner's job; another user's job is None, exactly like a missing one."""
    job = session.get(Job, job_id)
    return job if job is not None and job.owner == owner else None


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


def jobs_with_status(session: Session, *, statuses: tuple[str, ...], limit: int | None = None) -> list[Job]:
    """Oldest first: the dispatcher starts queued jobs in the order they were submitted."""
    query = select(Job).where(col(Job.status).in_(statuses)).order_by(col(Job.created_at), col(Job.id))
    if limit is not None:
        query = query.limit(limit)
    return list(session.exec(query).all())


def claim_next_queued(session: Session) -> Job | None:
    """Mark the oldest queued job `pending` and return it. The update is conditional on the job
    still being queued, so two dispatchers sharing a database never both start one job."""
    while True:
        queued = jobs_with_status(session, statuses=("queued",), limit=1)
        if not queued:
            return None
        claimed = session.execute(
            update(Job)
            .where(col(Job.id) == queued[0].id, col(Job.status) == "queued")
            .values(status="pending", message="starting", attempts=Job.attempts + 1)
        )
        session.commit()
        if claimed.rowcount == 1:
            return session.get(Job, queued[0].id, populate_existing=True)


def count_by_status(session: Session) -> dict[str, int]:
    rows = session.exec(select(Job.status, func.count()).group_by(Job.status)).all()
    return {status: count for status, count in rows}


def delete_job(session: Session, *, job_id: str) -> None:
    job = session.get(Job, job_id)
    if job is not None:
        session.delete(job)
        session.commit()
