"""The watches the runner reads: one reflector per kind (Jobs, Pods on the service's labels;
the namespace's ResourceQuotas, whoever made them), and the look-ups it needs by job id. Their
caches are the only copy of the cluster's state in the service.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client as k

from scheduler.core.config import Settings
from scheduler.runners.kubernetes import objects
from scheduler.runners.kubernetes.cluster import Cluster
from scheduler.runners.kubernetes.reflector import EventCallback, Reflector

TRACKED = ("jobs", "pods")  # the kinds a job's tracking reads


class Watches:
    def __init__(self) -> None:
        self.reflectors: dict[str, Reflector] = {}

    def start(
        self, cluster: Cluster, settings: Settings, on_event: dict[str, EventCallback], on_sync: Any
    ) -> None:
        """List and watch each kind in `on_event` (its callback), on the reflectors' threads."""
        common: dict[str, Any] = {
            "namespace": settings.kube_namespace,
            "label_selector": objects.SELECTOR,
            "request_timeout": settings.kube_request_timeout,
            "watch_timeout": settings.kube_watch_timeout_seconds,
            "backoff_max": settings.kube_reconnect_backoff_max,
            "on_sync": on_sync,
        }
        kinds = {
            "jobs": (cluster.batch.list_namespaced_job, k.V1Job),
            "pods": (cluster.core.list_namespaced_pod, k.V1Pod),
            "resourcequotas": (cluster.core.list_namespaced_resource_quota, k.V1ResourceQuota),
        }
        for kind, callback in on_event.items():
            list_fn, model = kinds[kind]
            selector = {"label_selector": ""} if kind == "resourcequotas" else {}  # not ours: all of them
            self.reflectors[kind] = Reflector(kind, list_fn, model, callback, **{**common, **selector})
            self.reflectors[kind].start()

    def stop(self) -> None:
        for reflector in self.reflectors.values():
            reflector.stop()
        self.reflectors = {}

    def listed(self) -> bool:
        """The first list of every kind a job's tracking reads is in."""
        return all(kind in self.reflectors and self.reflectors[kind].synced.is_set() for kind in TRACKED)

    def job_ids(self) -> list[str]:
        """The job ids of the Jobs the watch shows now."""
        jobs = self.reflectors.get("jobs")
        labels = ((j.metadata.labels or {}).get(objects.JOB_ID_LABEL) for j in (jobs.live() if jobs else []))
        return [job_id for job_id in labels if job_id]

    def job(self, job_id: str) -> k.V1Job | None:
        jobs = self.reflectors.get("jobs")
        return jobs.get(objects.job_name(job_id)) if jobs else None

    def quotas_listed(self) -> bool:
        quotas = self.reflectors.get("resourcequotas")
        return quotas is not None and quotas.synced.is_set()

    def quotas(self) -> list[k.V1ResourceQuota]:
        quotas = self.reflectors.get("resourcequotas")
        return quotas.live() if quotas else []

    def pods(self, job_id: str) -> list[k.V1Pod]:
        pods = self.reflectors.get("pods")
        return pods.select(objects.JOB_ID_LABEL, job_id) if pods else []
