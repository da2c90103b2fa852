"""Database tables and the request/response models around them.

One family per entity (STYLE.md): request models (`extra="forbid"`, validated) are never tables,
because SQLModel skips validation on `table=True` models and a body could then set `status` or
`owner`; tables are never returned raw.
"""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime
from typing import Any, Literal

import sqlmodel
from pydantic import BaseModel, ConfigDict, Field, field_serializer
from sqlalchemy import JSON, Column

from job_image.params import FractalParams
from scheduler.admission.queue import Priority
from scheduler.admission.throughput import DeviceClass
from scheduler.statuses import ACTIVE, JobStatus

CallbackState = Literal["pending", "delivered", "failed"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(ts: datetime | None) -> datetime | None:
    """SQLite drops the offset; every stored time is UTC, so put it back."""
    if ts is None or ts.tzinfo is not None:
        return ts
    return ts.replace(tzinfo=UTC)


def upcoming(ts: datetime | None, now: datetime) -> datetime | None:
    """`ts` if it is still ahead of `now`; an estimate already past says nothing (null)."""
    ts = as_utc(ts)
    return ts if ts is not None and ts >= now else None


# --- users ----------------------------------------------------------------------------------


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


class User(sqlmodel.SQLModel, table=True):
    id: int | None = sqlmodel.Field(default=None, primary_key=True)
    username: str = sqlmodel.Field(unique=True, index=True, max_length=64)
    password_hash: str
    created_at: datetime = sqlmodel.Field(default_factory=utcnow)
    # signs this user's callbacks; null only for accounts made before it existed (filled on use)
    webhook_secret: str | None = sqlmodel.Field(default_factory=new_webhook_secret, max_length=64)


class Credentials(BaseModel):
    """Sign-up and sign-in body. Rules (pattern, lengths) are settings, checked in the route."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(max_length=256)
    password: str = Field(max_length=1024)


class UserPublic(BaseModel):
    username: str
    created_at: datetime


class Me(UserPublic):
    """`GET /auth/me`: the account, with the secret that signs its callbacks."""

    webhook_secret: str = Field(description="`whsec_...`: the key of the callbacks' webhook-signature")


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


# --- jobs ------------------------------------------------------------------------------------


class JobCreate(FractalParams):
    """`POST /jobs`: the fractal parameters (defined once, in job_image) plus what belongs to the
    request, not the render: a callback and the priority among the caller's own jobs."""

    callback_url: str | None = Field(None, max_length=2048, description="POSTed the final job document")
    priority: Priority = Field(
        "normal", description="orders your own queued jobs; never overtakes another user's fair share"
    )

    def params(self) -> FractalParams:
        """The fractal fields only: what the job gets as FRACTAL_PARAMS."""
        return FractalParams.model_validate(self.model_dump(exclude={"callback_url", "priority"}))


class Job(sqlmodel.SQLModel, table=True):
    id: str = sqlmodel.Field(primary_key=True, max_length=32)  # the job_id: 32 lowercase hex chars
    owner: str = sqlmodel.Field(index=True, max_length=64)
    status: str = sqlmodel.Field(index=True, max_length=16)
    params: dict[str, Any] = sqlmodel.Field(sa_column=Column(JSON, nullable=False))
    callback_url: str | None = None
    # the callback's delivery: `pending` with a `callback_next_at` is the (persistent) retry queue
    callback_state: str | None = sqlmodel.Field(default=None, index=True, max_length=16)
    callback_attempts: int = 0
    callback_last_error: str | None = None
    callback_next_at: datetime | None = None  # when a pending delivery is tried (again)
    created_at: datetime = sqlmodel.Field(default_factory=utcnow, index=True)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    message: str | None = None  # why it is waiting
    progress: float | None = None
    attempts: int = 0  # times handed to a runner
    runner: str = sqlmodel.Field(max_length=16)
    # scheduling (scheduler/admission): set at submit, by the dispatcher's plan, and at admission
    priority: str = sqlmodel.Field(default="normal", max_length=8)
    estimated_iterations: float | None = None
    placement: str | None = sqlmodel.Field(default=None, max_length=8)  # cpu | gpu once admitted
    admitted_at: datetime | None = sqlmodel.Field(default=None, index=True)  # for fair share's memory
    queue_position: int | None = None
    estimated_start_at: datetime | None = None
    estimated_finish_at: datetime | None = None
    # the replica whose local process runs it (scheduler/replicas.py); None: any replica's to follow
    replica: str | None = sqlmodel.Field(default=None, max_length=32)
    # the result cache (scheduler/result_cache.py): the render's key; where its objects are
    # (another job's prefix when served from its render); the active job it waits on
    cache_key: str | None = sqlmodel.Field(default=None, index=True, max_length=64)
    storage_prefix: str | None = sqlmodel.Field(default=None, index=True, max_length=128)
    follows: str | None = sqlmodel.Field(default=None, index=True, max_length=32)
    cached: bool = False

    @property
    def own_prefix(self) -> str:
        return f"{self.owner}/{self.id}/"

    @property
    def result_prefix(self) -> str:
        """Where its stored objects are: its own, or those of the job whose render it reuses."""
        return self.storage_prefix or self.own_prefix


class IdempotencyKey(sqlmodel.SQLModel, table=True):
    """A `POST /jobs` Idempotency-Key of one user (scheduler/idempotency.py): the body it came
    with (as a fingerprint) and, once answered, the job and the first answer's document."""

    owner: str = sqlmodel.Field(primary_key=True, max_length=64)
    key: str = sqlmodel.Field(primary_key=True, max_length=255)
    fingerprint: str = sqlmodel.Field(max_length=64)
    job_id: str | None = sqlmodel.Field(default=None, max_length=32)  # null: the first is in progress
    response: dict[str, Any] | None = sqlmodel.Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = sqlmodel.Field(default_factory=utcnow)
    expires_at: datetime = sqlmodel.Field(index=True)


class JobEvent(sqlmodel.SQLModel, table=True):
    """One change of a job, as the document it left: the log the SSE streams read and resume
    from. `seq` is the event's `id:`; AUTOINCREMENT so SQLite never reuses one."""

    __table_args__ = {"sqlite_autoincrement": True}

    seq: int | None = sqlmodel.Field(default=None, primary_key=True)
    job_id: str = sqlmodel.Field(index=True, max_length=32)
    owner: str = sqlmodel.Field(index=True, max_length=64)
    kind: str = sqlmodel.Field(default="job", max_length=16)  # `job` (a document) or `deleted`
    document: dict[str, Any] = sqlmodel.Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = sqlmodel.Field(default_factory=utcnow, index=True)


class CallbackPublic(BaseModel):
    url: str
    state: CallbackState = Field(description="pending until delivered or given up")
    attempts: int
    last_error: str | None


class Replica(sqlmodel.SQLModel, table=True):
    """One running service sharing the database, alive while its heartbeat is recent."""

    id: str = sqlmodel.Field(primary_key=True, max_length=32)
    host: str = sqlmodel.Field(max_length=255)
    pid: int
    heartbeat_at: datetime


class AdmissionLedger(sqlmodel.SQLModel, table=True):
    """One row whose `generation` every admission advances, conditionally on the value the
    dispatcher planned with: two replicas that planned on the same state cannot both admit."""

    id: int = sqlmodel.Field(default=1, primary_key=True)
    generation: int = 0


class JobLinks(BaseModel):
    self: str
    result: str | None = Field(description="the image; null once the job has failed or was cancelled")
    files: str
    logs: str


class JobDeleted(BaseModel):
    """The `data` of an event stream's `deleted` event."""

    model_config = ConfigDict(extra="forbid")

    job_id: str


class JobPublic(BaseModel):
    job_id: str
    status: JobStatus
    params: dict[str, Any]
    callback: CallbackPublic | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    message: str | None
    progress: float | None
    runner: str
    priority: Priority
    placement: DeviceClass | None = Field(description="the class it was admitted to; null while queued")
    queue_position: int | None = Field(description="1 = the next admitted to its class; null unless queued")
    estimated_iterations: int | None = Field(description="the cost model's estimate, at submit")
    estimated_start_at: datetime | None = Field(
        description="refreshed as the queue moves; null when unknown or past"
    )
    estimated_finish_at: datetime | None = Field(description="null when unknown or past")
    cached: bool = Field(description="true when served from another job's render of the same frame")
    links: JobLinks

    @field_serializer("created_at", "started_at", "finished_at", "estimated_start_at", "estimated_finish_at")
    def _iso(self, ts: datetime | None) -> str | None:
        ts = as_utc(ts)
        return ts.isoformat().replace("+00:00", "Z") if ts else None

    @classmethod
    def of(cls, job: Job, now: datetime | None = None) -> JobPublic:
        """The job's document as of `now` (default: the clock), which hides estimates now past."""
        now = now or utcnow()
        base = f"/jobs/{job.id}"
        return cls(
            job_id=job.id,
            status=job.status,  # type: ignore[arg-type]
            params=job.params,
            callback=CallbackPublic(
                url=job.callback_url,
                state=job.callback_state or "pending",  # type: ignore[arg-type]
                attempts=job.callback_attempts,
                last_error=job.callback_last_error,
            )
            if job.callback_url
            else None,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            error=job.error,
            message=job.message,
            progress=job.progress,
            runner=job.runner,
            priority=job.priority,  # type: ignore[arg-type]
            placement=job.placement,  # type: ignore[arg-type]
            queue_position=job.queue_position if job.status == "queued" else None,
            estimated_iterations=round(job.estimated_iterations) if job.estimated_iterations else None,
            estimated_start_at=upcoming(job.estimated_start_at, now) if job.status == "queued" else None,
            estimated_finish_at=upcoming(job.estimated_finish_at, now) if job.status in ACTIVE else None,
            cached=job.cached,
            links=JobLinks(
                self=base,
                result=None if job.status in ("failed", "cancelled") else f"{base}/result",
                files=f"{base}/result/list",
                logs=f"{base}/logs",
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
