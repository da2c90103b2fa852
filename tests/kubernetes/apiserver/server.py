"""FakeApiServer: the double as the tests hold it. It wires the store, RBAC, the HTTP side, the
Job controller, the kubelet and the quota controller together, holds the fault knobs they read,
and answers the requests that touch more than one of them (get, create, delete)."""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import random
import shutil
import socket
import subprocess
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from . import patches
from .handler import Handler, _HTTPServer
from .jobs import JobController
from .kubelet import Kubelet
from .quota import Quotas
from .rbac import Rbac
from .resources import REPO, RESOURCES, Obj, now_iso, object_error
from .store import Store

log = logging.getLogger(__name__)


class FakeApiServer:
    """The double: an HTTP server on 127.0.0.1 plus a Job controller/kubelet."""

    def __init__(
        self, namespace: str = "fractal-test", rules: list[Obj] | None = None, workdir: Path | None = None
    ) -> None:
        self.namespace = namespace
        self.store = Store()
        self.rbac = Rbac(namespace, rules)
        self.requests: Counter[str] = Counter()
        self.faults: dict[str, str] = {}  # job_id -> "image_pull" | "oom" | "unschedulable"
        self.commands: dict[str, list[str]] = {}  # job_id -> argv instead of the container's
        self.default_command: list[str] | None = None
        self.node_gpus = 0  # GPUs of the one node: a GPU pod waits Unschedulable while they are taken
        self.bookmark_interval = 1.0
        self.rng = random.Random()  # the double's random choices (set a seed to replay a run)
        self.watch_early_end = 0.3  # a watch lasts this fraction of timeoutSeconds, or more, at random
        self.watch_cache_lag = 0  # versions the watch cache is behind: newer ones are a 504
        self.tick = 0.02  # how often the kubelet looks at its processes
        self.pod_quota: int | None = None  # a ResourceQuota's `pods`: non-terminal pods allowed
        self.default_grace_seconds = 30  # terminationGracePeriodSeconds when a pod sets none
        # Run containers as PID 1 of their own PID namespace, as a container runtime does: a
        # PID 1 without a SIGTERM handler ignores SIGTERM (needs root; else a plain process).
        self.pid_namespaces = os.geteuid() == 0 and shutil.which("unshare") is not None
        self.workdir = workdir or REPO
        self.closing = False
        self.connections: set[socket.socket] = set()
        self.threads: list[threading.Thread] = []
        self.port = 0
        self.httpd: _HTTPServer | None = None
        self._lock = threading.Lock()
        self.jobs = JobController(self)
        self.kubelet = Kubelet(self)
        self.quotas = Quotas(self)

    # --- what the parts keep, where tests look for it --------------------------------------------

    @property
    def rules(self) -> list[Obj]:
        return self.rbac.rules

    @rules.setter
    def rules(self, rules: list[Obj]) -> None:
        self.rbac.rules = rules

    @property
    def bindings(self) -> list[Obj]:
        return self.rbac.bindings

    @property
    def tokens(self) -> dict[str, str]:
        return self.rbac.tokens

    @property
    def denials(self) -> list[str]:
        return self.rbac.denials

    @property
    def sa_token(self) -> str:
        return self.rbac.sa_token

    @property
    def procs(self) -> dict[str, subprocess.Popen[bytes]]:
        return self.kubelet.runtime.procs

    @property
    def logs(self) -> dict[str, bytearray]:
        return self.kubelet.runtime.logs

    @property
    def ended_at(self) -> dict[str, float]:
        return self.jobs.ended_at

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeApiServer:
        self.up()
        self.spawn(self.quotas.control)
        return self

    def up(self) -> None:
        """Listen (again, on the same port after down())."""
        httpd = _HTTPServer(("127.0.0.1", self.port), Handler)
        httpd.api = self
        self.port = httpd.server_address[1]
        self.httpd = httpd
        t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        t.start()

    def down(self) -> None:
        """Refuse connections and cut the open ones (watches included): an API server outage."""
        httpd, self.httpd = self.httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        for conn in list(self.connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop serving, stop the kubelet and kill its processes by PID."""
        self.closing = True
        with self.store.cond:
            self.store.cond.notify_all()
        self.down()
        for proc in list(self.procs.values()):
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        for t in self.threads:
            t.join(5)

    def expire_watches(self) -> None:
        self.store.expire()

    def write_kubeconfig(self, path: Path, token: str | None = None) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "double", "cluster": {"server": self.url}}],
            "users": [{"name": "fractal-scheduler", "user": {"token": token or self.sa_token}}],
            "contexts": [
                {
                    "name": "double",
                    "context": {
                        "cluster": "double",
                        "user": "fractal-scheduler",
                        "namespace": self.namespace,
                    },
                }
            ],
            "current-context": "double",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def spawn(self, fn: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=self._guard, args=(fn, *args), daemon=True)
        self.threads.append(t)
        t.start()

    @staticmethod
    def _guard(fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("apiserver double: %s failed", fn.__name__)

    # --- requests -----------------------------------------------------------------------------

    def count(self, verb: str, resource: str) -> None:
        with self._lock:
            self.requests[f"{verb} {resource}"] += 1

    def get(self, resource: str, ns: str, name: str) -> Obj:
        obj = self.store.get(resource, ns, name)
        if obj is None:
            raise object_error(404, "NotFound", resource, name, "not found")
        return obj

    def create(self, resource: str, ns: str, body: Obj) -> Obj:
        if resource == "jobs":
            return self.jobs.create(ns, body)
        return self.store.create(resource, ns, body)

    def delete(self, resource: str, ns: str, name: str, policy: str, grace: int | None = None) -> Obj:
        """Pods end gracefully (see Kubelet.terminate_pod); a Job as its propagation policy says
        (see JobController.delete)."""
        obj = self.get(resource, ns, name)
        if resource == "pods":
            self.kubelet.terminate_pod(ns, name, grace)
        elif resource == "jobs":
            self.jobs.delete(ns, obj, policy)
        else:
            self.store.delete(resource, ns, name)
        group = RESOURCES[resource][0]
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "group": group, "kind": resource, "uid": obj["metadata"]["uid"]},
        }

    def patch(self, resource: str, ns: str, name: str, content_type: str, body: Any) -> Obj:
        """A merge, strategic merge or JSON patch (see patches.py); the status stays as the
        controllers wrote it (it has a subresource of its own), and a Job's spec changes only
        where the Job API allows."""
        self.get(resource, ns, name)  # a 404 first

        def change(obj: Obj) -> None:
            new = patches.apply(obj, content_type, body)
            if "status" in obj:
                new["status"] = obj["status"]
            if resource == "jobs":
                patches.check_job_update(obj, new)
            obj.clear()
            obj.update(new)

        patched = self.store.update(resource, ns, name, change)
        if patched is None:
            raise object_error(404, "NotFound", resource, name, "not found")
        return patched

    def pod_log(self, ns: str, name: str, query: dict[str, str]) -> bytes:
        return self.kubelet.runtime.log(ns, name, query)

    # --- helpers for tests ------------------------------------------------------------------------

    def put_config(self, name: str, data: dict[str, str]) -> None:
        self.store.create("configmaps", self.namespace, {"metadata": {"name": name}, "data": data})

    def put_secret(self, name: str, data: dict[str, str]) -> None:
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        self.store.create(
            "secrets", self.namespace, {"metadata": {"name": name}, "type": "Opaque", "data": encoded}
        )

    def evict(self, pod: str) -> None:
        """An API-initiated eviction (a node drain): the pod gets the DisruptionTarget condition
        and is deleted gracefully, as the Eviction API does.
        https://kubernetes.io/docs/concepts/workloads/pods/disruptions/#pod-disruption-conditions"""
        condition = {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
                     "message": "Eviction API: evicting", "lastProbeTime": None,
                     "lastTransitionTime": now_iso()}
        self.store.update("pods", self.namespace, pod, lambda p: p["status"].update(
            conditions=[*(p["status"].get("conditions") or []), condition]))
        self.kubelet.terminate_pod(self.namespace, pod, None)

    def job(self, job_id: str) -> Obj | None:
        return self.store.get("jobs", self.namespace, f"fractal-{job_id}")

    def pods(self, job_id: str) -> list[Obj]:
        return self.store.list("pods", self.namespace, f"fractal-scheduler/job-id={job_id}")[0]

    def live(self, job_id: str) -> list[int]:
        """PIDs of this job's processes still running."""
        return [
            p.pid
            for name, p in self.procs.items()
            if name.startswith(f"fractal-{job_id}-") and p.poll() is None
        ]
