"""Every call the runner makes to the API server, each with the request timeout and errors
mapped to the `errors` family. Connects lazily: the runner can be built without a cluster.
Synchronous (the client is): callers run these in a thread.
"""

from __future__ import annotations

import logging
from typing import Any

from kubernetes import client as k

from scheduler.core.config import Settings
from scheduler.runners.kubernetes import errors, objects, reasons, tasks
from scheduler.runners.kubernetes.access import api_client

log = logging.getLogger(__name__)

RAISE_TRIES = 5  # raises of a Job's parallelism that lost a race before one gives up


class Cluster:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.namespace = settings.kube_namespace
        self.timeout = settings.kube_request_timeout
        self.api: k.ApiClient | None = None

    def connect(self) -> k.ApiClient:
        if self.api is None:
            self.api = api_client(self.settings)
        return self.api

    @property
    def batch(self) -> k.BatchV1Api:
        return k.BatchV1Api(self.connect())

    @property
    def core(self) -> k.CoreV1Api:
        return k.CoreV1Api(self.connect())

    def close(self) -> None:
        if self.api is not None:
            self.api.close()
            self.api = None

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return errors.call(fn, *args, _request_timeout=self.timeout, **kwargs)

    def create_job(self, body: k.V1Job, job_id: str) -> k.V1Job:
        """Create the Job; when it exists already, an earlier attempt went through (e.g. its
        answer timed out): that one is returned if it is this job's, else Conflict. A render
        array's finished Job (a retry of its failed tasks) is deleted and the new one created."""
        try:
            return self._call(self.batch.create_namespaced_job, self.namespace, body)
        except errors.Conflict:
            existing = self.read_job(body.metadata.name)
            if (existing.metadata.labels or {}).get(objects.JOB_ID_LABEL) != job_id:
                raise errors.Conflict(f"a Job named {body.metadata.name} exists and is not ours") from None
            ended = reasons.job_condition(existing, "Complete") or reasons.job_condition(existing, "Failed")
            if not (ended and tasks.is_array(body)):
                log.info("Job %s already existed; adopted", body.metadata.name)
                return existing
        log.info("Job %s had finished; replaced to run the job's tasks again", body.metadata.name)
        self.delete_job(job_id)  # Background: the Job goes at once, its ended pods after it
        return self._call(self.batch.create_namespaced_job, self.namespace, body)

    def raise_parallelism(self, job_id: str, added: int, most: int) -> int:
        """Add `added` to a render array's parallelism (at most `most`); returns it. A JSON patch
        that tests the value it read: two replicas raising at once both count (the loser's
        test fails, a 422, and it reads again)."""
        name = objects.job_name(job_id)
        for _ in range(RAISE_TRIES):
            current = self.read_job(name).spec.parallelism or 0
            wanted = min(most, current + added)
            if wanted == current:
                return current
            path = "/spec/parallelism"
            try:
                self._call(self.batch.patch_namespaced_job, name, self.namespace, [
                    {"op": "test", "path": path, "value": current},
                    {"op": "replace", "path": path, "value": wanted},
                ])
            except errors.Invalid:
                continue
            return wanted
        raise errors.Conflict(f"the parallelism of Job {name} kept changing under {RAISE_TRIES} raises")

    def read_job(self, name: str) -> k.V1Job:
        return self._call(self.batch.read_namespaced_job, name, self.namespace)

    def delete_job(self, job_id: str) -> bool:
        """Delete the Job and its pods; False when there was none (gone is what we wanted).
        Background propagation: the default for batch/v1 would orphan the pods.
        https://kubernetes.io/docs/concepts/architecture/garbage-collection/#cascading-deletion"""
        try:
            self._call(
                self.batch.delete_namespaced_job, objects.job_name(job_id), self.namespace,
                propagation_policy="Background",
            )
        except errors.NotFound:
            return False
        return True

    def read_pod(self, name: str) -> k.V1Pod:
        return self._call(self.core.read_namespaced_pod, name, self.namespace)

    def pod_log(self, name: str, *, tail_lines: int, limit_bytes: int) -> str:
        """Read raw: the byte cap may cut a UTF-8 character, which the client's strict decoding
        would turn into an exception."""
        resp = self._call(
            self.core.read_namespaced_pod_log, name, self.namespace, container=objects.CONTAINER,
            tail_lines=tail_lines, limit_bytes=limit_bytes, _preload_content=False,
        )
        try:
            data = errors.call(resp.read)
        finally:
            resp.release_conn()
        return data.decode("utf-8", errors="replace")

    def events(self, name: str) -> list[k.CoreV1Event]:
        """The events about the object `name` (a Job or a pod)."""
        found = self._call(
            self.core.list_namespaced_event, self.namespace, field_selector=f"involvedObject.name={name}"
        )
        return list(found.items or [])

    def allowed(self, review: k.V1SelfSubjectAccessReview) -> bool:
        answer = self._call(k.AuthorizationV1Api(self.connect()).create_self_subject_access_review, review)
        return bool(answer.status and answer.status.allowed)
