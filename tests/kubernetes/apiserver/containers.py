"""The container runtime: a container's command runs here as a process (`python` mapped to this
interpreter), as PID 1 of its own PID namespace when it can (root: `unshare`), with the pod's
resolved environment (env + envFrom ConfigMaps/Secrets); its output is the pod's log. SIGTERM
goes to that PID 1 (ignored without a handler, as in a container), SIGKILL after the grace
period."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .resources import REPO, ApiError, Obj
from .store import Store

if TYPE_CHECKING:
    from .server import FakeApiServer


def _field(pod: Obj, path: str) -> str:
    """A downward API fieldRef: metadata.name, metadata.namespace, metadata.labels['k'],
    metadata.annotations['k'], spec.nodeName (the pod is bound before its container starts)."""
    meta = pod.get("metadata") or {}
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return (meta.get(match.group(1)) or {}).get(match.group(2), "")
    if path.startswith("spec."):
        return str((pod.get("spec") or {}).get(path.removeprefix("spec."), ""))
    return str(meta.get(path.removeprefix("metadata."), ""))


def resolve_env(store: Store, ns: str, container: Obj, pod: Obj | None = None) -> dict[str, str]:
    """What the kubelet gives the process: envFrom first, then env (env wins); `pod` answers
    fieldRefs."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": "/tmp",
        "PYTHONPATH": str(REPO),  # the image's ENV: job_image importable
        "PYTHONUNBUFFERED": "1",
        "KUBERNETES_SERVICE_HOST": "10.96.0.1",
    }
    for key in ("OCL_ICD_VENDORS", "POCL_DEVICES", "PYOPENCL_CTX"):
        if key in os.environ:  # the node's OpenCL setup
            env[key] = os.environ[key]
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            ref = source["configMapRef"]
            obj = store.get("configmaps", ns, ref["name"])
            if obj is None and not ref.get("optional"):
                raise KeyError(f'configmap "{ref["name"]}" not found')
            env.update((obj or {}).get("data") or {})
        if "secretRef" in source:
            ref = source["secretRef"]
            obj = store.get("secrets", ns, ref["name"])
            if obj is None and not ref.get("optional"):
                raise KeyError(f'secret "{ref["name"]}" not found')
            data = (obj or {}).get("data") or {}
            env.update({k: base64.b64decode(v).decode() for k, v in data.items()})
            env.update((obj or {}).get("stringData") or {})
    for var in container.get("env") or []:
        ref = (var.get("valueFrom") or {}).get("fieldRef")
        env[var["name"]] = _field(pod or {}, ref["fieldPath"]) if ref else var.get("value", "")
    return env


class Runtime:
    """The processes of the node's containers (by pod name) and their output."""

    def __init__(self, api: FakeApiServer) -> None:
        self.api = api
        self.store = api.store
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, bytearray] = {}

    def run(
        self, ns: str, name: str, job_name: str, job_id: str, container: Obj, env: dict[str, str],
        deadline: float | None,
    ) -> tuple[int | None, str]:
        """Run the pod's container as a process until it ends: its exit code (None when the pod
        vanished) and its termination message."""
        api = self.api
        # a copy: a retried pod must not find the args appended twice to a test's command
        argv = [*(api.commands.get(job_id) or api.default_command or container.get("command") or [])]
        argv += list(container.get("args") or [])
        if argv and argv[0] == "python":
            argv[0] = sys.executable
        if api.pid_namespaces:
            argv = ["unshare", "--pid", "--fork", "--kill-child", *argv]
        buf = self.logs.setdefault(name, bytearray())
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=api.workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.procs[name] = proc
        reader = threading.Thread(
            target=lambda: [buf.extend(chunk) for chunk in iter(lambda: proc.stdout.read1(65536), b"")],
            daemon=True,
        )  # type: ignore[union-attr]
        reader.start()
        code = self._supervise(ns, name, job_name, proc, deadline)
        if code is None:
            return None, ""
        reader.join(5)
        message = ""
        if code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            # The tail of the log: at most 80 lines or 2048 bytes, whichever is smaller.
            tail = b"\n".join(bytes(buf).splitlines()[-80:])[-2048:]
            message = tail.decode(errors="replace")
        return code, message

    def _supervise(self, ns: str, name: str, job_name: str, proc: subprocess.Popen[bytes],
                   deadline: float | None) -> int | None:
        """Wait for the container to exit: SIGTERM to its PID 1 once the pod is being deleted,
        SIGKILL when the grace period is over. Its exit code, or None when the pod vanished
        (force-deleted, or the double is closing)."""
        term_at, grace = None, 0.0
        while proc.poll() is None:
            pod = self.store.get("pods", ns, name)
            if self.api.closing or pod is None:
                proc.kill()
                proc.wait()
                return None
            meta = pod["metadata"]
            if deadline is not None and time.monotonic() > deadline and not meta.get("deletionTimestamp"):
                self.api.jobs.deadline_passed(ns, job_name)
                continue
            if meta.get("deletionTimestamp") and term_at is None:
                term_at, grace = time.monotonic(), float(meta.get("deletionGracePeriodSeconds") or 0)
                self._signal_pid1(proc, signal.SIGTERM)
            if term_at is not None and time.monotonic() >= term_at + grace:
                proc.kill()  # --kill-child: its PID 1 goes with it
                proc.wait()
                return 128 + signal.SIGKILL
            time.sleep(self.api.tick)
        code = proc.returncode
        return 128 - code if code < 0 else code

    def _signal_pid1(self, proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        """Signal the container's PID 1: unshare's child in its PID namespace (a signal it has
        no handler for is ignored there, as in a container), else the process itself."""
        pid = proc.pid
        if self.api.pid_namespaces:
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and proc.poll() is None:
                with contextlib.suppress(OSError):
                    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
                    if children:
                        pid = int(children[0])
                        break
                time.sleep(0.01)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def log(self, ns: str, name: str, query: dict[str, str]) -> bytes:
        """The container's output: the last `tailLines` lines, then at most `limitBytes` bytes
        (the kubelet's order: the byte cap may cut the tail's end, or a UTF-8 character)."""
        pod = self.api.get("pods", ns, name)
        statuses = pod.get("status", {}).get("containerStatuses") or []
        if not statuses or "waiting" in statuses[0].get("state", {}):
            reason = statuses[0]["state"]["waiting"].get("reason", "") if statuses else "ContainerCreating"
            container = pod["spec"]["containers"][0]["name"]
            raise ApiError(
                400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: {reason}'
            )
        data = bytes(self.logs.get(name, b""))
        tail = int(query.get("tailLines") or -1)
        if tail >= 0:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[len(lines) - tail :]) if tail else b""
        limit = int(query.get("limitBytes") or 0)
        return data[:limit] if limit else data
