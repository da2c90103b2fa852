"""KubernetesRunner: one batch/v1 Job per request; the I/O shell around `tracking.decide`.

A render array's Job is Indexed: it starts with the tasks the scheduler admitted as its
`parallelism`, and each later admission raises that (a PATCH); its tasks are reported one by
one (see tasks.py). A retry replaces the ended Job with one for the tasks with no part stored.

Client reads never reach the API server: the runner reports changes through `report` and the
tracker writes them to the DB. API calls are: create/delete per job, one list + one long watch
per kind (independent of how many clients poll), pods/log for /logs while a job runs, and, when
a Job ends, one log read and one events list per pod so nothing vanishes with the pod; a Job
still without a pod after a few seconds gets its events read (why the pod cannot be created).

The two reflectors (Jobs, Pods) hold the only copy of what the cluster shows. On every watch
event, every sweep and every step of its own, the runner asks `tracking.decide` what a job's
state is now and carries out the actions it returns. All of that happens on the event loop:
the reflector threads only hand events over, so no state is shared between threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k

from job_image.storage import Storage, StorageError
from scheduler.admission.throughput import DeviceClass
from scheduler.core.config import Settings
from scheduler.runners.base import JobSpec, Report, RunnerUnavailable, StatusReport
from scheduler.runners.kubernetes import adoption, capacity, errors, objects, sweep, tracking
from scheduler.runners.kubernetes.access import AccessCheck
from scheduler.runners.kubernetes.artifacts import Artifacts
from scheduler.runners.kubernetes.cluster import Cluster
from scheduler.runners.kubernetes.status import Observation, newest_started
from scheduler.runners.kubernetes.tracking import JobState, Phase
from scheduler.runners.kubernetes.watches import Watches

log = logging.getLogger(__name__)

DEDUPED = (tracking.ReadEvents, tracking.Delete)  # one of each in flight per job


def _now() -> datetime:
    return datetime.now(UTC)


def _job_id(obj: Any) -> str | None:
    return (obj.metadata.labels or {}).get(objects.JOB_ID_LABEL)


class KubernetesRunner:
    name = "kubernetes"
    per_replica = False  # every replica's watches see every Job

    def __init__(self, settings: Settings, report: Report, storage: Storage) -> None:
        self.settings, self.report, self.storage = settings, report, storage
        self.namespace = settings.kube_namespace
        self.cluster = Cluster(settings)
        self.watches = Watches()
        self.artifacts = Artifacts(self.cluster, storage, settings.kube_log_limit_bytes, self.watches)
        self.access = AccessCheck(self.namespace, self.cluster.allowed)
        self.policy = tracking.Policy(
            pending_deadline=settings.job_pending_deadline_seconds,
            capacity_deadline=settings.job_capacity_deadline_seconds,
            events_after=sweep.period(settings.job_pending_deadline_seconds),
            orphan_margin=settings.kube_orphan_min_age_seconds,
        )
        self.states: dict[str, JobState] = {}
        self.placements: dict[str, DeviceClass] = {}  # the class each job was submitted in
        self.adopted = False  # the first lists are in and every known job was classified
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy: set[tuple[str, type]] = set()  # (job id, action type) in flight
        # Built before the service reads its active jobs from the DB (see KUBE_ORPHAN_MIN_AGE_SECONDS).
        self._built_at = _now()

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self, active: list[JobSpec]) -> None:
        """Start both watches; once both have listed, adopt `active` (or say what became of them)."""
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.cluster.connect)
        for spec in active:
            self.states[spec.job_id] = JobState(spec.job_id, Phase.ADOPTING, prefix=spec.result_prefix)
        handlers = {
            "pods": self._handler(self._on_pod), "jobs": self._handler(self._on_job),
            "resourcequotas": lambda kind, quota: None,  # read when the dispatcher plans: see snapshot
        }
        self.watches.start(self.cluster, self.settings, handlers, lambda: self._in_loop(self._adopt))
        every, cap = self.policy.events_after, self.settings.kube_reconnect_backoff_max
        self._spawn(sweep.sweep(lambda: list(self.states), self._decide, every, cap))
        try:
            await self.access.run()
        except errors.KubeError as exc:  # the watches keep retrying; /readyz says why
            log.warning("kubernetes access check failed: %s", exc)

    async def stop(self) -> None:
        """Stop watching; Jobs keep running and are adopted on the next start."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self.watches.stop)
        await asyncio.to_thread(self.cluster.close)

    # --- the Runner interface ------------------------------------------------------------------

    def capacity(self) -> int:
        """Tasks that may still start. A Job created a moment ago counts before the watch has
        shown it: a burst of submits cannot overshoot the limit (and the namespace's quota)
        while the watch catches up; a render array counts its parallelism (see slots_held)."""
        held = sum(tracking.slots_held(s) for s in self.states.values())
        return max(0, self.settings.kube_max_active_jobs - held)

    def view(self) -> capacity.KubeView:
        """On the event loop: an immutable view for the dispatcher's thread (capacity.py)."""
        held = self.settings.kube_max_active_jobs - self.capacity()
        return capacity.capture(self.settings, self.watches, held=held, states=self.states,
                                placements=self.placements)

    def live(self) -> set[str] | None:
        """The jobs this runner follows; None until the first lists are in (it cannot tell yet)."""
        return set(self.states) if self.adopted else None

    async def submit(self, job: JobSpec) -> None:
        """Start the tasks `job.tasks`: create the job's Job with them as its parallelism, or
        raise the parallelism of the Job that runs (a render array's tasks admitted later).
        A render array whose Job has ended (a retry) gets a new Job for its tasks with no part
        stored. RunnerUnavailable keeps the tasks queued while the API server is away."""
        state = self.states.get(job.job_id)
        if state is not None and state.phase in (Phase.EXPECTED, Phase.TRACKING) and not state.gone:
            await self._scale(job, state)
            return
        run = await self._to_run(job)
        if run == ():
            log.info("job %s: every task's part is stored; no Job to run", job.job_id)
            return
        completions = job.total if run is None else len(run)
        parallelism = min(len(job.tasks), completions)
        body = objects.make_job(job, self.settings, run=run, parallelism=parallelism)
        self.placements[job.job_id] = job.placement
        try:
            created = await asyncio.to_thread(self.cluster.create_job, body, job.job_id)
        except (errors.Unreachable, errors.ServerError, errors.Unauthorized) as exc:
            raise RunnerUnavailable(str(exc)) from exc
        except errors.Forbidden as exc:
            if exc.quota:  # the namespace's ResourceQuota is full: wait for a slot
                raise RunnerUnavailable(str(exc)) from exc
            raise
        self.states[job.job_id] = tracking.submitted(
            job.job_id, job.result_prefix, created.metadata.uid,
            parallelism=parallelism, completions=completions,
        )
        log.info("created Job %s (%d of %d tasks at once)", body.metadata.name, parallelism, completions)
        self._decide(job.job_id)

    async def _to_run(self, job: JobSpec) -> tuple[int, ...] | None:
        """A render array's tasks with no part stored yet (`parts/<i>.json`, written last);
        None when that is all of them (and for a single frame)."""
        if job.total == 1:
            return None
        try:
            stored = await asyncio.to_thread(self.storage.list, f"{job.result_prefix}parts/")
        except StorageError as exc:
            raise RunnerUnavailable(f"the stored parts cannot be listed: {exc}") from exc
        done = {o.name for o in stored}
        run = tuple(i for i in range(job.total) if f"{i}.json" not in done)
        return None if len(run) == job.total else run

    async def _scale(self, job: JobSpec, state: JobState) -> None:
        """More of a render array's tasks admitted: raise its Job's parallelism by as many. The
        Job controller starts the lowest waiting indexes, the ones the scheduler admitted."""
        try:
            parallelism = await asyncio.to_thread(
                self.cluster.raise_parallelism, job.job_id, len(job.tasks), state.completions
            )
        except errors.KubeError as exc:
            raise RunnerUnavailable(errors.refusal(exc, "patch", "jobs.batch", self.namespace)) from exc
        if job.job_id in self.states:
            self.states[job.job_id] = tracking.scaled(self.states[job.job_id], parallelism)
        log.info("Job %s: %d tasks at once", objects.job_name(job.job_id), parallelism)

    async def cancel(self, job_id: str) -> None:
        """Delete the Job and its pods. A delete that does not go through raises
        RunnerUnavailable saying why, and leaves the job as it was: its own end is what gets
        reported. Until the delete answers, watch events do not end the job: once it has, the
        pod may fail from our SIGTERM, which is still a cancel. A started job's log is saved
        first: the delete takes its pod, and the pod's log, with it."""
        state = self.states.get(job_id)
        if state is not None:
            self.states[job_id] = tracking.cancelling(state)
            if state.phase is Phase.TRACKING and state.prefix and self.watches.pods(job_id):
                await self._save_as_is(job_id, state.prefix)
        try:
            purged = await asyncio.to_thread(self.cluster.delete_job, job_id)
        except errors.KubeError as exc:
            if job_id in self.states:
                self.states[job_id] = tracking.cancel_refused(self.states[job_id])
                self._decide(job_id)  # what the watches saw meanwhile counts
            raise RunnerUnavailable(errors.refusal(exc, "delete", "jobs.batch", self.namespace)) from exc
        if job_id in self.states:
            self.states[job_id], actions = tracking.cancelled(self.states[job_id], purged=purged, now=_now())
            task = self._run(job_id, actions)
            if task is not None:
                await task  # the end is reported before this returns

    def forget(self, job_id: str) -> None:
        """The service deleted the job's record: report and save nothing more for it, and remove
        its Job (a finished one before its TTL; one whose create is in flight when it shows)."""
        state = self.states.get(job_id)
        if state is None or state.gone:
            self.states.pop(job_id, None)
            self.placements.pop(job_id, None)
            return
        log.info("removing Job %s: its job was deleted", objects.job_name(job_id))
        self.states[job_id] = tracking.orphaned(state)
        self._decide(job_id)

    async def logs(self, job_id: str) -> str | None:
        """The live pod's log; None once the job has ended (then job.log in storage answers)."""
        state = self.states.get(job_id)
        if state is None or state.phase in (Phase.ENDED, Phase.ORPHAN):
            return None
        pod = newest_started(self.watches.pods(job_id))
        if pod is None:
            return None
        return await self._quietly(f"no live log for {job_id}", self.artifacts.read_log, pod.metadata.name)

    async def check(self) -> None:
        """Raise a sentence when Jobs cannot be run: a missing verb, or no API server."""
        await self.access.run()
        self.access.raise_if_denied()
        jobs = self.watches.reflectors.get("jobs")
        if jobs is not None and not jobs.healthy:
            raise errors.Unreachable(jobs.last_error or "the Job watch has not listed yet")

    # --- what the watches show -----------------------------------------------------------------

    def _in_loop(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(fn, *args)

    def _handler(self, handler: Callable[[str, Any], None]) -> Callable[[str, Any], None]:
        """Reflector threads hand events to the event loop; all state changes happen there."""
        return lambda kind, obj: self._in_loop(handler, kind, obj)

    def _on_job(self, kind: str, job: k.V1Job) -> None:
        job_id = _job_id(job)
        if not job_id:
            return
        if job_id not in self.states:
            cached = self.watches.job(job_id)
            if cached is None or cached.metadata.deletion_timestamp:
                return  # gone before it was followed: nothing to do
            self.states[job_id] = JobState(job_id, Phase.TRACKING if self.adopted else Phase.UNKNOWN)
        self._decide(job_id)

    def _on_pod(self, kind: str, pod: k.V1Pod) -> None:
        job_id = _job_id(pod)
        if job_id in self.states:
            self._decide(job_id)

    def _adopt(self) -> None:
        """On the loop, once both watches have listed (whichever thread finished last)."""
        if self.adopted or not self.watches.listed():
            return
        self.adopted = True
        for job_id in self.watches.job_ids():  # listed, though their events may not be handled yet
            self.states.setdefault(job_id, JobState(job_id, Phase.UNKNOWN))
        for job_id, state in list(self.states.items()):
            self.states[job_id], actions = adoption.adopt(
                state, self.watches.job(job_id), self.watches.pods(job_id),
                built_at=self._built_at, margin=self.policy.orphan_margin,
            )
            self._decide(job_id, actions)

    # --- carrying decisions out ----------------------------------------------------------------

    def _decide(self, job_id: str, actions: list[tracking.Action] | None = None, events: Any = None) -> None:
        state = self.states.get(job_id)
        if state is None:
            return
        job, pods = self.watches.job(job_id), self.watches.pods(job_id)
        self.states[job_id], more = tracking.decide(state, job, pods, events, _now(), self.policy)
        self._run(job_id, [*(actions or []), *more])

    def _run(self, job_id: str, actions: list[tracking.Action]) -> asyncio.Task[None] | None:
        """Carry the actions out in order, in one task (awaitable, e.g. by cancel)."""
        todo = []
        for action in actions:
            if isinstance(action, tracking.Forget):
                self.states.pop(job_id, None)
                self.placements.pop(job_id, None)
            elif isinstance(action, DEDUPED) and (job_id, type(action)) in self._busy:
                continue
            else:
                if isinstance(action, DEDUPED):
                    self._busy.add((job_id, type(action)))
                todo.append(action)
        return self._spawn(self._carry_out(job_id, todo)) if todo else None

    async def _carry_out(self, job_id: str, actions: list[tracking.Action]) -> None:
        for action in actions:
            try:
                await self._one(job_id, action)
            finally:
                self._busy.discard((job_id, type(action)))

    async def _one(self, job_id: str, action: tracking.Action) -> None:
        if isinstance(action, tracking.Report):
            ok, known = await self._emit(job_id, action.obs)
            key = (action.obs.status, action.obs.message, action.obs.started_at)
            self._step(job_id, tracking.progress_reported, key, ok=ok, known=known)
        elif isinstance(action, tracking.ReportTask):
            task = action.obs
            ok, known = await self._send(StatusReport(
                job_id=job_id, status=task.status, task=action.task, started_at=task.started_at,
                finished_at=task.finished_at, error=task.error, attempts=task.attempts,
            ))
            self._step(job_id, tracking.task_reported, action.task, task.key, ok=ok, known=known)
        elif isinstance(action, tracking.Finish):
            await self._finish(job_id, action)
        elif isinstance(action, tracking.ReadEvents):
            name = objects.job_name(job_id)
            events = await self._quietly(f"no events read for {name}", self.cluster.events, name)
            self._decide(job_id, events=events or [])
        elif isinstance(action, tracking.Delete):
            log.warning("deleting Job %s: %s", objects.job_name(job_id), action.why)
            why = f"could not delete Job {objects.job_name(job_id)} (retrying)"
            ok = await self._quietly(why, self.cluster.delete_job, job_id) is not None  # gone counts
            self._step(job_id, tracking.delete_done, ok=ok, again=ok)
        elif isinstance(action, tracking.ConcludeLost) and job_id in self.states:
            obs = await asyncio.to_thread(adoption.lost_end, self.states[job_id], self.storage, _now())
            await self._finish(job_id, tracking.Finish(obs, save=False))

    def _step(
        self, job_id: str, transition: Callable[..., JobState], *args: Any, again: bool = True, **kwargs: Any
    ) -> None:
        """Apply a pure transition to the job's current state, then decide again (`again`).
        A step that failed does not decide again at once: the sweep retries it."""
        if job_id in self.states:
            self.states[job_id] = transition(self.states[job_id], *args, **kwargs)
            if again:
                self._decide(job_id)

    async def _finish(self, job_id: str, action: tracking.Finish) -> None:
        obs, state = action.obs, self.states.get(job_id)
        if action.save and state is not None:
            try:
                obs = await self.artifacts.save_end(
                    job_id, obs, prefix=state.prefix, recompute=action.recompute,
                    may_write=lambda: self._may_write(job_id),
                )
            except Exception:  # noqa: BLE001 - the status must be reported whatever happens here
                log.exception("could not save the artifacts of %s", job_id)
        ok, known = await self._emit(job_id, obs)
        self._step(job_id, tracking.end_reported, obs, ok=ok, known=known, again=ok)

    def _may_write(self, job_id: str) -> bool:
        """False once the job's record is deleted: its prefix must then stay empty."""
        return job_id in self.states and self.states[job_id].phase is not Phase.ORPHAN

    async def _save_as_is(self, job_id: str, prefix: str) -> None:
        """job.log, pod.json and events.json as they are now (a cancel's end saves nothing)."""
        try:
            await asyncio.to_thread(
                self.artifacts.save, job_id, prefix, self.watches.job(job_id), self.watches.pods(job_id),
                lambda: self._may_write(job_id),
            )
        except Exception:  # noqa: BLE001 - the cancel goes on whatever happens here
            log.exception("could not save the artifacts of %s before its cancel", job_id)

    async def _emit(self, job_id: str, obs: Observation) -> tuple[bool, bool]:
        """Report one observation of the whole job: (it went through, the DB knows the job)."""
        return await self._send(StatusReport(
            job_id=job_id, status=obs.status, started_at=obs.started_at,
            finished_at=obs.finished_at, error=obs.error, message=obs.message,
        ))

    async def _send(self, report: StatusReport) -> tuple[bool, bool]:
        """Report a change: (it went through, the DB knows the job)."""
        job_id = report.job_id
        state = self.states.get(job_id)
        if state is None or state.phase is Phase.ORPHAN:
            return True, True  # an orphan has no record to report to
        try:
            known = await self.report(report)
        except Exception:  # noqa: BLE001 - a failing tracker must not stop the watch
            log.exception("report for %s failed", job_id)
            return False, True
        if known is False:  # the DB has no record of it: e.g. deleted through another replica
            log.warning("Job %s has no job in the database; deleting it", objects.job_name(job_id))
        return True, known is not False

    async def _quietly(self, what: str, call: Callable[..., Any], *args: Any) -> Any:
        """An API call off the loop; None, logged, when it fails (the caller goes on without)."""
        try:
            return await asyncio.to_thread(call, *args)
        except errors.KubeError as exc:
            log.info("%s: %s", what, exc)
            return None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
