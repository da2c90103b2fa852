"""The job service: everything a route needs beyond one DB read, wired once per app.

Routes call this; this calls the runner, the storage and the tracker. Swapping the runner
(RUNNER=local|kubernetes) changes nothing above this module.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, TypeVar

from sqlmodel import Session

from job_image.storage import Storage, StorageError, storage_from_env
from scheduler import crud, db, job_status
from scheduler.admission.cost import estimated_iterations
from scheduler.admission.limits import check_cost, check_device
from scheduler.admission.throughput import Throughput
from scheduler.core import files, security
from scheduler.core.config import Settings
from scheduler.core.jwt import load_secret
from scheduler.core.ratelimit import RateLimiter
from scheduler.deliveries import CallbackDeliveries
from scheduler.dispatcher import Dispatcher, job_spec
from scheduler.events import EventFeed
from scheduler.metrics import Metrics
from scheduler.models import Job, JobCreate, JobPublic, User
from scheduler.reconciler import Reconciler
from scheduler.runners import make_runner
from scheduler.runners.base import StatusReport
from scheduler.statuses import ACTIVE, FINISHED, WITH_RUNNER
from scheduler.tracker import Tracker, seconds_between

log = logging.getLogger(__name__)
T = TypeVar("T")

PRIME_JOBS = 20  # finished jobs read at start to learn throughput from (a few result.json reads)


class JobFinished(Exception):
    """The job had already ended (str: its status): there is nothing to cancel."""


class Service:
    def __init__(self, settings: Settings, storage: Storage | None = None) -> None:
        self.settings = settings
        files.private_dir(Path(settings.data_dir))  # before anything is written into it
        if not settings.minio_endpoint and settings.storage_dir is not None:
            files.private_dir(Path(settings.storage_dir))
        self.jwt_secret = load_secret(settings)  # refuses to start with a short secret
        self.engine = db.make_engine(settings.database_url)
        self.storage = storage or storage_from_env(
            settings.storage_env(),
            connect_timeout=settings.storage_connect_timeout,
            read_timeout=settings.storage_read_timeout,
            attempts=settings.storage_attempts,
        )
        self.metrics = Metrics(
            job_counts=self.job_counts, queue_lengths=lambda: self.dispatcher.queue_lengths
        )
        self.callbacks = CallbackDeliveries(self.engine, settings)
        self.events = EventFeed(
            self.engine,
            queue_size=settings.events_queue_size,
            poll_seconds=settings.events_poll_seconds,
            retention_seconds=settings.events_retention_seconds,
            max_streams_per_user=settings.events_max_streams_per_user,
            gap_grace_seconds=settings.events_gap_grace_seconds,
        )
        self.tracker = Tracker(
            self.engine,
            max_attempts=settings.job_max_attempts,
            retry_seconds=settings.report_retry_seconds,
            on_started=self._started,
            on_finished=self._finished,
            on_requeued=lambda job: self.dispatcher.wake(),
            on_change=self.events.wake,
        )
        self.runner = make_runner(settings, self.tracker.report, self.storage)
        self.throughput = Throughput()  # learned from finished jobs (result.json), see _learn
        self.dispatcher = Dispatcher(
            self.engine, self.runner, self.tracker, retry_max_seconds=settings.dispatch_retry_max_seconds,
            throughput=self.throughput, half_life=settings.fair_share_half_life_seconds,
            on_admitted=self._admitted,
        )
        self._learning: set[asyncio.Task[None]] = set()
        self.reconciler = Reconciler(
            self.engine,
            self.runner,
            self.tracker,
            interval=settings.reconcile_interval_seconds,
            grace=settings.job_lost_after_seconds,
        )
        self._users: dict[str, User] = {}  # accounts are never removed, so a hit stays true
        self.signins_per_user_and_client = RateLimiter(settings.signin_attempts_per_minute)
        self.signins_per_client = RateLimiter(settings.signin_attempts_per_client_per_minute)
        self.signups_per_client = RateLimiter(settings.signups_per_minute)

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Create tables, let the runner re-adopt what was running, then start queued jobs."""
        await asyncio.to_thread(db.init_db, self.engine)
        await security.prepare(self.settings.bcrypt_rounds)
        active = await self.db(lambda s: crud.jobs_with_status(s, statuses=WITH_RUNNER))
        if active:
            log.info("%d jobs were active when the service stopped; handing them to the runner", len(active))
        await self.runner.start([job_spec(job) for job in active])
        for job in await self.db(lambda s: crud.recently_succeeded(s, limit=PRIME_JOBS)):
            self._spawn_learning(job)
        self.tracker.start()
        self.events.start()
        self.callbacks.start()
        self.dispatcher.start()
        self.dispatcher.wake()
        self.reconciler.start()

    async def stop(self) -> None:
        await self.reconciler.stop()
        await self.dispatcher.stop()
        for task in list(self._learning):
            task.cancel()
        await self.tracker.stop()
        await self.events.stop()
        await self.runner.stop()
        await self.callbacks.stop()
        self.engine.dispose()

    def session(self) -> Session:
        """A short session; loaded objects stay readable after it closes (threads only: from
        the event loop use `db`)."""
        return Session(self.engine, expire_on_commit=False)

    async def db(self, work: Callable[[Session], T]) -> T:
        """`work(session)` off the event loop (db.in_thread)."""
        return await db.in_thread(self.engine, work)

    async def known_user(self, username: str) -> User | None:
        """The account, from memory after the first look-up: every request checks its token's
        user, and this saves that query on the hot path (GET /jobs/{id} polling)."""
        user = self._users.get(username)
        if user is None:
            user = await self.db(lambda s: crud.get_user(s, username=username))
            if user is not None:
                self._users[username] = user
        return user

    # --- jobs ---------------------------------------------------------------------------------

    async def submit(self, owner: str, request: JobCreate) -> Job:
        """Price the request and record it as queued; the dispatcher admits it when its class
        has room. Raises NoSuchDevice, TooExpensive, TooManyActiveJobs or QueueFull."""
        params = request.params()
        check_device(params, self.runner.snapshot({}))
        estimate = await asyncio.to_thread(estimated_iterations, params)  # ~10-200 ms of NumPy
        check_cost(estimate, self.settings.max_job_iterations)
        job = await self.db(
            lambda s: job_status.create(
                s,
                owner=owner,
                params=params.model_dump(mode="json"),
                callback_url=request.callback_url,
                runner=self.runner.name,
                max_active=self.settings.max_active_jobs_per_user,
                priority=request.priority,
                estimated_iterations=estimate,
                max_queued=self.settings.max_queued_jobs,
                retry_after=self.settings.queue_full_retry_after_seconds,
            )
        )
        log.info("job %s queued for %s (%.3g iterations estimated)", job.id, owner, estimate)
        self.metrics.job_submitted()
        self.tracker.notify(job.id)
        self.dispatcher.wake()
        return job

    async def cancel(self, job: Job) -> JobPublic:
        """Stop an active job; it stays, `cancelled`, with its logs and what it stored.
        Raises JobFinished when it had ended (perhaps while this ran)."""
        if job.status in FINISHED:
            raise JobFinished(job.status)
        final = await self._stop(job)
        if final.status != "cancelled":
            raise JobFinished(final.status)
        log.info("job %s cancelled", job.id)
        return final

    async def _stop(self, job: Job) -> JobPublic:
        """End the job if it is active (the runner reports its end); its document after that."""
        if job.status in WITH_RUNNER:
            await self.runner.cancel(job.id)
        if job.status in ACTIVE:  # queued, or a runner that reported nothing: it ends here
            await self.tracker.report(StatusReport(job.id, "cancelled"))
        return await self.db(lambda s: JobPublic.of(s.get(Job, job.id) or job))

    async def delete(self, job: Job) -> JobPublic:
        """Cancel it if active, remove its process/Job and stored objects, then the record."""
        final = await self._stop(job)
        await asyncio.to_thread(self.storage.delete_prefix, job.result_prefix)
        self.runner.forget(job.id)
        await self.db(lambda s: crud.delete_job(s, job_id=job.id))
        self.tracker.notify(job.id)
        log.info("job %s deleted", job.id)
        return final

    async def logs(self, job: Job) -> str | None:
        """The runner's copy while it has one, else the `job.log` saved beside the result."""
        try:
            text = await self.runner.logs(job.id)
        except Exception as exc:  # e.g. the API server is away: the saved copy may still answer
            log.warning("job %s: live log unavailable: %s", job.id, exc)
            text = None
        if text is not None:
            return text
        saved = await asyncio.to_thread(self.read_object, f"{job.result_prefix}job.log")
        return saved.decode("utf-8", "replace") if saved is not None else None

    def read_object(self, key: str) -> bytes | None:
        """A small stored object whole (logs, result.json), or None when there is none."""
        if self.storage.stat(key) is None:
            return None
        return b"".join(self.storage.iter_bytes(key))

    # --- operations ---------------------------------------------------------------------------

    def job_counts(self) -> dict[str, int]:
        with self.session() as session:
            return crud.count_by_status(session)

    async def problems(self, exclude: Collection[str] = ()) -> dict[str, str]:
        """What /readyz reports: a sentence per part that cannot work, none when ready."""
        found: dict[str, str] = {}
        checks = {
            "database": lambda: asyncio.to_thread(db.check, self.engine),
            "storage": lambda: asyncio.to_thread(self.storage.check),
            "runner": self.runner.check,
        }
        for name, check in checks.items():
            if name in exclude:
                continue
            try:
                await asyncio.wait_for(check(), self.settings.storage_read_timeout)
            except Exception as exc:  # whatever the failure, the answer is "not ready, because ..."
                found[name] = db.describe(exc)
        return found

    def _started(self, job: Job) -> None:
        queued = seconds_between(job.created_at, job.started_at)
        if queued is not None:
            self.metrics.job_started(queued)

    def _admitted(self, job: Job) -> None:
        self.metrics.job_admitted(job.placement or "cpu", seconds_between(job.created_at, job.admitted_at))

    def _finished(self, job: Job) -> None:
        self.metrics.job_finished(job.status, seconds_between(job.started_at, job.finished_at))
        self.dispatcher.wake()  # a slot is free
        if job.status == "succeeded":
            self._spawn_learning(job)
        if job.callback_url:
            self.callbacks.wake()  # its callback became due with its end

    def _spawn_learning(self, job: Job) -> None:
        task = asyncio.get_running_loop().create_task(self._learn(job))
        self._learning.add(task)
        task.add_done_callback(self._learning.discard)

    async def _learn(self, job: Job) -> None:
        """Fold a succeeded job's result.json and wall time into its class's throughput."""
        wall = seconds_between(job.started_at, job.finished_at)
        if job.placement not in ("cpu", "gpu") or wall is None:
            return
        try:
            data = await asyncio.to_thread(self.read_object, f"{job.result_prefix}result.json")
            doc: Any = json.loads(data) if data else None
        except (StorageError, ValueError) as exc:  # the estimate just stays as it was
            log.warning("job %s: result.json unreadable for the throughput: %s", job.id, exc)
            return
        if isinstance(doc, dict) and self.throughput.learn(job.placement, doc, wall):  # type: ignore[arg-type]
            c = self.throughput.classes[job.placement]  # type: ignore[index]
            log.info("%s throughput: %.3g iterations/s, %.2f s start-up", job.placement, c.rate, c.startup)
