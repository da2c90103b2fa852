"""A Kubernetes API server double that the real `kubernetes` client talks to over HTTP.

What it serves (namespaced): batch/v1 jobs (create/get/list/watch/delete with
propagationPolicy), core/v1 pods (get/list/watch) and pods/log, events (list/watch),
configmaps and secrets (for the pods' envFrom), and authorization.k8s.io/v1
selfsubjectaccessreviews. Lists carry a resourceVersion; watches stream chunked JSON lines
(ADDED/MODIFIED/DELETED/BOOKMARK/ERROR) from a resourceVersion, answer 410 Gone for one the
history no longer holds, and end after timeoutSeconds. Errors are real Status objects.

Every request is authorised by bearer token: the service account's token against the Role in
serviceaccount/role.yaml (as in a cluster, a verb the code needs but the Role lacks is a 403),
an admin token for everything. SelfSubjectAccessReview is open to every authenticated user
(system:basic-user grants it in a real cluster).

It also plays the Job controller and the kubelet: a created Job gets a Pod whose container
command runs here as a process (`python` mapped to this interpreter) with the pod's resolved
environment (env + envFrom ConfigMaps/Secrets); pod and Job status move Pending -> Running ->
Succeeded/Failed as a cluster's would (conditions, reasons, termination message from the
log's tail under FallbackToLogsOnError), honouring backoffLimit and activeDeadlineSeconds.

Fault knobs: `faults[job_id]` = "image_pull" | "oom" | "unschedulable"; a GPU limit is
unschedulable on its GPU-less node; `pod_quota` = N plays a ResourceQuota `pods: N` (the Job
controller's pod creation is refused with a FailedCreate event on the Job until a slot frees);
`down()`/`up()` refuse connections and cut open streams; `expire_watches()` ends open watches
with a 410 ERROR and forgets the history.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import copy
import json
import logging
import os
import random
import re
import socket
import string
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
ROLE_FILE = REPO / "serviceaccount" / "role.yaml"

# resource -> (api group, version, kind)
RESOURCES: dict[str, tuple[str, str, str]] = {
    "jobs": ("batch", "v1", "Job"),
    "pods": ("", "v1", "Pod"),
    "events": ("", "v1", "Event"),
    "configmaps": ("", "v1", "ConfigMap"),
    "secrets": ("", "v1", "Secret"),
}
NODE = "double-node-1"
IMAGE_ID = "docker.io/library/fractal-job@sha256:" + "0" * 64

Obj = dict[str, Any]


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_obj(code: int, reason: str, message: str, details: Obj | None = None) -> Obj:
    """A metav1.Status as the API server writes it."""
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure" if code >= 400 else "Success",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.status = status_obj(code, reason, message, details)


# --- selectors -------------------------------------------------------------------------------


def label_match(selector: str, labels: dict[str, str]) -> bool:
    """Equality-based and existence label selectors (`a=b,c!=d,e,!f`)."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def field_match(selector: str, obj: Obj) -> bool:
    """Field selectors on dotted paths (`involvedObject.name=x,metadata.name=y`)."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        negate = "!=" in term
        path, value = term.split("!=" if negate else "=", 1)
        cur: Any = obj
        for part in path.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if (str(cur) == value.lstrip("=")) == negate:
            return False
    return True


# --- RBAC ------------------------------------------------------------------------------------


def load_rules(path: Path = ROLE_FILE) -> list[Obj]:
    """The rules of the Role in serviceaccount/role.yaml."""
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "Role":
            return list(doc.get("rules") or [])
    raise AssertionError(f"no Role in {path}")


def allowed(rules: list[Obj], group: str, resource: str, verb: str) -> bool:
    for rule in rules:
        if (
            group in rule.get("apiGroups", [])
            and (resource in rule.get("resources", []) or "*" in rule.get("resources", []))
            and (verb in rule.get("verbs", []) or "*" in rule.get("verbs", []))
        ):
            return True
    return False


# --- the store -------------------------------------------------------------------------------


class Store:
    """Objects by (resource, namespace, name), a resourceVersion counter and the event history."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.RLock())
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.rv = 100
        self.history: list[tuple[int, str, str, str, Obj]] = []  # (rv, resource, ns, type, obj)
        self.history_rvs: list[int] = []
        self.oldest_rv = self.rv  # watches from below this get 410 Gone
        self.expiry = 0  # bumped to end open watches with 410

    def _record(self, resource: str, ns: str, kind: str, obj: Obj) -> None:
        self.history.append((self.rv, resource, ns, kind, obj))
        self.history_rvs.append(self.rv)
        self.cond.notify_all()

    def create(
        self, resource: str, ns: str, obj: Obj, prepare: Callable[[Obj], None] | None = None
    ) -> Obj:
        """Store a new object; `prepare` fills what depends on the uid before anyone sees it."""
        with self.cond:
            meta = obj.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
                meta["name"] = meta["generateName"] + suffix
            name = meta.get("name", "")
            if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", name):
                group, _, kind = RESOURCES[resource]
                raise ApiError(422, "Invalid", f'{kind} "{name}" is invalid: metadata.name: Invalid value')
            key = (resource, ns, name)
            if key in self.objects:
                group = RESOURCES[resource][0]
                qualified = f"{resource}.{group}" if group else resource
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{qualified} "{name}" already exists',
                    {"name": name, "group": group, "kind": resource},
                )
            self.rv += 1
            group, version, kind = RESOURCES[resource]
            obj["apiVersion"] = f"{group}/{version}" if group else version
            obj["kind"] = kind
            meta.update(
                namespace=ns,
                uid=str(uuid.uuid4()),
                resourceVersion=str(self.rv),
                creationTimestamp=now_iso(),
                generation=1,
            )
            if prepare is not None:
                prepare(obj)
            self.objects[key] = obj
            self._record(resource, ns, "ADDED", copy.deepcopy(obj))
            return copy.deepcopy(obj)

    def get(self, resource: str, ns: str, name: str) -> Obj | None:
        with self.cond:
            obj = self.objects.get((resource, ns, name))
            return copy.deepcopy(obj) if obj is not None else None

    def update(self, resource: str, ns: str, name: str, change: Callable[[Obj], None]) -> Obj | None:
        """Apply `change` to the stored object (if it still exists) and emit MODIFIED."""
        with self.cond:
            obj = self.objects.get((resource, ns, name))
            if obj is None:
                return None
            obj = copy.deepcopy(obj)
            change(obj)
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self.objects[(resource, ns, name)] = obj
            self._record(resource, ns, "MODIFIED", copy.deepcopy(obj))
            return copy.deepcopy(obj)

    def delete(self, resource: str, ns: str, name: str) -> Obj | None:
        with self.cond:
            obj = self.objects.pop((resource, ns, name), None)
            if obj is None:
                return None
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            obj["metadata"].setdefault("deletionTimestamp", now_iso())
            self._record(resource, ns, "DELETED", copy.deepcopy(obj))
            return obj

    def list(self, resource: str, ns: str, labels: str = "", fields: str = "") -> tuple[list[Obj], int]:
        with self.cond:
            items = [
                copy.deepcopy(o)
                for (r, n, _), o in sorted(self.objects.items())
                if r == resource
                and n == ns
                and label_match(labels, o["metadata"].get("labels") or {})
                and field_match(fields, o)
            ]
            return items, self.rv

    def expire(self) -> None:
        """Forget the history (as etcd compaction does) and end open watches with 410."""
        with self.cond:
            self.oldest_rv = self.rv
            self.history.clear()
            self.history_rvs.clear()
            self.expiry += 1
            self.cond.notify_all()


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


# --- the HTTP side ---------------------------------------------------------------------------

PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[a-z0-9.]+)/v1)"
    r"(?:/namespaces/(?P<ns>[a-z0-9-]+))?/(?P<resource>[a-z]+)"
    r"(?:/(?P<name>[a-z0-9.-]+))?(?:/(?P<sub>[a-z]+))?$"
)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked watches, as the client expects
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        log.debug("apiserver: " + format, *args)

    def setup(self) -> None:
        super().setup()
        self.server.api.connections.add(self.connection)

    def finish(self) -> None:
        self.server.api.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _send_json(self, code: int, body: Obj) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_text(self, code: int, data: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        api = self.server.api
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            user = api.authenticate(self.headers.get("Authorization", ""))
            match = PATH.match(url.path)
            if not match:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            group, ns, resource, name, sub = (
                match.group(g) for g in ("group", "ns", "resource", "name", "sub")
            )
            group = group or ""
            body = json.loads(raw) if raw else {}
            if resource == "selfsubjectaccessreviews" and method == "POST":
                api.count("create", resource)
                self._send_json(201, api.access_review(user, body))
                return
            if resource not in RESOURCES or ns is None or RESOURCES[resource][0] != group:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            watch = query.get("watch") in ("true", "1")
            verb = {
                "GET": "watch" if watch else ("get" if name else "list"),
                "POST": "create",
                "DELETE": "delete" if name else "deletecollection",
                "PUT": "update",
                "PATCH": "patch",
            }[method]
            full = f"{resource}/{sub}" if sub else resource
            api.count(verb, full)
            api.authorize(user, group, full, verb, ns, name)
            if verb == "watch":
                self._watch(resource, ns, query)
            elif verb == "list":
                items, rv = api.store.list(
                    resource, ns, query.get("labelSelector", ""), query.get("fieldSelector", "")
                )
                g, v, kind = RESOURCES[resource]
                self._send_json(
                    200,
                    {
                        "kind": f"{kind}List",
                        "apiVersion": f"{g}/{v}" if g else v,
                        "metadata": {"resourceVersion": str(rv)},
                        "items": items,
                    },
                )
            elif verb == "get" and sub == "log":
                self._send_text(200, api.pod_log(ns, name, query))
            elif verb == "get":
                self._send_json(200, api.get(resource, ns, name))
            elif verb == "create":
                self._send_json(201, api.create(resource, ns, body))
            elif verb == "delete":
                policy = query.get("propagationPolicy") or body.get("propagationPolicy") or ""
                self._send_json(200, api.delete(resource, ns, name, policy))
            else:
                raise ApiError(405, "MethodNotAllowed", f"{verb} is not supported by this double")
        except ApiError as exc:
            self._send_json(exc.status["code"], exc.status)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def _watch(self, resource: str, ns: str, query: dict[str, str]) -> None:
        """A watch stream: chunked JSON lines from resourceVersion until timeoutSeconds."""
        api, store = self.server.api, self.server.api.store
        labels = query.get("labelSelector", "")
        fields = query.get("fieldSelector", "")
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        timeout = float(query.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def send(kind: str, obj: Obj) -> None:
            data = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        rv_param = query.get("resourceVersion", "")
        with store.cond:
            expiry = store.expiry
            if rv_param in ("", "0"):
                # "Start at most recent": synthetic ADDED for what exists now.
                items, last = store.list(resource, ns, labels, fields)
                initial = [("ADDED", o) for o in items]
            else:
                last, initial = int(rv_param), []
                if last < store.oldest_rv:
                    initial = [
                        (
                            "ERROR",
                            status_obj(
                                410, "Expired", f"too old resource version: {last} ({store.oldest_rv})"
                            ),
                        )
                    ]
        for kind, obj in initial:
            send(kind, obj)
        if initial and initial[-1][0] == "ERROR":
            self._end_chunks()
            return
        next_bookmark = time.monotonic() + api.bookmark_interval
        while not api.closing:
            with store.cond:
                if store.expiry != expiry:
                    pending = [
                        (
                            "ERROR",
                            status_obj(
                                410, "Expired", f"too old resource version: {last} ({store.oldest_rv})"
                            ),
                        )
                    ]
                else:
                    start = bisect.bisect_right(store.history_rvs, last)
                    pending = [
                        (kind, obj)
                        for rv, r, n, kind, obj in store.history[start:]
                        if r == resource
                        and n == ns
                        and label_match(labels, obj["metadata"].get("labels") or {})
                        and field_match(fields, obj)
                    ]
                    last = store.rv
                    left = deadline - time.monotonic()
                    if not pending and left > 0 and time.monotonic() < next_bookmark:
                        store.cond.wait(min(left, max(0.01, next_bookmark - time.monotonic())))
                        continue
            for kind, obj in pending:
                send(kind, obj)
            if pending and pending[-1][0] == "ERROR":
                break
            if time.monotonic() >= deadline:
                break
            if bookmarks and time.monotonic() >= next_bookmark:
                g, v, k = RESOURCES[resource]
                send(
                    "BOOKMARK",
                    {
                        "kind": k,
                        "apiVersion": f"{g}/{v}" if g else v,
                        "metadata": {"resourceVersion": str(last)},
                    },
                )
            if time.monotonic() >= next_bookmark:
                next_bookmark = time.monotonic() + api.bookmark_interval
        self._end_chunks()

    def _end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: FakeApiServer


class FakeApiServer:
    """The double: an HTTP server on 127.0.0.1 plus a Job controller/kubelet."""

    def __init__(
        self, namespace: str = "fractal-test", rules: list[Obj] | None = None, workdir: Path | None = None
    ) -> None:
        self.namespace = namespace
        self.rules = load_rules() if rules is None else rules
        self.store = Store()
        self.sa_user = f"system:serviceaccount:{namespace}:fractal-scheduler"
        self.tokens = {"sa-" + uuid.uuid4().hex: self.sa_user, "admin-" + uuid.uuid4().hex: "admin"}
        self.requests: Counter[str] = Counter()
        self.denials: list[str] = []  # 403s the service account got (a missing Role verb)
        self.faults: dict[str, str] = {}  # job_id -> "image_pull" | "oom" | "unschedulable"
        self.commands: dict[str, list[str]] = {}  # job_id -> argv instead of the container's
        self.default_command: list[str] | None = None
        self.node_gpus = 0
        self.bookmark_interval = 1.0
        self.tick = 0.02  # how often the kubelet looks at its processes
        self.pod_quota: int | None = None  # a ResourceQuota's `pods`: non-terminal pods allowed
        self.workdir = workdir or REPO
        self.closing = False
        self.connections: set[socket.socket] = set()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, bytearray] = {}
        self.threads: list[threading.Thread] = []
        self.ended_at: dict[str, float] = {}  # Job name -> monotonic time its end was written
        self.port = 0
        self.httpd: _HTTPServer | None = None
        self._lock = threading.Lock()

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def sa_token(self) -> str:
        return next(t for t, u in self.tokens.items() if u == self.sa_user)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeApiServer:
        self.up()
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

    # --- requests -----------------------------------------------------------------------------

    def count(self, verb: str, resource: str) -> None:
        with self._lock:
            self.requests[f"{verb} {resource}"] += 1

    def authenticate(self, header: str) -> str:
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        user = self.tokens.get(token)
        if user is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        return user

    def authorize(self, user: str, group: str, resource: str, verb: str, ns: str, name: str | None) -> None:
        if user == "admin":
            return
        if ns == self.namespace and allowed(self.rules, group, resource, verb):
            return
        qualified = f"{resource}.{group}" if group else resource
        named = f' "{name}"' if name else ""
        message = (
            f'{qualified}{named} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
            f'in API group "{group}" in the namespace "{ns}"'
        )
        self.denials.append(f"{verb} {qualified}")
        raise ApiError(403, "Forbidden", message, {"name": name or "", "group": group, "kind": resource})

    def access_review(self, user: str, body: Obj) -> Obj:
        attrs = (body.get("spec") or {}).get("resourceAttributes") or {}
        resource = attrs.get("resource", "")
        if attrs.get("subresource"):
            resource += "/" + attrs["subresource"]
        ok = user == "admin" or (
            attrs.get("namespace") == self.namespace
            and allowed(self.rules, attrs.get("group", ""), resource, attrs.get("verb", ""))
        )
        return {
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": body.get("spec") or {},
            "status": {
                "allowed": ok,
                **({"reason": 'RBAC: allowed by RoleBinding "fractal-scheduler"'} if ok else {}),
            },
        }

    def get(self, resource: str, ns: str, name: str) -> Obj:
        obj = self.store.get(resource, ns, name)
        if obj is None:
            group = RESOURCES[resource][0]
            qualified = f"{resource}.{group}" if group else resource
            raise ApiError(
                404,
                "NotFound",
                f'{qualified} "{name}" not found',
                {"name": name, "group": group, "kind": resource},
            )
        return obj

    def create(self, resource: str, ns: str, body: Obj) -> Obj:
        prepare = None
        if resource == "jobs":
            body, prepare = self._default_job(body), _select_own_pods
        obj = self.store.create(resource, ns, body, prepare)
        if resource == "jobs":
            self._spawn(self._run_job, ns, obj["metadata"]["name"])
        return obj

    def delete(self, resource: str, ns: str, name: str, policy: str) -> Obj:
        obj = self.get(resource, ns, name)
        self.store.delete(resource, ns, name)
        if resource == "jobs":
            uid = obj["metadata"]["uid"]
            for pod in self.store.list("pods", ns)[0]:
                if not any(ref.get("uid") == uid for ref in pod["metadata"].get("ownerReferences", [])):
                    continue
                if policy in ("Background", "Foreground"):
                    # The garbage collector removes the dependents.
                    self.store.delete("pods", ns, pod["metadata"]["name"])
                else:  # batch/v1 Jobs default to orphaning their pods
                    self.store.update(
                        "pods",
                        ns,
                        pod["metadata"]["name"],
                        lambda p: p["metadata"].pop("ownerReferences", None),
                    )
        group = RESOURCES[resource][0]
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "group": group, "kind": resource, "uid": obj["metadata"]["uid"]},
        }

    def pod_log(self, ns: str, name: str, query: dict[str, str]) -> bytes:
        """The container's output: the last `tailLines` lines, then at most `limitBytes` bytes
        (the kubelet's order: the byte cap may cut the tail's end, or a UTF-8 character)."""
        pod = self.get("pods", ns, name)
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

    # --- objects as a cluster fills them in ----------------------------------------------------

    def _default_job(self, body: Obj) -> Obj:
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
        pod_spec.setdefault("terminationGracePeriodSeconds", 30)
        for c in pod_spec.get("containers", []):
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            c.setdefault("imagePullPolicy", "IfNotPresent")
        body["status"] = {}
        return body

    def _event(self, ns: str, obj: Obj, kind: str, reason: str, message: str, typ: str = "Normal") -> None:
        meta = obj["metadata"]
        ts = now_iso()
        self.store.create(
            "events",
            ns,
            {
                "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}"},
                "involvedObject": {
                    "kind": kind,
                    "namespace": ns,
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "apiVersion": obj.get("apiVersion", "v1"),
                    "resourceVersion": meta.get("resourceVersion"),
                },
                "reason": reason,
                "message": message,
                "type": typ,
                "count": 1,
                "firstTimestamp": ts,
                "lastTimestamp": ts,
                "source": {"component": "job-controller" if kind == "Job" else "kubelet", "host": NODE},
                "reportingComponent": "job-controller" if kind == "Job" else "kubelet",
                "reportingInstance": NODE,
            },
        )

    # --- the Job controller and the kubelet -----------------------------------------------------

    def _spawn(self, fn: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=self._guard, args=(fn, *args), daemon=True)
        self.threads.append(t)
        t.start()

    @staticmethod
    def _guard(fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("apiserver double: %s failed", fn.__name__)

    def _run_job(self, ns: str, name: str) -> None:
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
        while not self.closing:
            job = self.store.get("jobs", ns, name)
            if job is None:
                return
            deadline = job["spec"].get("activeDeadlineSeconds")
            refusal = self._pod_refusal(ns, job)
            if refusal:
                if not refused:  # a cluster aggregates the retries into one event's count
                    self._event(ns, job, "Job", "FailedCreate", refusal, "Warning")
                    refused = True
                if deadline and time.monotonic() > started + deadline:
                    self._past_deadline(ns, name)
                    return
                time.sleep(self.tick * 5)
                continue
            pod = self._create_pod(ns, job)
            self._event(ns, job, "Job", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}")
            self.store.update("jobs", ns, name, lambda j: j["status"].update(active=1))
            outcome = self._run_pod(ns, pod, job, started + deadline if deadline else None)
            if outcome == "gone" or self.store.get("jobs", ns, name) is None:
                return
            if outcome == "deadline":
                self.store.delete("pods", ns, pod["metadata"]["name"])
                self._past_deadline(ns, name)
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

    def _past_deadline(self, ns: str, name: str) -> None:
        message = "Job was active longer than specified deadline"
        self._finish_job(ns, name, "Failed", "DeadlineExceeded", message)

    def _finish_job(self, ns: str, name: str, kind: str, reason: str, message: str) -> None:
        ts = now_iso()
        target = "SuccessCriteriaMet" if kind == "Complete" else "FailureTarget"

        def change(j: Obj) -> None:
            cond = {
                "status": "True",
                "reason": reason,
                "message": message,
                "lastProbeTime": ts,
                "lastTransitionTime": ts,
            }
            j["status"]["conditions"] = [{"type": target, **cond}, {"type": kind, **cond}]
            j["status"]["active"] = 0
            if kind == "Complete":
                j["status"]["completionTime"] = ts

        job = self.store.update("jobs", ns, name, change)
        self.ended_at[name] = time.monotonic()
        if job is not None:
            self._event(
                ns,
                job,
                "Job",
                "Completed" if kind == "Complete" else reason,
                message,
                "Normal" if kind == "Complete" else "Warning",
            )

    def _pod_refusal(self, ns: str, job: Obj) -> str:
        """The quota admission's refusal of the Job's next pod, as the Job controller's
        FailedCreate event words it; "" when the pod may be created."""
        if self.pod_quota is None:
            return ""
        used = sum(
            1
            for p in self.store.list("pods", ns)[0]
            if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
        )
        if used < self.pod_quota:
            return ""
        pod = job["metadata"]["name"] + "-" + "".join(random.choices(string.ascii_lowercase, k=5))
        return (
            f'Error creating: pods "{pod}" is forbidden: exceeded quota: fractal-quota, '
            f"requested: pods=1, used: pods={used}, limited: pods={self.pod_quota}"
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

    def _run_pod(self, ns: str, pod: Obj, job: Obj, deadline: float | None) -> str:
        """Schedule, pull, run and end one pod; returns succeeded|failed|deadline|gone."""
        name = pod["metadata"]["name"]
        job_id = (job["metadata"].get("labels") or {}).get("fractal-scheduler/job-id", "")
        fault = self.faults.get(job_id, "")
        container = pod["spec"]["containers"][0]
        ts = now_iso()
        gpus = sum(
            int(v) for k, v in (container.get("resources", {}).get("limits") or {}).items() if "gpu" in k
        )
        if fault == "unschedulable" or gpus > self.node_gpus:
            message = (
                "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 nodes are "
                "available: 1 No preemption victims found for incoming pod."
            )
            self._set_pod(
                ns,
                pod,
                conditions=[
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": message,
                        "lastProbeTime": None,
                        "lastTransitionTime": ts,
                    }
                ],
            )
            self._event(ns, pod, "Pod", "FailedScheduling", message, "Warning")
            return self._stuck(ns, name, deadline)

        def scheduled(p: Obj) -> None:
            p["spec"]["nodeName"] = NODE
            p["status"].update(
                hostIP="192.168.49.2",
                hostIPs=[{"ip": "192.168.49.2"}],
                startTime=ts,
                conditions=[
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
                ],
                containerStatuses=[self._container_status(pod, {"waiting": {"reason": "ContainerCreating"}})],
            )

        if self.store.update("pods", ns, name, scheduled) is None:
            return "gone"
        self._event(ns, pod, "Pod", "Scheduled", f"Successfully assigned {ns}/{name} to {NODE}")
        if fault == "image_pull":
            image = container["image"]
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
                self._event(
                    ns, pod, "Pod", "Failed" if reason == "ErrImagePull" else "BackOff", message, "Warning"
                )
            return self._stuck(ns, name, deadline)
        try:
            env = self._resolve_env(ns, container)
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
            self._event(ns, pod, "Pod", "Failed", f"Error: {message}", "Warning")
            return self._stuck(ns, name, deadline)
        self._event(
            ns, pod, "Pod", "Pulled", f'Container image "{container["image"]}" already present on machine'
        )
        self._event(ns, pod, "Pod", "Started", f"Started container {container['name']}")
        started = now_iso()
        running = self._container_status(
            pod, {"running": {"startedAt": started}}, ready=True, started=True, image_id=IMAGE_ID
        )
        self._set_pod(
            ns,
            pod,
            phase="Running",
            podIP="10.244.0.7",
            podIPs=[{"ip": "10.244.0.7"}],
            containerStatuses=[running],
        )
        self.store.update("jobs", ns, job["metadata"]["name"], lambda j: j["status"].update(ready=1))
        if fault == "oom":
            time.sleep(0.2)
            return self._terminate(ns, pod, running, started, 137, "OOMKilled", "")
        argv = self.commands.get(job_id) or self.default_command or list(container.get("command") or [])
        argv += list(container.get("args") or [])
        if argv and argv[0] == "python":
            argv[0] = sys.executable
        buf = self.logs.setdefault(name, bytearray())
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=self.workdir,
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
        while proc.poll() is None:
            if self.closing or self.store.get("pods", ns, name) is None:
                proc.kill()
                proc.wait()
                return "gone"
            if deadline is not None and time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                return "deadline"
            time.sleep(self.tick)
        reader.join(5)
        code = proc.returncode
        message = ""
        if code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            # The tail of the log: at most 80 lines or 2048 bytes, whichever is smaller.
            tail = b"\n".join(bytes(buf).splitlines()[-80:])[-2048:]
            message = tail.decode(errors="replace")
        return self._terminate(
            ns, pod, running, started, code, "Completed" if code == 0 else "Error", message
        )

    def _terminate(
        self, ns: str, pod: Obj, running: Obj, started: str, code: int, reason: str, message: str
    ) -> str:
        terminated: Obj = {
            "exitCode": code,
            "reason": reason,
            "startedAt": started,
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

    def _stuck(self, ns: str, name: str, deadline: float | None) -> str:
        """A pod that never starts: wait until it is deleted or the Job's deadline passes."""
        while not self.closing:
            if self.store.get("pods", ns, name) is None:
                return "gone"
            if deadline is not None and time.monotonic() > deadline:
                return "deadline"
            time.sleep(self.tick * 5)
        return "gone"

    def _resolve_env(self, ns: str, container: Obj) -> dict[str, str]:
        """What the kubelet gives the process: envFrom first, then env (env wins)."""
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
                obj = self.store.get("configmaps", ns, ref["name"])
                if obj is None and not ref.get("optional"):
                    raise KeyError(f'configmap "{ref["name"]}" not found')
                env.update((obj or {}).get("data") or {})
            if "secretRef" in source:
                ref = source["secretRef"]
                obj = self.store.get("secrets", ns, ref["name"])
                if obj is None and not ref.get("optional"):
                    raise KeyError(f'secret "{ref["name"]}" not found')
                data = (obj or {}).get("data") or {}
                env.update({k: base64.b64decode(v).decode() for k, v in data.items()})
                env.update((obj or {}).get("stringData") or {})
        for var in container.get("env") or []:
            env[var["name"]] = var.get("value", "")
        return env

    # --- helpers for tests ------------------------------------------------------------------------

    def put_config(self, name: str, data: dict[str, str]) -> None:
        self.store.create("configmaps", self.namespace, {"metadata": {"name": name}, "data": data})

    def put_secret(self, name: str, data: dict[str, str]) -> None:
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        self.store.create(
            "secrets", self.namespace, {"metadata": {"name": name}, "type": "Opaque", "data": encoded}
        )

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
