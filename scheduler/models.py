"""Database tables and the request/response models around them.

One family per entity (STYLE.md): request models (`extra="forbid"`, validated) are never tables,
because SQLModel skips validation on `table=True` models and a body could then set `status` or
`owner`; tables are never returned raw.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import sqlmodel
from pydantic import BaseModel, ConfigDict, Field, field_serializer
from sqlalchemy import JSON, Column

from job_image.params import FractalParams
from scheduler.statuses import JobStatus


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(ts: datetime | None) -> datetime | None:
    """SQLite drops the offset; every stored time is UTC, so put it back."""
    if ts is None or ts.tzinfo is not None:
        return ts
    return ts.replace(tzinfo=UTC)


# --- users ----------------------------------------------------------------------------------


class User(sqlmodel.SQLModel, table=True):
    id: int | None = sqlmodel.Field(default=None, primary_key=True)
    username: str = sqlmodel.Field(unique=True, index=True, max_length=64)
    password_hash: str
    created_at: datetime = sqlmodel.Field(default_factory=utcnow)


class Credentials(BaseModel):
    """Sign-up and sign-in body. Rules (pattern, lengths) are settings, checked in the route."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(max_length=256)
    password: str = Field(max_length=1024)


class UserPublic(BaseModel):
    username: str
    created_at: datetime


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


# --- jobs ------------------------------------------------------------------------------------


class JobCreate(FractalParams):
    """`POST /jobs`: the fractal parameters (defined once, in job_image) plus a callback."""

    callback_url: str | None = Field(None, max_length=2048, description="POSTed the final job document")

    def params(self) -> FractalParams:
        return FractalParams.model_validate(self.model_dump(exclude={"callback_url"}))


class Job(sqlmodel.SQLModel, table=True):
    id: str = sqlmodel.Field(primary_key=True, max_length=32)  # the job_id: 32 lowercase hex chars
    owner: str = sqlmodel.Field(index=True, max_length=64)
    status: str = sqlmodel.Field(index=True, max_length=16)
    params: dict[str, Any] = sqlmodel.Field(sa_column=Column(JSON, nullable=False))
    callback_url: str | None = None
    created_at: datetime = sqlmodel.Field(default_factory=utcnow, index=True)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    message: str | None = None  # why it is waiting
    progress: float | None = None
    attempts: int = 0  # times handed to a runner
    runner: str = sqlmodel.Field(max_length=16)

    @property
    def result_prefix(self) -> str:
        return f"{self.owner}/{self.id}/"


class JobLinks(BaseModel):
    self: str
    result: str
    files: str
    logs: str


class JobPublic(BaseModel):
    job_id: str
    status: JobStatus
    params: dict[str, Any]
    callback_url: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    message: str | None
    progress: float | None
    runner: str
    links: JobLinks

    @field_serializer("created_at", "started_at", "finished_at")
    def _iso(self, ts: datetime | None) -> str | None:
        ts = as_utc(ts)
        return ts.isoformat().replace("+00:00", "Z") if ts else None

    @classmethod
    def of(cls, job: Job) -> JobPublic:
        base = f"/jobs/{job.id}"
        return cls(
            job_id=job.id,
            status=job.status,  # type: ignore[arg-type]
            params=job.params,
            callback_url=job.callback_url,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            error=job.error,
            message=job.message,
            progress=job.progress,
            runner=job.runner,
            links=JobLinks(
                self=base, result=f"{base}/result", files=f"{base}/result/list", logs=f"{base}/logs"
            ),
        )


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int  # all of the caller's jobs matching the filter, not just this page
    limit: int
    offset: int


class FileInfo(BaseModel):
    name: str
    size: int
    content_type: str


class FilesPublic(BaseModel):
    job_id: str
    files: list[FileInfo]
