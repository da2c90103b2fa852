"""The Job controller: a Job's defaults, validation and pod selector, one pod at a time (as quota
admission lets it be created), backoffLimit and activeDeadlineSeconds, the conditions 1.31's
controller writes (FailureTarget before Failed, SuccessCriteriaMet before Complete, in updates
of their own), and deletion with Background/Foreground propagation or orphaning. Indexed Jobs
are indexed.py's."""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Any

from .events import record
from .indexed import IndexedRun
from .resources import ApiError, Obj, now_iso

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


def _validate(body: Obj) -> None:
    """What the Job API refuses at create for the fields an Indexed Job uses (a 422 naming the field).
    https://kubernetes.io/docs/concepts/workloads/controllers/job/#backoff-limit-per-index"""
    spec = body.get("spec") or {}
    name = (body.get("metadata") or {}).get("name", "")
    restart = ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy")
    indexed = spec.get("completionMode") == "Indexed"
    problems = []
    if indexed and spec.get("completions") is None:
        problems.append("spec.completions: Required value: when completion mode is Indexed")
    if spec.get("backoffLimitPerIndex") is not None and not indexed:
        problems.append("spec.backoffLimitPerIndex: Invalid value: requires indexed completion mode")
    if spec.get("maxFailedIndexes") is not None and spec.get("backoffLimitPerIndex") is None:
        problems.append("spec.maxFailedIndexes: Required value: when maxFailedIndexes is specified, "
                        "backoffLimitPerIndex must also be specified")
    if spec.get("podFailurePolicy") and restart != "Never":
        problems.append(f'spec.podFailurePolicy: Invalid value: "{restart}": '
                        'only "Never" is supported when podFailurePolicy is specified')
    for i, rule in enumerate((spec.get("podFailurePolicy") or {}).get("rules") or []):
        if rule.get("action") == "FailIndex" and spec.get("backoffLimitPerIndex") is None:
            problems.append(f"spec.podFailurePolicy.rules[{i}].action: Forbidden: "
                            "requires the backoffLimitPerIndex to be set")
    if problems:
        raise ApiError(422, "Invalid", f'Job.batch "{name}" is invalid: {"; ".join(problems)}',
                       {"name": name, "group": "batch", "kind": "Job"})


class JobController:
    """Runs each created Job in a thread of its own; its pods' lives are the kubelet's."""

    def __init__(self, api: FakeApiServer) -> None:
        self.api = api
        self.store = api.store
        self.ended_at: dict[str, float] = {}  # Job name -> monotonic time its end was written

    def create(self, ns: str, body: Obj) -> Obj:
        _validate(body)
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
        # backoffLimitPerIndex leaves the Job-wide limit unbounded unless it is set
        spec.setdefault("backoffLimit", 2**31 - 1 if spec.get("backoffLimitPerIndex") is not None else 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        replace = "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed"
        spec.setdefault("podReplacementPolicy", replace)
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
        job = self.store.update(
            "jobs",
            ns,
            name,
            lambda j: j["status"].update(
                startTime=now_iso(), active=0, ready=0, terminating=0, uncountedTerminatedPods={}
            ),
        )
        if job is not None and job["spec"]["completionMode"] == "Indexed":
            IndexedRun(self, ns, name, started).run()
            return
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
                    self.finish_job(ns, name, "Failed", "DeadlineExceeded", DEADLINE_MESSAGE)
                    return
                time.sleep(self.api.tick * 5)
                continue
            pod = self.create_pod(ns, job, job["metadata"]["name"] + "-")
            record(self.store, ns, job, "Job", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}")
            self.store.update("jobs", ns, name, lambda j: j["status"].update(active=1))
            outcome = self.api.kubelet.run_pod(ns, pod, job, started + deadline if deadline else None)
            job = self.store.get("jobs", ns, name)
            if job is None or job["metadata"].get("deletionTimestamp"):
                return
            if _condition(job, "FailureTarget"):  # the deadline passed; its pods are gone now
                self.finish_job(ns, name, "Failed", "DeadlineExceeded", DEADLINE_MESSAGE)
                return
            if outcome == "gone":
                return
            if outcome == "succeeded":
                self.store.update(
                    "jobs", ns, name, lambda j: j["status"].update(active=0, ready=0, succeeded=1)
                )
                self.finish_job(
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
                self.finish_job(
                    ns, name, "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
                )
                return

    def deadline_passed(self, ns: str, name: str) -> None:
        """activeDeadlineSeconds passed while a pod exists: FailureTarget now, the pods deleted
        gracefully, and Failed once they are gone (the Job controller of 1.31)."""
        job = self.store.get("jobs", ns, name)
        if job is None or _condition(job, "FailureTarget"):
            return
        self.add_condition(ns, name, "FailureTarget", "DeadlineExceeded", DEADLINE_MESSAGE)
        for pod in self.store.list("pods", ns, f"job-name={name}")[0]:
            if pod.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
                self.api.kubelet.terminate_pod(ns, pod["metadata"]["name"], None)

    def add_condition(
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

    def finish_job(self, ns: str, name: str, kind: str, reason: str, message: str) -> None:
        """The terminal condition, after FailureTarget / SuccessCriteriaMet in an update of its
        own (as 1.31's Job controller writes them): a watcher sees the target first."""
        target = "SuccessCriteriaMet" if kind == "Complete" else "FailureTarget"
        job = self.store.get("jobs", ns, name)
        if job is not None and not _condition(job, target):
            self.add_condition(ns, name, target, reason, message)
        extra: Obj = {"active": 0, **({"completionTime": now_iso()} if kind == "Complete" else {})}
        job = self.add_condition(ns, name, kind, reason, message, **extra)
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

    @staticmethod
    def condition(job: Obj, kind: str) -> Obj | None:
        return _condition(job, kind)

    def create_pod(
        self, ns: str, job: Obj, generate_name: str, labels: Obj | None = None,
        annotations: Obj | None = None, hostname: str | None = None, env: Obj | None = None,
    ) -> Obj:
        """A pod from the Job's template; an Indexed Job's adds its index's labels, annotations,
        hostname and an env var (each container keeps one it sets itself)."""
        meta, template = job["metadata"], job["spec"]["template"]
        uid = meta["uid"]
        labels = {**(template.get("metadata", {}).get("labels") or {}), **(labels or {})}  # incl. job-name
        spec = copy.deepcopy(template["spec"])
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)
        if hostname:
            spec.setdefault("hostname", hostname)
        for container in (spec.get("containers") or []) if env else []:
            if all(e["name"] != env["name"] for e in container.get("env") or []):
                container["env"] = [*(container.get("env") or []), env]
        return self.store.create(
            "pods",
            ns,
            {
                "metadata": {
                    "generateName": generate_name,
                    "labels": labels,
                    **({"annotations": annotations} if annotations else {}),
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
