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
from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator
from sqlalchemy import JSON, Column

from job_image.params import FractalParams, Limits, number_or_decimal, positive
from job_image.tasks import RenderArray
from scheduler.admission.queue import Priority
from scheduler.admission.throughput import DeviceClass
from scheduler.statuses import ACTIVE, JobStatus

CallbackState = Literal["pending", "delivered", "failed"]
VideoFormat = Literal["mp4", "webm"]


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


class Animation(BaseModel):
    """A zoom video: `frames` frames of the request's centre, from its `zoom` to `zoom_to`."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    frames: int = Field(ge=2, description="frames, one task each")
    zoom_to: float | str = Field(
        description="the last frame's zoom (> 0); a decimal string such as \"1e400\" passes float64's range",
    )
    fps: int = Field(30, ge=1, le=120, description="frames per second of the video")
    format: VideoFormat = Field("mp4", description="mp4 (H.264) or webm (VP9)")

    _zoom_to_number = field_validator("zoom_to", mode="before")(number_or_decimal)
    _zoom_to_positive = field_validator("zoom_to")(positive)


REQUEST_ONLY = {"callback_url", "priority", "split", "animation"}


class JobCreate(FractalParams):
    """`POST /jobs`: the fractal parameters (defined once, in job_image) plus what belongs to the
    request, not the render: a callback, the priority among the caller's own jobs, and whether
    it is a render array (docs/design.md, "Render arrays")."""

    callback_url: str | None = Field(None, max_length=2048, description="POSTed the final job document")
    priority: Priority = Field(
        "normal", description="orders your own queued jobs; never overtakes another user's fair share"
    )
    split: int = Field(1, ge=1, description="render the image as this many tasks, each a band of rows")
    animation: Animation | None = Field(None, description="a zoom video, one task per frame")

    def params(self) -> FractalParams:
        """The fractal fields only: what the job gets as FRACTAL_PARAMS."""
        return FractalParams.model_validate(self.model_dump(exclude=REQUEST_ONLY))

    def array(self) -> RenderArray | None:
        """The array's shape as every task gets it (RENDER_ARRAY); None for one task."""
        if self.animation is not None:
            return RenderArray(frames=self.animation.frames, zoom_to=self.animation.zoom_to)
        return RenderArray(split=self.split) if self.split > 1 else None

    def request_problem(self, limits: Limits, *, max_tasks: int, max_array_pixels: int,
                        max_video_pixels: int) -> str | None:
        """Why the request is over a deployment's limits (a sentence naming the figures), or
        None. MAX_PIXELS bounds one task: a band of a split image, one frame of a video."""
        samples = self.width * self.height * self.supersample**2
        at = f" at supersample {self.supersample}" if self.supersample > 1 else ""
        size = f"{self.width}x{self.height}{at}"
        if self.animation is not None:
            if self.split > 1:
                return "split and animation cannot be combined: a video's task is one frame"
            frames = self.animation.frames
            if frames > max_tasks:
                return f"{frames} frames is more tasks than the limit of {max_tasks}"
            if frames * samples > max_video_pixels:
                return (f"{frames} frames of {size} are {frames * samples} samples; "
                        f"the limit for a video is {max_video_pixels}")
            if self.width % 2 or self.height % 2:
                return f"a video's width and height must be even (colour is encoded per 2x2 pixels): {size}"
            last = self.params().model_copy(update={"zoom": self.animation.zoom_to})
            problem = last.render_problem() or last.limit_problem(limits)
            return self.limit_problem(limits) or (f"the last frame: {problem}" if problem else None)
        if self.split > 1:
            if self.split > max_tasks:
                return f"split {self.split} is more tasks than the limit of {max_tasks}"
            if self.split > self.height:
                return f"split {self.split} is more bands than the image's {self.height} rows"
            if samples > max_array_pixels:
                return f"{size} is {samples} samples; the limit for a split image is {max_array_pixels}"
            band = self.model_copy(update={"height": -(-self.height // self.split)})
            problem = band.limit_problem(limits)
            return f"one band of {self.split}: {problem}; split it into more bands" if problem else None
        return self.limit_problem(limits)

    def array_document(self) -> dict[str, Any] | None:
        """What the job record keeps of the array: `{"split": N}` or `{"animation": {...}}`."""
        if self.animation is not None:
            return {"animation": self.animation.model_dump(mode="json")}
        return {"split": self.split} if self.split > 1 else None


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
    # render arrays: the request's `{"split": N}` or `{"animation": {...}}` (None: one task), and
    # the tasks' summary as job_status keeps it (TaskCounts' fields; None: a record from before tasks)
    array: dict[str, Any] | None = sqlmodel.Field(default=None, sa_column=Column(JSON, nullable=True))
    tasks_total: int = 1
    task_counts: dict[str, int] | None = sqlmodel.Field(default=None, sa_column=Column(JSON, nullable=True))
    failed_tasks: list[int] | None = sqlmodel.Field(default=None, sa_column=Column(JSON, nullable=True))

    @property
    def own_prefix(self) -> str:
        return f"{self.owner}/{self.id}/"

    @property
    def result_prefix(self) -> str:
        """Where its stored objects are: its own, or those of the job whose render it reuses."""
        return self.storage_prefix or self.own_prefix

    def render_array(self) -> RenderArray | None:
        """The shape every task gets (RENDER_ARRAY)."""
        if not self.array:
            return None
        if "animation" in self.array:
            a = self.array["animation"]
            return RenderArray(frames=a["frames"], zoom_to=a["zoom_to"])
        return RenderArray(split=self.array.get("split", 1))


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


class Task(sqlmodel.SQLModel, table=True):
    """One task of a job (docs/design.md, "Render arrays"): index i of the job's `tasks_total`.
    Admission admits tasks; a task's status moves like a job's, and the job's follows its tasks'
    (job_status). `admissions` counts hand-overs to a runner (bounded like Job.attempts);
    `attempts` the runner's tries within the latest (its own retries of a failed task)."""

    job_id: str = sqlmodel.Field(primary_key=True, max_length=32)
    index: int = sqlmodel.Field(primary_key=True)
    status: str = sqlmodel.Field(index=True, max_length=16)
    placement: str | None = sqlmodel.Field(default=None, max_length=8)
    admissions: int = 0
    attempts: int = 0
    admitted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: float | None = None
    error: str | None = None


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


class TaskCounts(BaseModel):
    """A job's tasks by status: `running` counts the admitted (starting or rendering)."""

    total: int
    queued: int
    running: int
    succeeded: int
    failed: int


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
    split: int = Field(description="bands of rows the image is rendered as (1: one task)")
    animation: Animation | None = Field(description="the zoom video asked for; null for an image")
    tasks: TaskCounts = Field(description="the job's tasks by status (a plain render is one task)")
    failed_tasks: list[int] = Field(description="the failed tasks' indexes (POST .../retry runs them again)")
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
            split=(job.array or {}).get("split", 1),
            animation=(job.array or {}).get("animation"),
            tasks=task_counts(job),
            failed_tasks=job.failed_tasks or [],
            links=JobLinks(
                self=base,
                result=None if job.status in ("failed", "cancelled") else f"{base}/result",
                files=f"{base}/result/list",
                logs=f"{base}/logs",
            ),
        )


def task_counts(job: Job) -> TaskCounts:
    """The job's task summary; a record from before tasks existed is one task in its status."""
    if job.task_counts is not None:
        return TaskCounts(total=job.tasks_total, **job.task_counts)
    status = {"pending": "running"}.get(job.status, job.status)
    counts = {name: int(status == name) for name in ("queued", "running", "succeeded", "failed")}
    return TaskCounts(total=job.tasks_total, **counts)


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
