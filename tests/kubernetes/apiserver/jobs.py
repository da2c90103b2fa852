"""The Job controller: a Job's defaults and pod selector, one pod at a time (as quota admission
lets it be created), backoffLimit and activeDeadlineSeconds, the conditions 1.31's controller
writes (FailureTarget before Failed, SuccessCriteriaMet before Complete, in updates of their
own), and deletion with Background/Foreground propagation or orphaning."""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Any

from .events import record
from .resources import Obj, now_iso

if TYPE_CHECKING:
    from .server import FakeApiServer

DEADLINE_MESSAGE = "Job was active longer than specified deadline"


def _condition(job: Obj, kind: str) -> Obj | None:
    return next((c for c in job["status"].get("conditions") or [] if c["type"] == kind), None)


def _select_own_pods(job: Obj) -> None:
    """What the Job API adds once the uid exists (no manualSelector): a selector on the
    controller uid, and its labels on the pod template.
    https://kubernetes.io/docs/concepts/workloads/controllers/job/#specifying-your-own-pod-selector"""
    spec, meta = job["spec"], job["metadata"]
    if spec.get("manualSelector"):
        return
    spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": meta["uid"]}}
    template = spec["template"].setdefault("metadata", {})
    template.setdefault("labels", {}).update(
        {
            "batch.kubernetes.io/controller-uid": meta["uid"],
            "batch.kubernetes.io/job-name": meta["name"],
            "controller-uid": meta["uid"],
            "job-name": meta["name"],
        }
    )


class JobController:
    """Runs each created Job in a thread of its own; its pods' lives are the kubelet's."""

    def __init__(self, api: FakeApiServer) -> None:
        self.api = api
        self.store = api.store
        self.ended_at: dict[str, float] = {}  # Job name -> monotonic time its end was written

    def create(self, ns: str, body: Obj) -> Obj:
        job = self.store.create("jobs", ns, self._default(body), _select_own_pods)
        self.api.spawn(self.run, ns, job["metadata"]["name"])
        return job

    def delete(self, ns: str, job: Obj, policy: str) -> None:
        """A Job goes at once with Background propagation, its pods terminating afterwards; with
        Foreground it waits for them; without a policy its pods are orphaned."""
        name = job["metadata"]["name"]
        if policy == "Foreground":
            self.store.update("jobs", ns, name, lambda j: j["metadata"].update(
                deletionTimestamp=now_iso(), finalizers=["foregroundDeletion"]))
        else:
            self.store.delete("jobs", ns, name)
        uid = job["metadata"]["uid"]
        owned = [
            p["metadata"]["name"] for p in self.store.list("pods", ns)[0]
            if any(ref.get("uid") == uid for ref in p["metadata"].get("ownerReferences", []))
        ]
        if policy in ("Background", "Foreground"):  # the garbage collector deletes the dependents
            for pod in owned:
                self.api.kubelet.terminate_pod(ns, pod, None)
            if policy == "Foreground":
                self.api.spawn(self._delete_when_gone, ns, name, owned)
        else:  # batch/v1 Jobs default to orphaning their pods
            for pod in owned:
                self.store.update("pods", ns, pod, lambda p: p["metadata"].pop("ownerReferences", None))

    def _default(self, body: Obj) -> Obj:
        """Defaults the Job API would set; the selector and its labels come once the uid exists."""
        body = copy.deepcopy(body)
        spec = body.setdefault("spec", {})
        spec.setdefault("parallelism", 1)
        spec.setdefault("completions", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
        pod_spec = spec["template"].setdefault("spec", {})
        pod_spec.setdefault("dnsPolicy", "ClusterFirst")
        pod_spec.setdefault("schedulerName", "default-scheduler")
        for c in pod_spec.get("containers", []):
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            c.setdefault("imagePullPolicy", "IfNotPresent")
        pod_spec.setdefault("terminationGracePeriodSeconds", self.api.default_grace_seconds)
        body["status"] = {}
        return body

    def _delete_when_gone(self, ns: str, name: str, pods: list[str]) -> None:
        while not self.api.closing and any(self.store.get("pods", ns, p) for p in pods):
            time.sleep(self.api.tick)
        self.store.delete("jobs", ns, name)

    def run(self, ns: str, name: str) -> None:
        started = time.monotonic()
        self.store.update(
            "jobs",
            ns,
            name,
            lambda j: j["status"].update(
                startTime=now_iso(), active=0, ready=0, terminating=0, uncountedTerminatedPods={}
            ),
        )
        refused = False
        while not self.api.closing:
            job = self.store.get("jobs", ns, name)
            if job is None:
                return
            deadline = job["spec"].get("activeDeadlineSeconds")
            refusal = self.api.quotas.refusal(ns, job)
            if refusal:
                if not refused:  # a cluster aggregates the retries into one event's count
                    record(self.store, ns, job, "Job", "FailedCreate", refusal, "Warning")
                    refused = True
                if deadline and time.monotonic() > started + deadline:
                    self._finish_job(ns, name, "Failed", "DeadlineExceeded", DEADLINE_MESSAGE)
                    return
                time.sleep(self.api.tick * 5)
                continue
            pod = self._create_pod(ns, job)
            record(self.store, ns, job, "Job", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}")
            self.store.update("jobs", ns, name, lambda j: j["status"].update(active=1))
            outcome = self.api.kubelet.run_pod(ns, pod, job, started + deadline if deadline else None)
            job = self.store.get("jobs", ns, name)
            if job is None or job["metadata"].get("deletionTimestamp"):
                return
            if _condition(job, "FailureTarget"):  # the deadline passed; its pods are gone now
                self._finish_job(ns, name, "Failed", "DeadlineExceeded", DEADLINE_MESSAGE)
                return
            if outcome == "gone":
                return
            if outcome == "succeeded":
                self.store.update(
                    "jobs", ns, name, lambda j: j["status"].update(active=0, ready=0, succeeded=1)
                )
                self._finish_job(
                    ns, name, "Complete", "CompletionsReached", "Reached expected number of succeeded pods"
                )
                return
            job = self.store.update(
                "jobs",
                ns,
                name,
                lambda j: j["status"].update(active=0, ready=0, failed=j["status"].get("failed", 0) + 1),
            )
            if job is None:
                return
            if job["status"]["failed"] > job["spec"]["backoffLimit"]:
                self._finish_job(
                    ns, name, "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
                )
                return

    def deadline_passed(self, ns: str, name: str) -> None:
        """activeDeadlineSeconds passed while a pod exists: FailureTarget now, the pods deleted
        gracefully, and Failed once they are gone (the Job controller of 1.31)."""
        job = self.store.get("jobs", ns, name)
        if job is None or _condition(job, "FailureTarget"):
            return
        self._add_condition(ns, name, "FailureTarget", "DeadlineExceeded", DEADLINE_MESSAGE)
        for pod in self.store.list("pods", ns, f"job-name={name}")[0]:
            if pod.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
                self.api.kubelet.terminate_pod(ns, pod["metadata"]["name"], None)

    def _add_condition(
        self, ns: str, name: str, kind: str, reason: str, message: str, **status: Any
    ) -> Obj | None:
        ts = now_iso()

        def change(j: Obj) -> None:
            kept = [c for c in j["status"].get("conditions") or [] if c["type"] != kind]
            j["status"]["conditions"] = [*kept, {
                "type": kind, "status": "True", "reason": reason, "message": message,
                "lastProbeTime": ts, "lastTransitionTime": ts,
            }]
            j["status"].update(status)

        return self.store.update("jobs", ns, name, change)

    def _finish_job(self, ns: str, name: str, kind: str, reason: str, message: str) -> None:
        """The terminal condition, after FailureTarget / SuccessCriteriaMet in an update of its
        own (as 1.31's Job controller writes them): a watcher sees the target first."""
        target = "SuccessCriteriaMet" if kind == "Complete" else "FailureTarget"
        job = self.store.get("jobs", ns, name)
        if job is not None and not _condition(job, target):
            self._add_condition(ns, name, target, reason, message)
        extra: Obj = {"active": 0, **({"completionTime": now_iso()} if kind == "Complete" else {})}
        job = self._add_condition(ns, name, kind, reason, message, **extra)
        self.ended_at[name] = time.monotonic()
        if job is not None:
            record(
                self.store,
                ns,
                job,
                "Job",
                "Completed" if kind == "Complete" else reason,
                message,
                "Normal" if kind == "Complete" else "Warning",
            )

    def _create_pod(self, ns: str, job: Obj) -> Obj:
        meta, template = job["metadata"], job["spec"]["template"]
        uid = meta["uid"]
        labels = dict(template.get("metadata", {}).get("labels") or {})  # incl. controller-uid, job-name
        spec = copy.deepcopy(template["spec"])
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)
        return self.store.create(
            "pods",
            ns,
            {
                "metadata": {
                    "generateName": meta["name"] + "-",
                    "labels": labels,
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "Job",
                            "name": meta["name"],
                            "uid": uid,
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": spec,
                "status": {"phase": "Pending", "qosClass": "Burstable"},
            },
        )
