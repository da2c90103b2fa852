"""Artifacts: what is saved beside a job's result when its Job ends, so nothing vanishes with
the pod or the Job's TTL: `job.log` (the newest pod's log tail), `pod.json` (the Job's and pods'
final status) and `events.json` (the events of the Job and its pods). Also the live log read.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from kubernetes import client as k

from job_image.storage import Storage
from scheduler.runners.kubernetes import errors, objects, reasons
from scheduler.runners.kubernetes.cluster import Cluster
from scheduler.runners.kubernetes.status import Observation, observe
from scheduler.runners.kubernetes.watches import Watches

log = logging.getLogger(__name__)

# pods/log reads ask for the last lines (the job's error is its last line) and cap the bytes;
# the kubelet applies the byte cap after the line count, so lines longer than this on average
# keep the head of the tail, still bounded.
LOG_LINE_BYTES = 128
SETTLE_SECONDS = 1.0  # how long a Job's end waits for the Pod watch to deliver the pods' end


def _json(data: Any) -> bytes:
    return json.dumps(data, indent=2, default=str).encode()


class Artifacts:
    def __init__(self, cluster: Cluster, storage: Storage, log_limit_bytes: int, watches: Watches) -> None:
        self.cluster, self.storage, self.limit, self.watches = cluster, storage, log_limit_bytes, watches

    async def save_end(
        self,
        job_id: str,
        end: Observation,
        *,
        prefix: str | None,
        recompute: bool,
        may_write: Callable[[], bool],
    ) -> Observation:
        """Save the log, the final pod state and the events once the pods' end is in; returns
        the end, read again from the pods' final states when it came from the watches."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_SECONDS
        while loop.time() < deadline and any(
            reasons.terminated(p) is None and not p.metadata.deletion_timestamp
            for p in self.watches.pods(job_id)
        ):
            await asyncio.sleep(0.02)  # the Pod watch is a separate stream, often a few ms behind
        pods = await asyncio.to_thread(self.final_pods, self.watches.pods(job_id))
        job = self.watches.job(job_id)
        if recompute and job is not None:
            final = observe(job, pods)
            end = final if final.done else end
        if not prefix:
            log.warning("no result prefix for %s; its log is not saved", job_id)
            return end
        await asyncio.to_thread(self.save, job_id, prefix, job, pods, may_write)
        return end

    def read_log(self, pod_name: str) -> str:
        """The log's last lines, at most KUBE_LOG_LIMIT_BYTES."""
        return self.cluster.pod_log(
            pod_name, tail_lines=max(1, self.limit // LOG_LINE_BYTES), limit_bytes=self.limit
        )

    def final_pods(self, pods: Sequence[k.V1Pod]) -> list[k.V1Pod]:
        """The pods' final states. Jobs and Pods are separate watch streams, so the Job's end can
        arrive before its pod's last update: read a pod once more when the cache lags."""
        return [self._final(p) for p in pods]

    def _final(self, pod: k.V1Pod) -> k.V1Pod:
        if reasons.terminated(pod) is not None or pod.metadata.deletion_timestamp:
            return pod
        try:
            return self.cluster.read_pod(pod.metadata.name)
        except errors.KubeError as exc:  # gone (deadline, cancel): the cached state is the last one
            log.info("pod %s not read: %s", pod.metadata.name, exc)
            return pod

    def save(
        self,
        job_id: str,
        prefix: str,
        job: k.V1Job | None,
        pods: Sequence[k.V1Pod],
        may_write: Callable[[], bool],
    ) -> None:
        """job.log, pod.json, events.json under `prefix`; `may_write` turns False when the job's
        record is deleted meanwhile (its prefix must then stay empty)."""

        def put(name: str, data: bytes, content_type: str) -> None:
            if may_write():
                self.storage.put_bytes(f"{prefix}{name}", data, content_type)

        sanitize = k.ApiClient().sanitize_for_serialization
        pods = sorted(pods, key=reasons.created)
        names = [objects.job_name(job_id), *(p.metadata.name for p in pods)]
        if pods:
            try:
                put("job.log", self.read_log(pods[-1].metadata.name).encode(), "text/plain; charset=utf-8")
            except errors.KubeError as exc:  # e.g. the pod was removed at the deadline
                log.info("no log saved for %s: %s", job_id, exc)
        state = {
            "job": {"name": names[0], "status": sanitize(job.status) if job else None},
            "pods": [{"name": p.metadata.name, "status": sanitize(p.status)} for p in pods],
        }
        put("pod.json", _json(state), "application/json")
        events: list[Any] = []
        for name in names:
            try:
                events.extend(self.cluster.events(name))
            except errors.KubeError as exc:
                log.info("no events saved for %s: %s", name, exc)
        events.sort(key=reasons.event_time)
        put("events.json", _json(sanitize(events)), "application/json")
