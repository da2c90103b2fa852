"""The service's wiring: each part built once per app, connected, started and stopped.

Routes never see this object whole: `api/deps.py` hands each one the parts it uses (the job
operations, the tracker, the storage, accounts, ...).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from sqlmodel import Session

from job_image.storage import Storage, storage_from_env
from scheduler import crud, db
from scheduler.accounts import Accounts
from scheduler.admission.throughput import Throughput
from scheduler.core import files, security
from scheduler.core.config import Settings
from scheduler.core.lock import DataDirLock
from scheduler.deliveries import CallbackDeliveries
from scheduler.dispatcher import Dispatcher, job_spec
from scheduler.events import EventFeed
from scheduler.job_reads import JobReads
from scheduler.jobs import Jobs
from scheduler.learning import Learning
from scheduler.loops import Loops
from scheduler.metrics import Metrics
from scheduler.models import Job
from scheduler.pricing import Pricer
from scheduler.readiness import Readiness
from scheduler.reconciler import Reconciler
from scheduler.replicas import Replicas, load_id
from scheduler.runners import make_runner
from scheduler.statuses import WITH_RUNNER
from scheduler.tracker import Tracker, seconds_between
from scheduler.videos import Videos

log = logging.getLogger(__name__)


class Service:
    def __init__(self, settings: Settings, storage: Storage | None = None) -> None:
        self.settings = settings
        # first of all: a second service on this DATA_DIR refuses here, having touched nothing
        self.lock = DataDirLock(Path(settings.data_dir))
        self.lock.acquire()
        try:
            self._wire(settings, storage)
        except BaseException:
            self.lock.release()
            raise

    def _wire(self, settings: Settings, storage: Storage | None) -> None:
        files.private_dir(Path(settings.data_dir))  # before anything is written into it
        if not settings.minio_endpoint and settings.storage_dir is not None:
            files.private_dir(Path(settings.storage_dir))
        self.engine = db.make_engine(settings.database_url)
        self.job_reads = JobReads(self.engine)
        self.replicas = Replicas(
            self.engine,
            load_id(Path(settings.data_dir)),
            heartbeat_seconds=settings.replica_heartbeat_seconds,
            lost_after=settings.replica_lost_after_seconds,
        )
        self.accounts = Accounts(settings, self.engine)
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
            max_resume_events=settings.events_max_resume,
        )
        self.tracker = Tracker(
            self.engine,
            read_job=self.job_reads.owned,
            max_attempts=settings.job_max_attempts,
            retry_seconds=settings.report_retry_seconds,
            on_started=self._started,
            on_finished=self._finished,
            on_requeued=lambda job: self.dispatcher.wake(),
            on_task_ended=lambda job: self.dispatcher.wake(),  # a slot is free
            on_change=self.events.wake,
        )
        self.runner = make_runner(settings, self.tracker.report, self.storage)
        self.throughput = Throughput()  # learned from finished jobs (result.json)
        self.learning = Learning(self.engine, self.storage, self.throughput)
        self.dispatcher = Dispatcher(
            self.engine, self.runner, self.tracker, retry_max_seconds=settings.dispatch_retry_max_seconds,
            throughput=self.throughput, half_life=settings.fair_share_half_life_seconds,
            replica=self.replicas.id if self.runner.per_replica else None, on_admitted=self._admitted,
        )
        self.reconciler = Reconciler(
            self.engine,
            self.runner,
            self.tracker,
            self.replicas,
            interval=settings.reconcile_interval_seconds,
            grace=settings.job_lost_after_seconds,
        )
        self.pricer = Pricer(
            workers=settings.cost_probe_workers,
            per_user=settings.cost_probes_per_user,
            total=settings.cost_probes_total,
        )
        self.jobs = Jobs(settings, self.engine, self.storage, self.runner, self.tracker, self.pricer,
                         on_submitted=self._submitted)
        self.readiness = Readiness(self.engine, self.storage, self.runner,
                                   timeout=settings.storage_read_timeout)
        self.videos = Videos(self.storage, timeout=settings.video_encode_timeout_seconds)
        self.loops = Loops()

    async def start(self) -> None:
        """Create tables, let the runner re-adopt what was running, then start queued jobs."""
        self.lock.acquire()  # held since __init__, unless this service was stopped and starts again
        await asyncio.to_thread(db.init_db, self.engine)
        await security.prepare(self.settings.bcrypt_rounds)
        await self.replicas.beat()  # registered before recovery: others see this replica alive
        active = await db.in_thread(
            self.engine, lambda s: self.replicas.ours(s, crud.jobs_with_status(s, statuses=WITH_RUNNER))
        )
        if active:  # another replica's jobs are its own (until its heartbeat stops)
            log.info("%d jobs were active when the service stopped; handing them to the runner", len(active))
        ids = [job.id for job in active]
        held = await db.in_thread(self.engine, lambda s: crud.admitted_tasks(s, job_ids=ids))
        await self.runner.start([job_spec(job, held.get(job.id, ())) for job in active])
        await self.learning.prime()
        loops = {
            "heartbeat": self.replicas.run,
            "long-poll-recheck": self.tracker.recheck_waiters,
            "report-retry": self.tracker.retry_unwritten,
            "event-feed": self.events.run,
            "callbacks": self.callbacks.run,
            "dispatcher": self.dispatcher.run,
            "reconciler": self.reconciler.run,
        }
        self.loops.start(loops)
        self.dispatcher.wake()

    async def stop(self) -> None:
        await self.loops.stop()
        await self.videos.stop()
        self.learning.stop()
        self.events.close()
        await self.runner.stop()
        await self.callbacks.close()
        self.pricer.close()
        self.job_reads.close()
        self.engine.dispose()
        self.lock.release()

    # --- hooks: what follows a job's change -----------------------------------------------------

    def job_counts(self) -> dict[str, int]:
        with Session(self.engine) as session:
            return crud.count_by_status(session)

    def _submitted(self, job: Job) -> None:
        self.metrics.job_submitted()
        if job.cached:  # served from a stored render: it has ended already
            self.metrics.result_reused("hit")
            if job.callback_url:
                self.callbacks.wake()
        elif job.follows:  # ends with the render it follows; nothing to admit
            self.metrics.result_reused("merged")
        else:
            self.dispatcher.wake()

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
            self.learning.learn(job)
            if "animation" in (job.array or {}):
                self.videos.start(job)  # its frames are all there: join them now
        if job.callback_url:
            self.callbacks.wake()  # its callback became due with its end
