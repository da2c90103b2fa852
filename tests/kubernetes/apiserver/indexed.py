"""The Job controller for Indexed Jobs (`completionMode: Indexed`), as 1.33's does it:
- one pod per index, named `<job>-<index>-<random>`, with the index in the
  `batch.kubernetes.io/job-completion-index` annotation and label, its hostname `<job>-<index>`,
  and `JOB_COMPLETION_INDEX` in every container's env (from that label);
- at most `parallelism` pods at once (read again every tick: a PATCH raises or lowers it; the
  excess, highest indexes first, is deleted), lowest pending index first;
- a failed pod is judged by `podFailurePolicy` (first rule that matches: FailJob, FailIndex,
  Ignore, Count; none: Count); a counted failure is retried with a new pod of the same index
  while the index has `backoffLimitPerIndex` retries left (its pods carry
  `batch.kubernetes.io/job-index-failure-count`), else the index fails; `backoffLimit` counts
  the failures of all indexes together (unbounded by default with `backoffLimitPerIndex`);
- `status.completedIndexes` and `status.failedIndexes` as interval strings ("1,3-5");
- the end: SuccessCriteriaMet then Complete once every index succeeded; FailureTarget (FailedIndexes,
  MaxFailedIndexesExceeded, PodFailurePolicy, BackoffLimitExceeded, DeadlineExceeded), the
  remaining pods deleted, and Failed once they are gone.
The controller's retry backoff delay (10 s, doubling) is left out: a retried index starts at once.
https://kubernetes.io/docs/concepts/workloads/controllers/job/#completion-mode
https://kubernetes.io/docs/concepts/workloads/controllers/job/#backoff-limit-per-index
https://kubernetes.io/docs/concepts/workloads/controllers/job/#pod-failure-policy"""

from __future__ import annotations

import queue
import time
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .events import record
from .resources import Obj

if TYPE_CHECKING:
    from .jobs import JobController

INDEX_KEY = "batch.kubernetes.io/job-completion-index"
FAILURE_COUNT = "batch.kubernetes.io/job-index-failure-count"
IGNORED_COUNT = "batch.kubernetes.io/job-index-ignored-failure-count"
INDEX_ENV = {"name": "JOB_COMPLETION_INDEX",
             "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{INDEX_KEY}']"}}}


def intervals(indexes: Iterable[int]) -> str:
    """Sorted indexes as the Job status writes them: "1,3-5"."""
    runs: list[list[int]] = []
    for i in sorted(set(indexes)):
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def exit_code(pod: Obj) -> int | None:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        ended = status.get("state", {}).get("terminated")
        if ended:
            return int(ended["exitCode"])
    return None


def judge(pod: Obj, policy: Obj | None) -> tuple[str, str]:
    """The podFailurePolicy's action for a failed pod, and the FailJob message: the first rule
    whose exit codes or pod conditions match; Count when none does."""
    code, meta = exit_code(pod), pod.get("metadata") or {}
    container = pod["spec"]["containers"][0]["name"]
    conditions = {(c["type"], c.get("status")) for c in pod.get("status", {}).get("conditions") or []}
    for i, rule in enumerate((policy or {}).get("rules") or []):
        action, codes = rule["action"], rule.get("onExitCodes")
        if codes and code and codes.get("containerName") in (None, container) and (
            (code in codes["values"]) == (codes["operator"] == "In")
        ):
            return action, (f"Container {container} for pod {meta.get('namespace')}/{meta.get('name')} "
                            f"failed with exit code {code} matching {action} rule at index {i}")
        for want in rule.get("onPodConditions") or []:
            if (want["type"], want.get("status", "True")) in conditions:
                return action, f"Pod {meta.get('name')} has condition {want['type']} matching rule {i}"
    return "Count", ""


class IndexedRun:
    """One Indexed Job's controller loop, in the JobController's thread for that Job."""

    def __init__(self, ctl: JobController, ns: str, name: str, started: float) -> None:
        self.ctl, self.api, self.store = ctl, ctl.api, ctl.store
        self.ns, self.name, self.started = ns, name, started  # started: time.monotonic()
        self.completed: set[int] = set()
        self.failed: set[int] = set()
        self.failures: Counter[int] = Counter()  # counted failures per index
        self.ignored: Counter[int] = Counter()
        self.running: dict[int, str] = {}  # index -> its pod's name
        self.ended: queue.Queue[tuple[int, str, str]] = queue.Queue()  # (index, pod, outcome)
        self.total_failed = 0
        self.end: tuple[str, str, str] | None = None  # (Complete|Failed, reason, message) once decided
        self.refused = False

    def run(self) -> None:
        while not self.api.closing:
            job = self.store.get("jobs", self.ns, self.name)
            if job is None or job["metadata"].get("deletionTimestamp"):
                return
            spec = job["spec"]
            self._collect(job)
            target = self.ctl.condition(job, "FailureTarget")
            if self.end is None and target is not None:  # the deadline passed (see deadline_passed)
                self.end = ("Failed", target["reason"], target["message"])
            deadline = spec.get("activeDeadlineSeconds")
            if self.end is None and deadline and time.monotonic() > self.started + deadline:
                self.ctl.deadline_passed(self.ns, self.name)
                continue
            if self.end is None:
                self._decide_end(spec)
            if self.end is None:
                self._scale(job)
            self._write_status(spec)
            if self.end is not None and not self.running:
                self.ctl.finish_job(self.ns, self.name, *self.end)
                return
            time.sleep(self.api.tick)

    def _decide_end(self, spec: Obj) -> None:
        """Whether the Job's end is decided now; a failing Job's remaining pods are deleted."""
        completions, per_index = spec["completions"], spec.get("backoffLimitPerIndex")
        most_failed = spec.get("maxFailedIndexes")
        if len(self.completed) >= completions:
            self._target("Complete", "CompletionsReached", "Reached expected number of succeeded pods")
        elif most_failed is not None and len(self.failed) > most_failed:
            self._target("Failed", "MaxFailedIndexesExceeded",
                         "Job has exceeded the specified maximal number of failed indexes")
        elif per_index is not None and len(self.completed | self.failed) >= completions:
            self._target("Failed", "FailedIndexes", "Job has failed indexes")
        elif self.total_failed > spec["backoffLimit"]:  # MaxInt32 by default with a per-index limit
            self._target("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")

    def _target(self, kind: str, reason: str, message: str) -> None:
        """FailureTarget or SuccessCriteriaMet in an update of its own; the others' pods go."""
        self.end = (kind, reason, message)
        target = "SuccessCriteriaMet" if kind == "Complete" else "FailureTarget"
        self.ctl.add_condition(self.ns, self.name, target, reason, message)
        for pod in self.running.values():
            self.api.kubelet.terminate_pod(self.ns, pod, None)

    def _collect(self, job: Obj) -> None:
        """Judge the pods that ended since the last tick."""
        spec = job["spec"]
        while True:
            try:
                index, name, outcome = self.ended.get_nowait()
            except queue.Empty:
                return
            self.running.pop(index, None)
            pod = self.api.kubelet.final.pop(name, None) or {"spec": {"containers": [{"name": ""}]}}
            if outcome == "succeeded":
                self.completed.add(index)
                continue
            action, message = judge(pod, spec.get("podFailurePolicy"))
            if self.end is not None:  # pods deleted while the Job ends are not judged
                continue
            if action == "Ignore":
                self.ignored[index] += 1
                continue
            self.total_failed += 1
            self.failures[index] += 1
            if action == "FailJob":
                self._target("Failed", "PodFailurePolicy", message)
            elif action == "FailIndex" or self.failures[index] > spec.get("backoffLimitPerIndex", 2**31):
                self.failed.add(index)

    def _scale(self, job: Obj) -> None:
        """Pods for the lowest pending indexes up to `parallelism`; the excess deleted."""
        spec = job["spec"]
        parallelism = 0 if spec.get("suspend") else spec["parallelism"]
        for index in sorted(self.running, reverse=True)[: max(0, len(self.running) - parallelism)]:
            self.api.kubelet.terminate_pod(self.ns, self.running[index], None)
        busy = self.completed | self.failed | set(self.running)
        pending = [i for i in range(spec["completions"]) if i not in busy]
        for index in pending[: max(0, parallelism - len(self.running))]:
            refusal = self.api.quotas.refusal(self.ns, job)
            if refusal:
                if not self.refused:
                    record(self.store, self.ns, job, "Job", "FailedCreate", refusal, "Warning")
                    self.refused = True
                return
            self._start(job, index)

    def _start(self, job: Obj, index: int) -> None:
        labels = {INDEX_KEY: str(index)}
        annotations = {INDEX_KEY: str(index)}
        if job["spec"].get("backoffLimitPerIndex") is not None:
            annotations[FAILURE_COUNT] = str(self.failures[index])
        if self.ignored[index]:
            annotations[IGNORED_COUNT] = str(self.ignored[index])
        pod = self.ctl.create_pod(self.ns, job, f"{self.name}-{index}-", labels, annotations,
                                  hostname=f"{self.name}-{index}", env=INDEX_ENV)
        name = pod["metadata"]["name"]
        record(self.store, self.ns, job, "Job", "SuccessfulCreate", f"Created pod: {name}")
        self.running[index] = name
        deadline = job["spec"].get("activeDeadlineSeconds")
        limit = self.started + deadline if deadline else None

        def kubelet() -> None:
            outcome = "gone"
            try:
                outcome = self.api.kubelet.run_pod(self.ns, pod, job, limit)
            finally:
                self.ended.put((index, name, outcome))

        self.api.spawn(kubelet)

    def _write_status(self, spec: Obj) -> None:
        pods = self.store.list("pods", self.ns, f"job-name={self.name}")[0]
        live = [p for p in pods if p["metadata"]["name"] in self.running.values()]
        up = [p for p in live if not p["metadata"].get("deletionTimestamp")]
        status: Obj = {
            "active": len(up),
            "terminating": len(live) - len(up),
            "ready": sum(p.get("status", {}).get("phase") == "Running" for p in up),
            "succeeded": len(self.completed),
            "failed": self.total_failed,
        }
        if self.completed:
            status["completedIndexes"] = intervals(self.completed)
        if spec.get("backoffLimitPerIndex") is not None:
            status["failedIndexes"] = intervals(self.failed)
        job = self.store.get("jobs", self.ns, self.name)
        if job is not None and any(job["status"].get(k) != v for k, v in status.items()):
            self.store.update("jobs", self.ns, self.name, lambda j: j["status"].update(status))

