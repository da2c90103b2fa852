"""KubernetesRunner: one batch/v1 Job per request, status from two watches (Jobs, Pods).

Client reads never reach the API server: the runner reports changes through `report` and the
tracker writes them to the DB. API calls are: create/delete per job, one list + one long watch
per kind (independent of how many clients poll), pods/log for /logs while a job runs, and, when
a Job ends, one log read and one events list per pod so nothing vanishes with the pod; a Job
still without a pod after a few seconds gets its events read (why the pod cannot be created).

A periodic sweep retries what may fail (an end report, an orphan's delete) and enforces the
pending deadline. Jobs whose DB record is gone (orphans) are deleted, never reported or saved.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client as k
from kubernetes import config as kube_config

from job_image.backoff import Backoff
from job_image.storage import Storage, StorageError
from scheduler.core.config import Settings
from scheduler.runners.base import JobSpec, Report, RunnerUnavailable, StatusReport
from scheduler.runners.kubernetes import errors, objects, reasons
from scheduler.runners.kubernetes.reflector import Reflector
from scheduler.runners.kubernetes.status import Observation, observe

log = logging.getLogger(__name__)

# pods/log reads ask for the last lines (the job's error is its last line) and cap the bytes;
# the kubelet applies the byte cap after the line count, so lines longer than this on average
# keep the head of the tail, still bounded.
LOG_LINE_BYTES = 128


@dataclass
class Tracked:
    """What the runner knows about one job."""

    job_id: str
    prefix: str | None = None
    created: bool = False  # this runner created (or adopted) its Job: it holds a slot already
    job: k.V1Job | None = None
    pods: dict[str, k.V1Pod] = field(default_factory=dict)  # kept after deletion: the last state
    reported: tuple[Any, ...] | None = None
    deleted: bool = False  # the Job is gone from the API server
    cancelling: bool = False  # a cancel's delete is in flight: its outcome decides the end
    ending: bool = False  # finalize started; watch events no longer change the outcome
    end: Observation | None = None  # an end whose report failed: the sweep sends it again
    done: bool = False  # the terminal status has been reported
    orphan: bool = False  # its DB record is gone: delete the Job, report and save nothing
    purged: bool = False  # a delete of its Job went through
    no_pod: str | None = None  # why the Job controller cannot create its pod (FailedCreate)
    events_read: bool = False  # its events were read once while it had no pod


def api_client(settings: Settings) -> k.ApiClient:
    """KUBECONFIG (or settings.kubeconfig), else ~/.kube/config, else the pod's service account.
    https://kubernetes.io/docs/tasks/run-application/access-api-from-pod/"""
    cfg = k.Configuration()
    if settings.kubeconfig:
        kube_config.load_kube_config(config_file=settings.kubeconfig, client_configuration=cfg)
    elif os.path.exists(os.path.expanduser(kube_config.KUBE_CONFIG_DEFAULT_LOCATION)):
        kube_config.load_kube_config(client_configuration=cfg)
    else:
        kube_config.load_incluster_config(client_configuration=cfg)
    # urllib3 would retry a refused connection 3 times inside one call; retries are ours (the
    # dispatcher's backoff, the watch loop, the sweep), so a call ends within its timeout.
    cfg.retries = False
    return k.ApiClient(cfg)


class KubernetesRunner:
    name = "kubernetes"

    def __init__(self, settings: Settings, report: Report, storage: Storage) -> None:
        self.settings = settings
        self.report = report
        self.storage = storage
        self.namespace = settings.kube_namespace
        self.timeout = settings.kube_request_timeout
        self.jobs: dict[str, Tracked] = {}
        self._ended: set[str] = set()  # job ids whose end was reported
        self.api: k.ApiClient | None = None
        self.batch: k.BatchV1Api | None = None
        self.core: k.CoreV1Api | None = None
        self.reflectors: list[Reflector] = []
        self.denied: list[str] | None = None  # None until the access check has answered
        self._access_check: asyncio.Future[None] | None = None  # the review round in flight
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._active: list[JobSpec] = []
        self._adopted = False
        # Jobs the DB knows: listed as active at start, or submitted since. Others seen at the
        # first list are classified by _adopt before anything is reported or saved for them.
        self._ours: set[str] = set()
        self._classified = False
        self._forgotten: set[str] = set()  # records deleted while their Job may still appear
        # Built before the service reads its active jobs from the DB (see KUBE_ORPHAN_MIN_AGE_SECONDS).
        self._built_at = _now()

    # --- lifecycle ----------------------------------------------------------------------------

    def _connect(self) -> None:
        if self.api is None:
            try:
                self.api = api_client(self.settings)
            except (kube_config.ConfigException, OSError) as exc:
                raise errors.KubeError(f"no usable Kubernetes configuration: {exc}") from exc
            self.batch, self.core = k.BatchV1Api(self.api), k.CoreV1Api(self.api)

    async def start(self, active: list[JobSpec]) -> None:
        """Start both watches; once both have listed, adopt `active` (or report them)."""
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._connect)
        self._active = list(active)
        self._ours.update(spec.job_id for spec in active)
        for spec in active:
            self._track(spec.job_id).prefix = spec.result_prefix
        common: dict[str, Any] = {
            "namespace": self.namespace,
            "label_selector": objects.SELECTOR,
            "request_timeout": self.timeout,
            "watch_timeout": self.settings.kube_watch_timeout_seconds,
            "backoff_max": self.settings.kube_reconnect_backoff_max,
            "on_sync": self._synced,
        }
        self.reflectors = [
            Reflector("pods", self.core.list_namespaced_pod, k.V1Pod, self._in_loop(self._on_pod), **common),
            Reflector("jobs", self.batch.list_namespaced_job, k.V1Job, self._in_loop(self._on_job), **common),
        ]
        for r in self.reflectors:
            r.start()
        self._spawn(self._sweep())
        try:
            await self._check_access()
        except errors.KubeError as exc:  # the watches keep retrying; /readyz says why
            log.warning("kubernetes access check failed: %s", exc)

    async def stop(self) -> None:
        """Stop watching; Jobs keep running and are adopted on the next start."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(asyncio.to_thread(r.stop) for r in self.reflectors))
        self.reflectors = []
        if self.api is not None:
            await asyncio.to_thread(self.api.close)
            self.api = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _in_loop(self, handler: Any) -> Any:
        """Reflector threads hand events to the event loop; all state changes happen there."""

        def call(kind: str, obj: Any) -> None:
            loop = self._loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(handler, kind, obj)

        return call

    def _synced(self) -> None:
        if not self._adopted and all(r.synced.is_set() for r in self.reflectors):
            self._adopted = True
            loop = self._loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(lambda: self._spawn(self._adopt()))

    async def _adopt(self) -> None:
        """Jobs the DB did not list: orphans are deleted; then the jobs the DB thinks are
        active: re-adopt by label, or say what became of them."""
        for t in list(self.jobs.values()):
            if t.job is not None and t.job_id not in self._ours:
                self._classify(t)
        self._classified = True
        for t in list(self.jobs.values()):
            if t.job_id not in self._ours:
                self._update(t)  # young and unfinished: another replica's, tracked as before
        for spec in self._active:
            t = self._track(spec.job_id)
            if t.job is not None:
                log.info("adopted Job %s", objects.job_name(spec.job_id))
                t.reported = None  # the DB's view may be stale: report once
                self._update(t)
                continue
            if t.done or t.ending:
                continue
            t.ending = True
            result = await asyncio.to_thread(self._stat, f"{spec.result_prefix}result.json")
            if result:
                obs = Observation("succeeded", finished_at=_now())
            else:
                obs = Observation(
                    "failed",
                    finished_at=_now(),
                    error=f"Its Kubernetes Job {objects.job_name(spec.job_id)} no longer exists "
                    "(removed while the service was down) and it left no result.",
                )
            await self._end(t, obs)

    def _classify(self, t: Tracked) -> None:
        """A Job seen at the first list that the DB did not list as active."""
        if observe(t.job, list(t.pods.values())).done:
            # Ended before this start: the DB has its end, or no record at all. Either way
            # there is nothing to report, and its log must not be saved again (its owner may
            # have deleted the prefix). ttlSecondsAfterFinished removes it.
            t.done = True
            return
        created = t.job.metadata.creation_timestamp
        margin = timedelta(seconds=self.settings.kube_orphan_min_age_seconds)
        if created is not None and self._built_at - created > margin:
            log.warning(
                "Job %s has no pending or running job in the database (its record is gone or "
                "has ended); deleting it",
                objects.job_name(t.job_id),
            )
            self._purge(t)

    def _purge(self, t: Tracked) -> None:
        """Mark it an orphan and delete its Job (Background); the sweep retries a failed delete."""
        t.orphan = True
        if not t.purged and not t.deleted:
            self._spawn(self._delete_orphan(t))

    async def _delete_orphan(self, t: Tracked) -> None:
        try:
            await asyncio.to_thread(self._delete, t.job_id)
        except errors.KubeError as exc:
            log.warning("could not delete orphaned Job %s (retrying): %s", objects.job_name(t.job_id), exc)
            return
        t.purged = True  # deleted, or found gone

    def forget(self, job_id: str) -> None:
        """The service deleted the job's record: report and save nothing more for it, and remove
        its Job (a finished one before its TTL; one whose submit raced the delete when it shows)."""
        self._ours.discard(job_id)
        t = self.jobs.get(job_id)
        if t is None or t.deleted:
            self.jobs.pop(job_id, None)
            return
        if t.job is None:
            self._forgotten.add(job_id)  # a create may still be in flight: _on_job purges it
            return
        log.info("removing Job %s: its job was deleted", objects.job_name(job_id))
        self._purge(t)

    def _stat(self, key: str) -> bool:
        try:
            return self.storage.stat(key) is not None
        except StorageError as exc:
            log.warning("cannot stat %s: %s", key, exc)
            return False

    # --- the Runner interface ------------------------------------------------------------------

    def capacity(self) -> int:
        # A Job created a moment ago counts before the watch has shown it: a burst of submits
        # cannot overshoot the limit (and the namespace's quota) while the watch catches up.
        active = sum(
            1 for t in self.jobs.values() if not t.done and not t.deleted and (t.job is not None or t.created)
        )
        return max(0, self.settings.kube_max_active_jobs - active)

    async def submit(self, job: JobSpec) -> None:
        """Create the Job; RunnerUnavailable keeps the job queued while the API server is away."""
        self._connect()
        body = objects.make_job(job, self.settings)
        t = self.jobs.get(job.job_id)
        if t is None or t.done or t.orphan:  # the DB says it starts now: older views are stale
            t = self.jobs[job.job_id] = Tracked(job.job_id)
        t.prefix = job.result_prefix
        self._ours.add(job.job_id)
        self._forgotten.discard(job.job_id)
        self._ended.discard(job.job_id)
        try:
            await asyncio.to_thread(
                errors.call, self.batch.create_namespaced_job, self.namespace, body,
                _request_timeout=self.timeout,
            )
        except errors.Conflict:
            # An earlier attempt went through (e.g. its answer timed out): adopt it if it is ours.
            existing = await asyncio.to_thread(
                errors.call, self.batch.read_namespaced_job, body.metadata.name, self.namespace,
                _request_timeout=self.timeout,
            )
            if (existing.metadata.labels or {}).get(objects.JOB_ID_LABEL) != job.job_id:
                raise errors.Conflict(f"a Job named {body.metadata.name} exists and is not ours") from None
            log.info("Job %s already existed; adopted", body.metadata.name)
        except (errors.Unreachable, errors.ServerError, errors.Unauthorized) as exc:
            raise RunnerUnavailable(str(exc)) from exc
        except errors.Forbidden as exc:
            if exc.quota:  # the namespace's ResourceQuota is full: wait for a slot
                raise RunnerUnavailable(str(exc)) from exc
            raise
        t.created = True
        log.info("created Job %s", body.metadata.name)

    async def cancel(self, job_id: str) -> None:
        """Delete the Job and its pods (Background propagation; the default would orphan them).
        A delete that does not go through raises RunnerUnavailable saying why, and leaves the
        job as it was: its own end is what gets reported."""
        t = self.jobs.get(job_id)  # None: unknown, or ended and already forgotten
        if t is not None:
            # Until the delete answers, watch events must not end the job: once it has, the
            # pod may fail from our SIGTERM, which is still a cancel.
            t.cancelling = True
        try:
            self._connect()
            deleted = await asyncio.to_thread(self._delete, job_id)
        except errors.KubeError as exc:
            if t is not None:
                t.cancelling = False
                self._update(t)  # what the watches saw meanwhile counts
            raise RunnerUnavailable(errors.refusal(exc, "delete", "jobs.batch", self.namespace)) from exc
        if t is None:
            return
        # None deleted: its create may still be in flight (forget() then purges it when it shows).
        t.cancelling, t.purged = False, deleted
        if not t.done and not t.ending:
            t.ending = True
            await self._end(t, Observation("cancelled", finished_at=_now()))

    def _delete(self, job_id: str) -> bool:
        """Delete the Job; False when there was none (already gone is what we wanted)."""
        # https://kubernetes.io/docs/concepts/architecture/garbage-collection/#cascading-deletion
        try:
            errors.call(
                self.batch.delete_namespaced_job, objects.job_name(job_id), self.namespace,
                propagation_policy="Background", _request_timeout=self.timeout,
            )
        except errors.NotFound:
            return False
        return True

    async def logs(self, job_id: str) -> str | None:
        """The live pod's log; None once the Job has ended (then job.log in storage answers)."""
        t = self.jobs.get(job_id)
        pod = _newest_started(t.pods.values()) if t and not t.done else None
        if pod is None or self.core is None:
            return None
        try:
            return await asyncio.to_thread(self._read_log, pod.metadata.name)
        except errors.KubeError as exc:
            log.info("no live log for %s: %s", job_id, exc)
            return None

    def _read_log(self, pod_name: str) -> str:
        """The log's last lines, at most kube_log_limit_bytes. Read raw: the byte cap may cut a
        UTF-8 character, which the client's strict decoding would turn into an exception."""
        limit = self.settings.kube_log_limit_bytes
        resp = errors.call(
            self.core.read_namespaced_pod_log, pod_name, self.namespace,
            container=objects.CONTAINER, tail_lines=max(1, limit // LOG_LINE_BYTES), limit_bytes=limit,
            _preload_content=False, _request_timeout=self.timeout,
        )
        try:
            data = errors.call(resp.read)
        finally:
            resp.release_conn()
        return data.decode("utf-8", errors="replace")

    async def check(self) -> None:
        """Raise a sentence when Jobs cannot be run: a missing verb, or no API server."""
        if self.denied is None:  # one review round at a time, however often /readyz asks
            if self._access_check is None or self._access_check.done():
                self._connect()
                self._access_check = asyncio.ensure_future(self._check_access())
                self._access_check.add_done_callback(lambda t: t.cancelled() or t.exception())
            await asyncio.shield(self._access_check)
        if self.denied:
            raise errors.Forbidden(
                f"the service account may not {', '.join(self.denied)} in namespace {self.namespace}"
            )
        jobs = next((r for r in self.reflectors if r.kind == "jobs"), None)
        if jobs is not None and not jobs.healthy:
            raise errors.Unreachable(jobs.last_error or "the Job watch has not listed yet")

    async def _check_access(self) -> None:
        """One SelfSubjectAccessReview per verb the code uses, in the namespace (no ClusterRole)."""

        def ask() -> list[str]:
            denied = []
            for group, resource, verb in objects.API_ACCESS:
                review = objects.make_access_review(self.namespace, group, resource, verb)
                answer = errors.call(
                    k.AuthorizationV1Api(self.api).create_self_subject_access_review, review,
                    _request_timeout=self.timeout,
                )
                if not (answer.status and answer.status.allowed):
                    denied.append(f"{verb} {resource}" + (f".{group}" if group else ""))
            return denied

        self.denied = await asyncio.to_thread(ask)
        if self.denied:
            log.error("service account lacks: %s", ", ".join(self.denied))

    # --- events (on the loop) ------------------------------------------------------------------

    def _track(self, job_id: str) -> Tracked:
        t = self.jobs.get(job_id)
        if t is None:
            t = self.jobs[job_id] = Tracked(job_id)
        return t

    def _on_job(self, kind: str, job: k.V1Job) -> None:
        job_id = (job.metadata.labels or {}).get(objects.JOB_ID_LABEL)
        if not job_id:
            return
        t = self._track(job_id)
        t.job = job
        t.prefix = t.prefix or (job.metadata.annotations or {}).get(objects.RESULT_PREFIX_ANNOTATION)
        if kind == "DELETED":
            t.deleted = True
            self._forgotten.discard(job_id)
            if t.done or t.orphan:  # removed by ttlSecondsAfterFinished, cancel or purge: forget it
                del self.jobs[job_id]
                return
        elif job_id in self._forgotten and not t.orphan:
            log.warning("Job %s appeared after its job was deleted; deleting it", job.metadata.name)
            self._purge(t)
        self._update(t)

    def _on_pod(self, kind: str, pod: k.V1Pod) -> None:
        job_id = (pod.metadata.labels or {}).get(objects.JOB_ID_LABEL)
        if not job_id:
            return
        if job_id not in self.jobs and (
            kind == "DELETED" or pod.metadata.deletion_timestamp or job_id in self._ended
        ):
            return  # a pod going away after its Job was forgotten: don't track it again
        t = self._track(job_id)
        t.pods[pod.metadata.name] = pod
        self._update(t)

    def _update(self, t: Tracked) -> None:
        if t.job is None or t.ending or t.done or t.orphan or t.cancelling:
            return
        if not self._classified and t.job_id not in self._ours:
            return  # _adopt first decides whether the DB still knows it
        obs = observe(t.job, list(t.pods.values()), t.no_pod)
        if t.deleted and not obs.done:
            obs = Observation(
                "failed", started_at=obs.started_at, finished_at=_now(),
                error=f"Its Kubernetes Job {objects.job_name(t.job_id)} was deleted before it finished.",
            )
        if obs.done:
            t.ending = True
            self._spawn(self._finish(t, obs, derived=True))
            return
        key = (obs.status, obs.message, obs.started_at)
        if key != t.reported:
            t.reported = key
            self._spawn(self._progress(t, obs, key))

    async def _progress(self, t: Tracked, obs: Observation, key: tuple[Any, ...]) -> None:
        if not await self._emit(t, obs) and t.reported == key:
            t.reported = None  # the next event or sweep reports it again

    async def _finish(self, t: Tracked, obs: Observation, derived: bool = False) -> None:
        """Save the pod's log, its final state and the events, then report the end.
        `derived`: obs came from the watches; recompute it once the pods' final states are in."""
        if obs.status != "cancelled":
            try:
                await self._settle(t)
                final_pods = await asyncio.to_thread(self._final_all, list(t.pods.values()))
                t.pods.update((p.metadata.name, p) for p in final_pods)
                if derived and t.job is not None:
                    final = observe(t.job, list(t.pods.values()))
                    obs = final if final.done else obs
                await asyncio.to_thread(self._save_artifacts, t)
            except Exception:  # noqa: BLE001 - the status must be reported whatever happens here
                log.exception("could not save the artifacts of %s", t.job_id)
        await self._end(t, obs)

    async def _end(self, t: Tracked, obs: Observation) -> None:
        """Report the job's end; a failed report is kept in t.end and the sweep sends it again."""
        if not await self._emit(t, obs):
            t.end = obs
            return
        t.end, t.done = None, True
        if t.deleted:
            self.jobs.pop(t.job_id, None)

    async def _emit(self, t: Tracked, obs: Observation) -> bool:
        """Report one observation; False when the report failed."""
        # A job ends once: late watch events may re-create its tracking after it was forgotten.
        if t.orphan or (obs.done and t.job_id in self._ended):
            return True  # an orphan has no record to report to
        try:
            known = await self.report(StatusReport(
                job_id=t.job_id, status=obs.status, started_at=obs.started_at,
                finished_at=obs.finished_at, error=obs.error, message=obs.message,
            ))
        except Exception:  # noqa: BLE001 - a failing tracker must not stop the watch
            log.exception("report for %s failed", t.job_id)
            return False
        if known is False:  # the DB has no record of it: e.g. deleted through another replica
            log.warning("Job %s has no job in the database; deleting it", objects.job_name(t.job_id))
            self._purge(t)
        if obs.done:
            self._ended.add(t.job_id)
        return True

    def _save_artifacts(self, t: Tracked) -> None:
        """job.log, pod.json, events.json under the result prefix (survive the Job's TTL)."""
        if not t.prefix:
            log.warning("no result prefix for %s; its log is not saved", t.job_id)
            return

        def put(name: str, data: bytes, content_type: str) -> None:
            if not t.orphan:  # its record was deleted meanwhile: its prefix must stay empty
                self.storage.put_bytes(f"{t.prefix}{name}", data, content_type)

        sanitize = k.ApiClient().sanitize_for_serialization
        pods = sorted(t.pods.values(), key=reasons.created)
        names = [objects.job_name(t.job_id), *(p.metadata.name for p in pods)]
        if pods:
            try:
                put("job.log", self._read_log(pods[-1].metadata.name).encode(), "text/plain; charset=utf-8")
            except errors.KubeError as exc:  # e.g. the pod was removed at the deadline
                log.info("no log saved for %s: %s", t.job_id, exc)
        state = {
            "job": {"name": names[0], "status": sanitize(t.job.status) if t.job else None},
            "pods": [{"name": p.metadata.name, "status": sanitize(p.status)} for p in pods],
        }
        put("pod.json", _json(state), "application/json")
        events: list[Any] = []
        for name in names:
            try:
                events.extend(self._events(name))
            except errors.KubeError as exc:
                log.info("no events saved for %s: %s", name, exc)
        events.sort(key=reasons.event_time)
        put("events.json", _json(sanitize(events)), "application/json")

    def _events(self, name: str) -> list[k.CoreV1Event]:
        found = errors.call(
            self.core.list_namespaced_event, self.namespace,
            field_selector=f"involvedObject.name={name}", _request_timeout=self.timeout,
        )
        return list(found.items or [])

    async def _settle(self, t: Tracked, timeout: float = 1.0) -> None:
        """Give the Pod watch a moment to deliver the final pod states (the Job watch is a
        separate stream and often a few ms ahead); _final() reads what is still missing."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline and any(
            reasons.terminated(p) is None and not p.metadata.deletion_timestamp for p in t.pods.values()
        ):
            await asyncio.sleep(0.02)

    def _final_all(self, pods: list[k.V1Pod]) -> list[k.V1Pod]:
        return [self._final(p) for p in pods]

    def _final(self, pod: k.V1Pod) -> k.V1Pod:
        """The pod's final state. Jobs and Pods are separate watch streams, so the Job's end can
        arrive before its pod's last update: read the pod once more when the cache lags."""
        if reasons.terminated(pod) is not None or (pod.metadata and pod.metadata.deletion_timestamp):
            return pod
        try:
            fresh = errors.call(
                self.core.read_namespaced_pod, pod.metadata.name, self.namespace,
                _request_timeout=self.timeout,
            )
        except errors.KubeError as exc:  # gone (deadline, cancel): the cached state is the last one
            log.info("pod %s not read: %s", pod.metadata.name, exc)
            return pod
        return fresh

    async def _sweep(self) -> None:
        """Every few seconds, per job: retry a failed end report, an orphan's failed delete or a
        failed progress report; explain a Job without a pod; enforce the pending deadline.
        An error is logged and the loop goes on, backing off while errors repeat: one bad
        object must not end pending-deadline enforcement for every job."""
        period = min(5.0, max(0.2, self.settings.job_pending_deadline_seconds / 10))
        backoff = Backoff(period * 2, max(period, self.settings.kube_reconnect_backoff_max))
        delay = period
        while True:
            await asyncio.sleep(delay)
            failed = False
            for t in list(self.jobs.values()):
                try:
                    await self._sweep_one(t, period)
                except Exception:  # noqa: BLE001 - see the docstring
                    failed = True
                    log.exception("sweep failed for job %s", t.job_id)
            if not failed:
                backoff.reset()
            delay = backoff.next() if failed else period

    async def _sweep_one(self, t: Tracked, period: float) -> None:
        if t.orphan:
            if not t.purged and not t.deleted and t.job is not None:
                await self._delete_orphan(t)
            return
        if t.end is not None and not t.done:
            obs, t.end = t.end, None
            await self._end(t, obs)
            return
        if t.job is None or t.ending or t.done or t.deleted or t.cancelling:
            return
        if not self._classified and t.job_id not in self._ours:
            return  # _adopt decides first
        if t.reported is None:
            self._update(t)
        created = t.job.metadata.creation_timestamp
        if created is None or observe(t.job, list(t.pods.values())).status != "pending":
            return
        age = (_now() - created).total_seconds()
        deadline = self.settings.job_pending_deadline_seconds
        if age >= period and not t.events_read and _podless(t):
            # The pod could not be created (quota, admission): only the Job's events say why.
            t.events_read = True
            await self._explain_podless(t)
        if age < deadline:
            return
        if _podless(t):
            await self._explain_podless(t)  # the newest reason, for the error
        obs = observe(t.job, list(t.pods.values()), t.no_pod)
        if obs.status != "pending" or t.ending or t.done or t.orphan or t.cancelling:
            return  # it moved on while the events were read
        t.ending = True
        failed = Observation(
            "failed", finished_at=_now(), error=f"The job did not start within {deadline} s: {obs.message}"
        )
        self._spawn(self._give_up(t, failed))

    async def _explain_podless(self, t: Tracked) -> None:
        name = objects.job_name(t.job_id)
        try:
            events = await asyncio.to_thread(self._events, name)
        except errors.KubeError as exc:
            log.info("no events read for %s: %s", name, exc)
            return
        t.no_pod = reasons.failed_create(events) or t.no_pod
        self._update(t)

    async def _give_up(self, t: Tracked, obs: Observation) -> None:
        try:
            await asyncio.to_thread(self._delete, t.job_id)
        except errors.KubeError as exc:
            log.warning("could not delete %s after its pending deadline: %s", t.job_id, exc)
        await self._finish(t, obs)


def _now() -> datetime:
    return datetime.now(UTC)


def _podless(t: Tracked) -> bool:
    """No live pod: the Job controller has not (been able to) create one."""
    return all(p.metadata.deletion_timestamp for p in t.pods.values())


def _newest(pods: Any) -> k.V1Pod | None:
    return max(pods, key=reasons.created, default=None)


def _newest_started(pods: Any) -> k.V1Pod | None:
    started = [
        p for p in pods
        if any(cs.state and (cs.state.running or cs.state.terminated)
               for cs in (p.status and p.status.container_statuses) or [])
    ]
    return _newest(started)


def _json(data: Any) -> bytes:
    return json.dumps(data, indent=2, default=str).encode()
