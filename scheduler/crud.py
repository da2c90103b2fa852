"""Database reads, accounts and job removal, with keyword-only arguments. No HTTP, no runner.

A job's status changes only in `job_status`.
"""

from __future__ import annotations

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from scheduler.models import Job, User
from scheduler.statuses import JobStatus


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


def jobs_with_status(session: Session, *, statuses: tuple[str, ...]) -> list[Job]:
    """Oldest first."""
    query = select(Job).where(col(Job.status).in_(statuses)).order_by(col(Job.created_at), col(Job.id))
    return list(session.exec(query).all())


def job_exists(session: Session, *, job_id: str) -> bool:
    return session.get(Job, job_id) is not None


def count_by_status(session: Session) -> dict[str, int]:
    rows = session.exec(select(Job.status, func.count()).group_by(Job.status)).all()
    return {status: count for status, count in rows}


def delete_job(session: Session, *, job_id: str) -> None:
    job = session.get(Job, job_id)
    if job is not None:
        session.delete(job)
        session.commit()
