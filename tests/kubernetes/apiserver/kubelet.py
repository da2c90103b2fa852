"""The kubelet (and the scheduler's fit on the one node): a pod is scheduled (or Unschedulable
while the node's GPUs are taken), its image pulled (or not), its environment resolved, its
container run by the runtime, and its status moved Pending -> Running -> Succeeded/Failed with the
conditions, container states and events a cluster writes. Deletion is graceful: a Terminating pod
disappears once its container has ended."""

from __future__ import annotations

import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from .containers import Runtime, resolve_env
from .events import record
from .indexed import INDEX_KEY
from .resources import NODE, Obj, now_iso

if TYPE_CHECKING:
    from .server import FakeApiServer

IMAGE_ID = "docker.io/library/fractal-job@sha256:" + "0" * 64


def _gpus(pod: Obj) -> int:
    limits = pod["spec"]["containers"][0].get("resources", {}).get("limits") or {}
    return sum(int(v) for k, v in limits.items() if "gpu" in k)


def _scheduled_conditions(ts: str) -> list[Obj]:
    """A bound pod's conditions: scheduled and initialised at `ts`, its container not ready yet."""
    return [
        {
            "type": "PodScheduled",
            "status": "True",
            "lastProbeTime": None,
            "lastTransitionTime": ts,
        },
        {
            "type": "Initialized",
            "status": "True",
            "lastProbeTime": None,
            "lastTransitionTime": ts,
        },
        {
            "type": "Ready",
            "status": "False",
            "reason": "ContainersNotReady",
            "lastProbeTime": None,
            "lastTransitionTime": ts,
        },
    ]


class Kubelet:
    """The one node's kubelet: one `run_pod` per pod, in the Job controller's thread."""

    def __init__(self, api: FakeApiServer) -> None:
        self.api = api
        self.store = api.store
        self.runtime = Runtime(api)
        self.kubelet_pods: set[str] = set()  # pods whose kubelet loop runs (a container may run)
        self.final: dict[str, Obj] = {}  # a pod as its kubelet left it (an Indexed Job judges it)
        self._kubelet_lock = threading.Lock()
        self._schedule_lock = threading.Lock()

    def terminate_pod(self, ns: str, name: str, grace: int | None) -> None:
        """Graceful deletion: the pod gets a deletionTimestamp (it is Terminating), its kubelet
        sends SIGTERM to the container's PID 1 and SIGKILL after the grace period; only then does
        the pod disappear. A pod with nothing running goes at once.
        https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination"""
        with self._kubelet_lock:
            pod = self.store.get("pods", ns, name)
            if pod is None or pod["metadata"].get("deletionTimestamp"):
                return
            if grace is None:
                grace = int(pod["spec"].get("terminationGracePeriodSeconds", self.api.default_grace_seconds))
            self.store.update("pods", ns, name, lambda p: p["metadata"].update(
                deletionTimestamp=now_iso(grace), deletionGracePeriodSeconds=grace))
            if name not in self.kubelet_pods:
                self.store.delete("pods", ns, name)

    def _container_status(
        self, pod: Obj, state: Obj, *, ready: bool = False, started: bool = False, image_id: str = ""
    ) -> Obj:
        c = pod["spec"]["containers"][0]
        status: Obj = {
            "name": c["name"],
            "image": c["image"],
            "imageID": image_id,
            "ready": ready,
            "restartCount": 0,
            "started": started,
            "state": state,
            "lastState": {},
        }
        if image_id:
            status["containerID"] = "containerd://" + uuid.uuid4().hex
        return status

    def _set_pod(self, ns: str, pod: Obj, **status: Any) -> Obj | None:
        return self.store.update("pods", ns, pod["metadata"]["name"], lambda p: p["status"].update(status))

    def run_pod(self, ns: str, pod: Obj, job: Obj, deadline: float | None) -> str:
        """The kubelet for one pod; a pod being deleted disappears once its container has ended."""
        name = pod["metadata"]["name"]
        with self._kubelet_lock:
            self.kubelet_pods.add(name)
        try:
            return self._kubelet(ns, pod, job, deadline)
        finally:
            with self._kubelet_lock:
                self.kubelet_pods.discard(name)
                current = self.store.get("pods", ns, name)
                if current is not None and INDEX_KEY in (current["metadata"].get("labels") or {}):
                    self.final[name] = current
                if current is not None and current["metadata"].get("deletionTimestamp"):
                    self.store.delete("pods", ns, name)

    def _kubelet(self, ns: str, pod: Obj, job: Obj, deadline: float | None) -> str:
        """Schedule, pull, run and end one pod; returns succeeded|failed|gone."""
        name, job_name = pod["metadata"]["name"], job["metadata"]["name"]
        job_id = (job["metadata"].get("labels") or {}).get("fractal-scheduler/job-id", "")
        fault = self.api.faults.get(job_id, "")
        gpus = _gpus(pod)
        if fault == "unschedulable" or gpus > self.api.node_gpus:  # no node will ever fit it
            self._unschedulable(ns, pod, now_iso())
            return self._stuck(ns, name, job_name, deadline)
        ts = self._wait_for_gpus(ns, pod, job_name, gpus, deadline)
        if ts is None or not self._bind(ns, pod, ts):
            return "gone"
        if fault == "image_pull":
            self._fail_image_pull(ns, pod)
            return self._stuck(ns, name, job_name, deadline)
        env = self._container_env(ns, pod)
        if env is None:  # CreateContainerConfigError: it never starts
            return self._stuck(ns, name, job_name, deadline)
        running = self._start(ns, pod, job_name)
        if fault == "oom":
            time.sleep(0.2)
            return self._terminate(ns, pod, running, 137, "OOMKilled", "")
        return self._run(ns, pod, job_name, job_id, env, running, deadline)

    def _wait_for_gpus(
        self, ns: str, pod: Obj, job_name: str, gpus: int, deadline: float | None
    ) -> str | None:
        """Retry the GPU fit while the node's GPUs are taken (Unschedulable, said once); the time
        of the fit that bound the pod, or None when it is deleted meanwhile."""
        name = pod["metadata"]["name"]
        ts = now_iso()
        told = False
        while gpus and not self._place_gpus(ns, name, gpus):
            if not told:
                self._unschedulable(ns, pod, ts)
                told = True
            current = self.store.get("pods", ns, name)
            if current is None or current["metadata"].get("deletionTimestamp") or self.api.closing:
                return None
            if deadline is not None and time.monotonic() > deadline:
                self.api.jobs.deadline_passed(ns, job_name)
            time.sleep(self.api.tick * 5)
            ts = now_iso()
        return ts

    def _bind(self, ns: str, pod: Obj, ts: str) -> bool:
        """The pod on the node: scheduled at `ts`, its container being created; False if it is gone."""

        def scheduled(p: Obj) -> None:
            p["spec"]["nodeName"] = NODE
            p["status"].update(
                hostIP="192.168.49.2",
                hostIPs=[{"ip": "192.168.49.2"}],
                startTime=ts,
                conditions=_scheduled_conditions(ts),
                containerStatuses=[self._container_status(pod, {"waiting": {"reason": "ContainerCreating"}})],
            )

        name = pod["metadata"]["name"]
        if self.store.update("pods", ns, name, scheduled) is None:
            return False
        record(self.store, ns, pod, "Pod", "Scheduled", f"Successfully assigned {ns}/{name} to {NODE}")
        return True

    def _fail_image_pull(self, ns: str, pod: Obj) -> None:
        """The image is not found: ErrImagePull, then ImagePullBackOff, each with its event."""
        image = pod["spec"]["containers"][0]["image"]
        for reason, message in (
            ("ErrImagePull", f'failed to pull and unpack image "{image}": not found'),
            ("ImagePullBackOff", f'Back-off pulling image "{image}"'),
        ):
            self._set_pod(
                ns,
                pod,
                containerStatuses=[
                    self._container_status(pod, {"waiting": {"reason": reason, "message": message}})
                ],
            )
            record(
                self.store,
                ns, pod, "Pod", "Failed" if reason == "ErrImagePull" else "BackOff", message, "Warning"
            )

    def _container_env(self, ns: str, pod: Obj) -> dict[str, str] | None:
        """The container's environment, or None after a CreateContainerConfigError (a Secret or
        ConfigMap, or a key in one, that does not exist)."""
        try:
            bound = self.store.get("pods", ns, pod["metadata"]["name"]) or pod  # with its nodeName
            return resolve_env(self.store, ns, pod["spec"]["containers"][0], bound)
        except KeyError as exc:
            message = str(exc.args[0])
            self._set_pod(
                ns,
                pod,
                containerStatuses=[
                    self._container_status(
                        pod, {"waiting": {"reason": "CreateContainerConfigError", "message": message}}
                    )
                ],
            )
            record(self.store, ns, pod, "Pod", "Failed", f"Error: {message}", "Warning")
            return None

    def _start(self, ns: str, pod: Obj, job_name: str) -> Obj:
        """Pulled and Started: the pod Running, its Job's pod ready; returns the container status."""
        container = pod["spec"]["containers"][0]
        record(
            self.store,
            ns, pod, "Pod", "Pulled", f'Container image "{container["image"]}" already present on machine'
        )
        record(self.store, ns, pod, "Pod", "Started", f"Started container {container['name']}")
        running = self._container_status(
            pod, {"running": {"startedAt": now_iso()}}, ready=True, started=True, image_id=IMAGE_ID
        )
        self._set_pod(
            ns,
            pod,
            phase="Running",
            podIP="10.244.0.7",
            podIPs=[{"ip": "10.244.0.7"}],
            containerStatuses=[running],
        )
        if not (pod["metadata"].get("labels") or {}).get(INDEX_KEY):  # an Indexed Job counts its own
            self.store.update("jobs", ns, job_name, lambda j: j["status"].update(ready=1))
        return running

    def _run(
        self,
        ns: str,
        pod: Obj,
        job_name: str,
        job_id: str,
        env: dict[str, str],
        running: Obj,
        deadline: float | None,
    ) -> str:
        """Run the container to its end; a pod deleted meanwhile is gone, whatever its exit code."""
        name = pod["metadata"]["name"]
        container = pod["spec"]["containers"][0]
        code, message = self.runtime.run(ns, name, job_name, job_id, container, env, deadline)
        if code is None:
            return "gone"
        outcome = self._terminate(ns, pod, running, code, "Completed" if code == 0 else "Error", message)
        current = self.store.get("pods", ns, name)
        return "gone" if current is None or current["metadata"].get("deletionTimestamp") else outcome

    def _terminate(self, ns: str, pod: Obj, running: Obj, code: int, reason: str, message: str) -> str:
        """The container ended with `code`: the pod Succeeded or Failed; returns succeeded|failed|gone."""
        terminated: Obj = {
            "exitCode": code,
            "reason": reason,
            "startedAt": running["state"]["running"]["startedAt"],
            "finishedAt": now_iso(),
            "containerID": running.get("containerID", ""),
        }
        if message:
            terminated["message"] = message
        final = dict(running, ready=False, started=False, state={"terminated": terminated})
        phase = "Succeeded" if code == 0 else "Failed"
        if self._set_pod(ns, pod, phase=phase, containerStatuses=[final]) is None:
            return "gone"
        return "succeeded" if code == 0 else "failed"

    def _unschedulable(self, ns: str, pod: Obj, ts: str) -> None:
        message = (
            "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 nodes are "
            "available: 1 No preemption victims found for incoming pod."
        )
        condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                     "lastProbeTime": None, "lastTransitionTime": ts}
        self._set_pod(ns, pod, conditions=[condition])
        record(self.store, ns, pod, "Pod", "FailedScheduling", message, "Warning")

    def _place_gpus(self, ns: str, name: str, gpus: int) -> bool:
        """The scheduler's GPU fit: the node's GPUs minus those of the pods bound to it that
        have not ended. A fit binds the pod at once (nodeName), under the lock."""
        with self._schedule_lock:
            held = sum(
                _gpus(p) for p in self.store.list("pods", ns)[0]
                if p["metadata"]["name"] != name and p["spec"].get("nodeName")
                and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
            )
            if held + gpus > self.api.node_gpus:
                return False
            return self.store.update("pods", ns, name, lambda p: p["spec"].update(nodeName=NODE)) is not None

    def _stuck(self, ns: str, name: str, job_name: str, deadline: float | None) -> str:
        """A pod that never starts: wait until it is deleted (nothing runs: it goes at once)."""
        while not self.api.closing:
            pod = self.store.get("pods", ns, name)
            if pod is None or pod["metadata"].get("deletionTimestamp"):
                return "gone"
            if deadline is not None and time.monotonic() > deadline:
                self.api.jobs.deadline_passed(ns, job_name)
            time.sleep(self.api.tick * 5)
        return "gone"
