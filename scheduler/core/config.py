"""All of the service's settings, read once from the environment (names fixed by docs/design.md).

Every limit and every timeout lives here, with the reason for its default.
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from job_image.params import Limits
from scheduler.admission.assign import HALF_LIFE


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    # --- where state lives -------------------------------------------------------------
    data_dir: Path = Path("data")
    database_url: str = ""  # default: sqlite:///<data_dir>/scheduler.db
    storage_dir: Path | None = None  # default: <data_dir>/results

    # --- result storage (MinIO/S3 when minio_endpoint is set) ---------------------------
    minio_endpoint: str = ""
    minio_bucket: str = "fractals"
    minio_access_key: str = ""
    minio_secret_key: str = ""
    minio_secure: bool = False
    storage_connect_timeout: float = Field(3.0, description="a reachable store answers in ms")
    storage_read_timeout: float = Field(
        5.0, description="longest silence on one storage read; with the attempts, bounds a 503"
    )
    storage_attempts: int = Field(
        2, ge=1, description="tries per storage call: a hung store is a 503 after ~2 x 5 s, not minutes"
    )

    # --- auth ------------------------------------------------------------------------------
    # unset: generated once, kept in <data_dir>/jwt_secret; set but empty or short: refused
    jwt_secret: str | None = None
    jwt_ttl_seconds: int = 3600
    jwt_min_secret_bytes: int = 32
    bcrypt_rounds: int = 12
    username_pattern: str = r"^[a-z0-9][a-z0-9_.-]{2,31}$"
    password_min_length: int = 8
    password_max_bytes: int = 72  # bcrypt's own input limit; longer is a 422, never truncated
    signin_attempts_per_minute: int = 10  # per (username, client address); 429 past it
    # per client address, whatever the names: one client cannot spray guesses over many accounts
    signin_attempts_per_client_per_minute: int = 30
    signups_per_minute: int = 5  # per client address: each sign-up costs a bcrypt hash
    # Proxies whose X-Forwarded-For names the client (uvicorn's forwarded_allow_ips): the
    # per-client sign-in limit must see clients, not the Ingress controller.
    forwarded_allow_ips: str = "127.0.0.1"

    # --- request limits ----------------------------------------------------------------------
    max_pixels: int = Limits.max_pixels
    max_iter: int = Limits.max_iter
    max_coordinate_digits: int = Field(
        Limits.max_coordinate_digits, ge=1,
        description="digits of a centre or zoom given as a decimal string (zoom 1e1000 needs ~1010)",
    )
    max_zoom: Decimal = Field(Limits.max_zoom, gt=0, description="deepest zoom a request may ask for")
    max_body_bytes: int = 64 * 1024
    max_header_bytes: int = Field(
        16 * 1024, gt=0, description="request line + headers (431 past it); a token is ~200 bytes"
    )
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="a client's headers must arrive within this (408): half-sent requests cannot pile up",
    )
    max_active_jobs_per_user: int = 8  # queued + pending + running
    max_queued_jobs: int = Field(
        1000, ge=0, description="queued jobs of all users together; past it POST /jobs is a 429"
    )
    queue_full_retry_after_seconds: int = Field(
        30, ge=1, description="Retry-After of that 429: about the time a few short jobs take to start"
    )
    max_job_iterations: float = Field(
        1e12,
        gt=0,
        description="a request whose estimated iterations exceed this is a 422: ~200 s of CPU render "
        "at 5 G iter/s, within JOB_TIMEOUT_SECONDS, and below MAX_PIXELS x MAX_ITER (1.7e12), so it can fire",
    )
    cost_probe_workers: int = Field(
        2, ge=1, description="threads pricing submits at once (the cost probe's own pool, not the database's)"
    )
    cost_probes_per_user: int = Field(
        2, ge=1, description="one user's submits being priced or waiting for it; past it a 429"
    )
    cost_probes_total: int = Field(
        32, ge=1, description="all users' submits being priced or waiting for it; past it a 429"
    )
    max_tasks: int = Field(1024, ge=1, description="tasks of one render array (split bands or video frames)")
    max_array_pixels: int = Field(
        2**30, ge=1, description="samples of a split image, all bands together: a gigapixel"
    )
    max_video_pixels: int = Field(
        2**31, ge=1, description="samples of a zoom video, all frames together (e.g. 1000 frames of 1080p)"
    )
    video_encode_timeout_seconds: float = Field(
        600.0, gt=0, description="joining a zoom video's frames into its video; past it the result is a 503"
    )
    max_wait_seconds: float = 60.0  # cap on ?wait= long-polls

    # --- reuse (docs/design.md, "Reuse") ---------------------------------------------------------
    idempotency_ttl_seconds: float = Field(
        86400, gt=0, description="how long an Idempotency-Key gets its first answer again: a day of retries"
    )
    idempotency_lease_seconds: float = Field(
        60,
        gt=0,
        description="a key whose first request has no answer after this (its replica died) is taken "
        "anew; a submit takes well under a second",
    )
    result_cache: bool = Field(
        True, description="reuse an equal earlier or running render of the same user's (off: render each)"
    )
    presign_seconds: int = Field(
        300, ge=1, le=604800, description="lifetime of a ?redirect=true URL: long enough to start a download"
    )
    page_size_default: int = 20
    page_size_max: int = 100

    # --- runner ------------------------------------------------------------------------------
    runner: Literal["local", "kubernetes"] = "local"
    local_max_concurrent: int = Field(2, description="CPU jobs rendering at once; 2 cores here")
    local_gpus: int | None = Field(
        None, ge=0, description="GPU jobs at once (one per GPU); default: the OpenCL GPU devices found"
    )
    fair_share_half_life_seconds: float = Field(
        HALF_LIFE,
        gt=0,
        description="how fast fair share forgets a user's past use: shorter evens waits out, "
        "longer favours light users",
    )
    job_python: str = ""  # interpreter for local jobs; default: the API's own
    job_timeout_seconds: int = 600  # local runner's and the Job's activeDeadlineSeconds
    job_max_attempts: int = Field(3, description="a job re-queued by restarts runs at most this often")
    dispatch_retry_max_seconds: float = Field(
        30.0, description="cap on the backoff while the runner refuses jobs (e.g. API server down)"
    )
    report_retry_seconds: float = Field(
        5.0, gt=0, description="an end the DB refused (full disk, server away) is written again this often"
    )
    reconcile_interval_seconds: float = Field(
        30.0, gt=0, description="how often active records are compared with what the runner follows"
    )
    job_lost_after_seconds: float = Field(
        60.0,
        gt=0,
        description="an active record no runner follows for this long is ended as failed, with the reason; "
        "well over the moment between a claim and the runner taking the job",
    )
    replica_heartbeat_seconds: float = Field(
        5.0, gt=0, description="how often a replica writes its heartbeat row (replicas sharing a database)"
    )
    replica_lost_after_seconds: float = Field(
        60.0,
        gt=0,
        description="a replica whose heartbeat is older than this is taken for gone: any other may then "
        "re-queue, fail or clean up its local jobs; well over REPLICA_HEARTBEAT_SECONDS",
    )
    opencl_cache_dir: Path | None = None  # default: <data_dir>/opencl-cache (PoCL kernel cache)

    # --- kubernetes runner -------------------------------------------------------------------
    kubeconfig: str = ""  # default: standard lookup, then in-cluster service account
    kube_namespace: str = "default"
    job_image: str = "fractal-job:latest"
    job_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    job_cpu_request: str = "500m"
    job_cpu_limit: str = "2"
    job_memory_request: str = "256Mi"
    job_memory_limit: str = "1Gi"
    job_gpu_resource: str = "nvidia.com/gpu"
    job_gpu_node_selector: dict[str, str] = {}
    job_gpu_tolerations: list[dict[str, str | int]] = []  # e.g. tolerationSeconds: 300
    job_backoff_limit: int = Field(
        1, description="retries of each task (the Job's backoffLimitPerIndex; the local runner's too); "
        "exit 2 is never retried"
    )
    job_ttl_seconds_after_finished: int = 3600
    job_capacity_deadline_seconds: int = Field(
        86400,
        description="a pod that waits only for room others hold (a full ResourceQuota, Insufficient "
        "GPUs) fails only after this: waiting for capacity is not a failure; a day, not forever",
    )
    job_pending_deadline_seconds: int = Field(
        300, description="a pod not started by then fails with the scheduler's reason"
    )
    minio_config_map: str = "minio-config"
    minio_secret: str = "minio-secret"
    kube_request_timeout: float = Field(10.0, description="every API call; a hung server is an error")
    kube_watch_timeout_seconds: int = Field(
        300, description="server-side watch length; the loop resumes from resourceVersion"
    )
    kube_reconnect_backoff_max: float = Field(
        30.0, description="cap on the watch's reconnect backoff; an outage is retried at least this often"
    )
    kube_gpu_capacity: int = Field(
        0,
        ge=0,
        description="GPU jobs at once where no ResourceQuota bounds requests.<JOB_GPU_RESOURCE>; "
        "0: the cluster has no GPU and device gpu is refused at submit",
    )
    kube_max_active_jobs: int = Field(
        100,
        description="unfinished tasks (job pods) at once, a render array's Job counting its "
        "parallelism; keep it within the namespace's ResourceQuota",
    )
    kube_orphan_min_age_seconds: float = Field(
        10.0,
        description="an unfinished Job this much older than the service's start and unknown to the DB "
        "is deleted; the margin covers clock skew and a rollout's second replica",
    )
    kube_log_limit_bytes: int = Field(
        1_048_576, description="pods/log reads are capped so one chatty job cannot fill memory"
    )

    # --- live events (SSE) ---------------------------------------------------------------------
    events_queue_size: int = Field(
        256, ge=1, description="events held for one client; one that falls further behind is dropped"
    )
    events_poll_seconds: float = Field(
        1.0, gt=0, description="how stale a stream may be for changes made by another replica"
    )
    events_ping_seconds: float = Field(
        15.0, gt=0, description="keep-alive comment: proxies close idle streams"
    )
    events_send_timeout_seconds: float = Field(
        10.0, gt=0, description="a client that takes longer to accept one event is dropped"
    )
    events_retention_seconds: float = Field(
        3600.0, gt=0, description="how long the log keeps events; Last-Event-ID can resume within it"
    )
    events_max_resume: int = Field(
        10_000,
        ge=0,
        description="a Last-Event-ID more than this many of the stream's events back is a 422: a resume "
        "costs what it replays",
    )
    events_gap_grace_seconds: float = Field(
        1.0, ge=0, description="PostgreSQL: how long a missing seq is waited for (a commit in flight)"
    )
    events_max_streams_per_user: int = Field(
        32, ge=1, description="open event streams per user (429 past it)"
    )

    # --- callbacks -------------------------------------------------------------------------------
    callback_allow_private: bool = False  # SSRF guard: refuse loopback/private targets by default
    callback_timeout: float = Field(5.0, gt=0, description="per POST; a receiver should answer at once")
    callback_attempts: int = Field(8, ge=1, description="POSTs per callback before it is `failed`")
    callback_backoff_seconds: float = Field(
        5.0, gt=0, description="wait after the first failed attempt, doubling after each further one"
    )
    callback_backoff_max_seconds: float = Field(
        3600.0, gt=0, description="cap on one wait: with 8 attempts a receiver has ~10 min to come back"
    )
    callback_poll_seconds: float = Field(
        5.0, gt=0, description="how often due callbacks are looked for (other replicas', retries)"
    )
    callback_concurrency: int = Field(16, ge=1, description="callbacks in flight at once per replica")
    callback_concurrency_per_user: int = Field(
        4, ge=1, description="one user's callbacks in flight at once per replica: all a dead endpoint holds"
    )

    @field_validator("username_pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:  # a broken pattern refuses to start, rather than a 500 at the first sign-up
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
        return pattern

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'scheduler.db'}"
        if self.storage_dir is None:
            self.storage_dir = self.data_dir / "results"
        if self.opencl_cache_dir is None:
            self.opencl_cache_dir = self.data_dir / "opencl-cache"
        return self

    @cached_property
    def limits(self) -> Limits:
        return Limits(max_pixels=self.max_pixels, max_iter=self.max_iter,
                      max_coordinate_digits=self.max_coordinate_digits, max_zoom=self.max_zoom)

    def storage_env(self) -> dict[str, str]:
        """The storage part of a job's environment (the job contract's names)."""
        if self.minio_endpoint:
            return {
                "MINIO_ENDPOINT": self.minio_endpoint,
                "MINIO_BUCKET": self.minio_bucket,
                "MINIO_ACCESS_KEY": self.minio_access_key,
                "MINIO_SECRET_KEY": self.minio_secret_key,
                "MINIO_SECURE": str(self.minio_secure).lower(),
            }
        return {"STORAGE_DIR": str(Path(self.storage_dir).resolve())}
