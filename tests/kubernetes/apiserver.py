"""A Kubernetes API server double that the real `kubernetes` client talks to over HTTP, and
that fails the way a real cluster fails wherever that could hide a bug in the client's user.

What it serves (namespaced): batch/v1 jobs (create/get/list/watch/delete with
propagationPolicy), core/v1 pods (get/list/watch/delete) and pods/log, events (list/watch),
configmaps and secrets (for the pods' envFrom), and authorization.k8s.io/v1
selfsubjectaccessreviews. Lists carry a resourceVersion; watches stream chunked JSON lines
(ADDED/MODIFIED/DELETED/BOOKMARK/ERROR) from a resourceVersion and end after timeoutSeconds or
earlier, at random. An expired resourceVersion is a 410 Gone, as the HTTP status of a list or
watch or as an ERROR event inside a stream; one the watch cache has not reached is a 504 "Too
large resource version". Label selectors are equality- and set-based (`a in (x,y)`, `!a`);
a field selector on a field the resource does not index is a 400. Errors are real Status objects.

Every request is authorised by bearer token: the service account's token through the RoleBinding
of serviceaccount/rolebinding.yaml (its subjects decide who gets the Role of role.yaml, as in a
cluster: a verb the code needs but the Role lacks is a 403, and so is every verb for an account
the binding does not name), an admin token for everything. SelfSubjectAccessReview is open to
every authenticated user (system:basic-user grants it in a real cluster).

It also plays the Job controller and the kubelet: a created Job gets a Pod whose container
command runs here as a process (`python` mapped to this interpreter), as PID 1 of its own PID
namespace when it can (root: `unshare`), with the pod's resolved environment (env + envFrom
ConfigMaps/Secrets); pod and Job status move Pending -> Running -> Succeeded/Failed as a
cluster's would (conditions, reasons, termination message from the log's tail under
FallbackToLogsOnError), honouring backoffLimit and activeDeadlineSeconds. FailureTarget comes
before Failed and SuccessCriteriaMet before Complete, in updates of their own (1.31's Job
controller). Deletion is graceful: a deleted pod gets a deletionTimestamp and is Terminating, its
PID 1 gets SIGTERM (ignored without a handler, as in a container) and SIGKILL after the grace
period, and only then does the pod disappear; a Job deleted with Background propagation goes at
once and its pods terminate afterwards; past activeDeadlineSeconds its pods are deleted
gracefully and Failed follows once they are gone.

Fault knobs: `faults[job_id]` = "image_pull" | "oom" | "unschedulable"; a GPU limit is
Unschedulable (Insufficient nvidia.com/gpu) while the node's `node_gpus` are taken by other
pods, and scheduled once they free; ResourceQuota objects (create them in the store) are
enforced as quota admission does (a pod over a `hard` is refused: FailedCreate on the Job
until there is room) and their `status.used` kept current as the quota controller does;
`pod_quota` = N plays a quota `pods: N` the same way;
`down()`/`up()` refuse connections and cut open streams; `expire_watches()` ends open watches
with a 410 ERROR and forgets the history; `watch_cache_lag` = N answers 504 to watches from the
last N versions; `watch_early_end`, `default_grace_seconds`, `rng` (seed it to replay a run).
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
import shutil
import signal
import socket
import string
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from kubernetes.utils import parse_quantity

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
ROLE_FILE = REPO / "serviceaccount" / "role.yaml"
ROLEBINDING_FILE = REPO / "serviceaccount" / "rolebinding.yaml"

# resource -> (api group, version, kind)
RESOURCES: dict[str, tuple[str, str, str]] = {
    "jobs": ("batch", "v1", "Job"),
    "pods": ("", "v1", "Pod"),
    "events": ("", "v1", "Event"),
    "configmaps": ("", "v1", "ConfigMap"),
    "resourcequotas": ("", "v1", "ResourceQuota"),
    "secrets": ("", "v1", "Secret"),
}
NODE = "double-node-1"
IMAGE_ID = "docker.io/library/fractal-job@sha256:" + "0" * 64

Obj = dict[str, Any]


def now_iso(later: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=later)).strftime("%Y-%m-%dT%H:%M:%SZ")


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


def too_large(asked: int, current: int) -> ApiError:
    """What a watch cache that is behind answers for a resourceVersion it has not seen yet."""
    return ApiError(
        504,
        "Timeout",
        f"Timeout: Too large resource version: {asked}, current: {current}",
        {"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
         "retryAfterSeconds": 1},
    )


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.status = status_obj(code, reason, message, details)


# --- selectors -------------------------------------------------------------------------------


_TERMS = re.compile(r"\s*([^,(]+(?:\([^)]*\))?)\s*(?:,|$)")
_SET_TERM = re.compile(r"^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$")
_TERM = re.compile(r"^(!?)([\w./-]+)\s*(?:(==|!=|=)\s*([\w.-]*))?$")


def _label_terms(selector: str) -> list[tuple[str, str, set[str]]]:
    """Parse a label selector into (key, operator, values): equality (`a=b`, `a==b`, `a!=b`),
    set-based (`a in (x,y)`, `a notin (x)`) and existence (`a`, `!a`); a 400 otherwise.
    https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors"""
    if selector.count("(") != selector.count(")"):
        raise ApiError(400, "BadRequest", f"unable to parse requirement: {selector!r}")
    terms = []
    for raw in (m.group(1).strip() for m in _TERMS.finditer(selector.strip()) if m.group(1).strip()):
        if match := _SET_TERM.match(raw):
            values = {v.strip() for v in match.group(3).split(",") if v.strip()}
            terms.append((match.group(1), match.group(2), values))
        elif match := _TERM.match(raw):
            bang, key, op, value = match.groups()
            if bang and op:
                raise ApiError(400, "BadRequest", f"unable to parse requirement: {raw!r}")
            terms.append((key, {"==": "=", None: "!" if bang else "exists"}.get(op, op), {value or ""}))
        else:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {raw!r}")
    return terms


def label_match(selector: str, labels: dict[str, str]) -> bool:
    for key, op, values in _label_terms(selector):
        present, value = key in labels, labels.get(key)
        ok = {
            "=": value in values,
            "!=": value not in values,
            "in": present and value in values,
            "notin": value not in values,
            "exists": present,
            "!": not present,
        }[op]
        if not ok:
            return False
    return True


# Field selectors each resource supports; anything else is a 400, as from a real API server.
FIELDS: dict[str, set[str]] = {
    "jobs": {"status.successful"},
    "pods": {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
             "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"},
    "events": {"involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
               "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
               "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"},
}


def field_terms(resource: str, selector: str) -> list[tuple[str, bool, str]]:
    """(path, negated, value) per term of a field selector; unsupported fields are a 400."""
    terms = []
    for term in filter(None, (t.strip() for t in selector.split(","))):
        negate = "!=" in term
        path, value = term.split("!=" if negate else "=", 1)
        path = path.strip()
        if path not in FIELDS.get(resource, set()) | {"metadata.name", "metadata.namespace"}:
            raise ApiError(400, "BadRequest", f"field label not supported: {path}")
        terms.append((path, negate, value.lstrip("=").strip()))
    return terms


def field_match(selector: str, obj: Obj, resource: str = "") -> bool:
    """Field selectors on dotted paths (`involvedObject.name=x,metadata.name=y`)."""
    for path, negate, value in field_terms(resource or _resource_of(obj), selector):
        cur: Any = obj
        for part in path.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if (str(cur) == value) == negate:
            return False
    return True


def _resource_of(obj: Obj) -> str:
    return next((r for r, (_, _, kind) in RESOURCES.items() if kind == obj.get("kind")), "")


# --- RBAC ------------------------------------------------------------------------------------


def load_rules(path: Path = ROLE_FILE) -> list[Obj]:
    """The rules of the Role in serviceaccount/role.yaml."""
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "Role":
            return list(doc.get("rules") or [])
    raise AssertionError(f"no Role in {path}")


def load_binding(namespace: str, path: Path = ROLEBINDING_FILE) -> Obj:
    """The RoleBinding of serviceaccount/rolebinding.yaml as applied to `namespace`: kustomize
    rewrites its ServiceAccount subjects' namespace to the kustomization's."""
    binding = yaml.safe_load(path.read_text())
    binding.setdefault("metadata", {})["namespace"] = namespace
    for subject in binding.get("subjects") or []:
        if subject.get("kind") == "ServiceAccount":
            subject["namespace"] = namespace
    return binding


def binds(binding: Obj, user: str, role: str) -> bool:
    """Whether `binding` grants the Role `role` to `user` (a ServiceAccount's or a User's name)."""
    ref = binding.get("roleRef") or {}
    if ref.get("kind") != "Role" or ref.get("name") != role:
        return False
    for subject in binding.get("subjects") or []:
        if subject.get("kind") == "ServiceAccount":
            ns = subject.get("namespace") or binding["metadata"].get("namespace")
            if user == f"system:serviceaccount:{ns}:{subject.get('name')}":
                return True
        elif subject.get("kind") == "User" and user == subject.get("name"):
            return True
    return False


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


DEADLINE_MESSAGE = "Job was active longer than specified deadline"


def _gpus(pod: Obj) -> int:
    limits = pod["spec"]["containers"][0].get("resources", {}).get("limits") or {}
    return sum(int(v) for k, v in limits.items() if "gpu" in k)


def _usage(pod_spec: Obj) -> Counter[str]:
    """What one pod counts against a ResourceQuota: its requests (which default to its limits,
    as the API defaults them) and limits, and one pod.
    https://kubernetes.io/docs/concepts/policy/resource-quotas/"""
    use: Counter[str] = Counter({"pods": Decimal(1), "count/pods": Decimal(1)})
    for container in pod_spec.get("containers") or []:
        resources = container.get("resources") or {}
        limits = resources.get("limits") or {}
        for name, quantity in {**limits, **(resources.get("requests") or {})}.items():
            use[f"requests.{name}"] += parse_quantity(quantity)
            if name in ("cpu", "memory"):
                use[name] += parse_quantity(quantity)
        for name in ("cpu", "memory"):
            if name in limits:
                use[f"limits.{name}"] += parse_quantity(limits[name])
    return use


def _scope_matches(pod_spec: Obj, name: str, operator: str, values: list[str]) -> bool:
    """One scope of a ResourceQuota against a pod, as pkg/quota/v1/evaluator/core/pods.go."""
    resources = [c.get("resources") or {} for c in pod_spec.get("containers") or []]
    best_effort = not any(r.get(kind, {}).get(res) for r in resources
                          for kind in ("requests", "limits") for res in ("cpu", "memory"))
    deadline = pod_spec.get("activeDeadlineSeconds")
    terminating = deadline is not None and deadline >= 0
    if name == "PriorityClass":  # a label selector over {PriorityClass: name}, empty without one
        have = pod_spec.get("priorityClassName") or None
        return {"In": have in values, "NotIn": have not in values, "Exists": have is not None,
                "DoesNotExist": have is None}.get(operator, False)
    terms = []
    for kind in ("podAffinity", "podAntiAffinity"):
        rules = (pod_spec.get("affinity") or {}).get(kind) or {}
        terms += rules.get("requiredDuringSchedulingIgnoredDuringExecution") or []
        preferred = rules.get("preferredDuringSchedulingIgnoredDuringExecution") or []
        terms += [w["podAffinityTerm"] for w in preferred]
    cross_ns = any(term.get("namespaces") or "namespaceSelector" in term for term in terms)
    return {"Terminating": terminating, "NotTerminating": not terminating, "BestEffort": best_effort,
            "NotBestEffort": not best_effort, "CrossNamespacePodAffinity": cross_ns}.get(name, False)


def _scoped(quota: Obj) -> list[tuple[str, str, list[str]]]:
    spec = quota.get("spec") or {}
    scopes = [(name, "Exists", []) for name in spec.get("scopes") or []]
    expressions = (spec.get("scopeSelector") or {}).get("matchExpressions") or []
    return scopes + [(e["scopeName"], e["operator"], e.get("values") or []) for e in expressions]


def _counts(quota: Obj, pod_spec: Obj) -> bool:
    """A quota counts a pod when every one of its scopes matches it (none: every pod)."""
    return all(_scope_matches(pod_spec, *scope) for scope in _scoped(quota))


def _quantity(value: Decimal | int) -> str:
    return f"{Decimal(value).normalize():f}"


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
            if verb in ("list", "watch"):  # bad selectors are refused before anything is sent
                _label_terms(query.get("labelSelector", ""))
                field_terms(resource, query.get("fieldSelector", ""))
            if verb == "watch":
                self._watch(resource, ns, query)
            elif verb == "list":
                asked = query.get("resourceVersion", "")
                if asked not in ("", "0") and int(asked) < api.store.oldest_rv:
                    message = f"too old resource version: {asked} ({api.store.oldest_rv})"
                    raise ApiError(410, "Expired", message)
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
                grace = query.get("gracePeriodSeconds", body.get("gracePeriodSeconds"))
                grace = None if grace is None else int(grace)
                self._send_json(200, api.delete(resource, ns, name, policy, grace))
            else:
                raise ApiError(405, "MethodNotAllowed", f"{verb} is not supported by this double")
        except ApiError as exc:
            self._send_json(exc.status["code"], exc.status)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def _watch(self, resource: str, ns: str, query: dict[str, str]) -> None:
        """A watch stream: chunked JSON lines from resourceVersion until timeoutSeconds, or
        earlier at random (a real API server's streams end early too: restarts, rebalancing).
        An expired resourceVersion is a 410, as an HTTP status or as an ERROR event in the
        stream (both happen); one ahead of the server's is a 504 "Too large resource version"."""
        api, store = self.server.api, self.server.api.store
        labels = query.get("labelSelector", "")
        fields = query.get("fieldSelector", "")
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        timeout = float(query.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout * api.rng.uniform(api.watch_early_end, 1.0)
        rv_param = query.get("resourceVersion", "")
        with store.cond:
            expiry = store.expiry
            if rv_param in ("", "0"):
                # "Start at most recent": synthetic ADDED for what exists now.
                items, last = store.list(resource, ns, labels, fields)
                initial = [("ADDED", o) for o in items]
            else:
                last, initial = int(rv_param), []
                if last > store.rv - api.watch_cache_lag:
                    raise too_large(last, store.rv - api.watch_cache_lag)
                if last < store.oldest_rv:
                    gone = status_obj(410, "Expired", f"too old resource version: {last} ({store.oldest_rv})")
                    if api.rng.random() < 0.5:
                        raise ApiError(410, "Expired", gone["message"])
                    initial = [("ERROR", gone)]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def send(kind: str, obj: Obj) -> None:
            data = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

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
        self.rules = load_rules() if rules is None else rules  # the Role's
        self.role_name = "fractal-scheduler"
        self.bindings = [load_binding(namespace)]  # RBAC goes through these: who has the Role
        self.store = Store()
        self.sa_user = f"system:serviceaccount:{namespace}:fractal-scheduler"
        self.tokens = {"sa-" + uuid.uuid4().hex: self.sa_user, "admin-" + uuid.uuid4().hex: "admin"}
        self.requests: Counter[str] = Counter()
        self.denials: list[str] = []  # 403s the service account got (a missing Role verb)
        self.faults: dict[str, str] = {}  # job_id -> "image_pull" | "oom" | "unschedulable"
        self.commands: dict[str, list[str]] = {}  # job_id -> argv instead of the container's
        self.default_command: list[str] | None = None
        self.node_gpus = 0  # GPUs of the one node: a GPU pod waits Unschedulable while they are taken
        self._schedule_lock = threading.Lock()
        self.bookmark_interval = 1.0
        self.rng = random.Random()  # the double's random choices (set a seed to replay a run)
        self.watch_early_end = 0.3  # a watch lasts this fraction of timeoutSeconds, or more, at random
        self.watch_cache_lag = 0  # versions the watch cache is behind: newer ones are a 504
        self.tick = 0.02  # how often the kubelet looks at its processes
        self.pod_quota: int | None = None  # a ResourceQuota's `pods`: non-terminal pods allowed
        self.default_grace_seconds = 30  # terminationGracePeriodSeconds when a pod sets none
        self.kubelet_pods: set[str] = set()  # pods whose kubelet loop runs (a container may run)
        self._kubelet_lock = threading.Lock()
        # Run containers as PID 1 of their own PID namespace, as a container runtime does: a
        # PID 1 without a SIGTERM handler ignores SIGTERM (needs root; else a plain process).
        self.pid_namespaces = os.geteuid() == 0 and shutil.which("unshare") is not None
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
        self._spawn(self._quota_controller)
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
        if self.may(user, ns, group, resource, verb):
            return
        qualified = f"{resource}.{group}" if group else resource
        named = f' "{name}"' if name else ""
        message = (
            f'{qualified}{named} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
            f'in API group "{group}" in the namespace "{ns}"'
        )
        self.denials.append(f"{verb} {qualified}")
        raise ApiError(403, "Forbidden", message, {"name": name or "", "group": group, "kind": resource})

    def may(self, user: str, ns: str, group: str, resource: str, verb: str) -> bool:
        """RBAC: the Role's rules apply to `user` in its namespace only through a RoleBinding."""
        bound = any(
            b["metadata"].get("namespace") == ns and binds(b, user, self.role_name) for b in self.bindings
        )
        return ns == self.namespace and bound and allowed(self.rules, group, resource, verb)

    def access_review(self, user: str, body: Obj) -> Obj:
        attrs = (body.get("spec") or {}).get("resourceAttributes") or {}
        resource = attrs.get("resource", "")
        if attrs.get("subresource"):
            resource += "/" + attrs["subresource"]
        ok = user == "admin" or self.may(
            user, attrs.get("namespace", ""), attrs.get("group", ""), resource, attrs.get("verb", "")
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

    def delete(self, resource: str, ns: str, name: str, policy: str, grace: int | None = None) -> Obj:
        """Pods end gracefully (see terminate_pod). A Job goes at once with Background
        propagation, its pods terminating afterwards; with Foreground it waits for them."""
        obj = self.get(resource, ns, name)
        if resource == "pods":
            self.terminate_pod(ns, name, grace)
        elif resource == "jobs" and policy == "Foreground":
            self.store.update(resource, ns, name, lambda j: j["metadata"].update(
                deletionTimestamp=now_iso(), finalizers=["foregroundDeletion"]))
        else:
            self.store.delete(resource, ns, name)
        if resource == "jobs":
            uid = obj["metadata"]["uid"]
            owned = [
                p["metadata"]["name"] for p in self.store.list("pods", ns)[0]
                if any(ref.get("uid") == uid for ref in p["metadata"].get("ownerReferences", []))
            ]
            if policy in ("Background", "Foreground"):  # the garbage collector deletes the dependents
                for pod in owned:
                    self.terminate_pod(ns, pod, None)
                if policy == "Foreground":
                    self._spawn(self._delete_when_gone, ns, name, owned)
            else:  # batch/v1 Jobs default to orphaning their pods
                for pod in owned:
                    self.store.update("pods", ns, pod, lambda p: p["metadata"].pop("ownerReferences", None))
        group = RESOURCES[resource][0]
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "group": group, "kind": resource, "uid": obj["metadata"]["uid"]},
        }

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
                grace = int(pod["spec"].get("terminationGracePeriodSeconds", self.default_grace_seconds))
            self.store.update("pods", ns, name, lambda p: p["metadata"].update(
                deletionTimestamp=now_iso(grace), deletionGracePeriodSeconds=grace))
            if name not in self.kubelet_pods:
                self.store.delete("pods", ns, name)

    def _delete_when_gone(self, ns: str, name: str, pods: list[str]) -> None:
        while not self.closing and any(self.store.get("pods", ns, p) for p in pods):
            time.sleep(self.tick)
        self.store.delete("jobs", ns, name)

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
        for c in pod_spec.get("containers", []):
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            c.setdefault("imagePullPolicy", "IfNotPresent")
        pod_spec.setdefault("terminationGracePeriodSeconds", self.default_grace_seconds)
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
                    self._finish_job(ns, name, "Failed", "DeadlineExceeded", DEADLINE_MESSAGE)
                    return
                time.sleep(self.tick * 5)
                continue
            pod = self._create_pod(ns, job)
            self._event(ns, job, "Job", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}")
            self.store.update("jobs", ns, name, lambda j: j["status"].update(active=1))
            outcome = self._run_pod(ns, pod, job, started + deadline if deadline else None)
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

    def _deadline_passed(self, ns: str, name: str) -> None:
        """activeDeadlineSeconds passed while a pod exists: FailureTarget now, the pods deleted
        gracefully, and Failed once they are gone (the Job controller of 1.31)."""
        job = self.store.get("jobs", ns, name)
        if job is None or _condition(job, "FailureTarget"):
            return
        self._add_condition(ns, name, "FailureTarget", "DeadlineExceeded", DEADLINE_MESSAGE)
        for pod in self.store.list("pods", ns, f"job-name={name}")[0]:
            if pod.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
                self.terminate_pod(ns, pod["metadata"]["name"], None)

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
        quota_refusal = self._quota_refusal(ns, job)
        if quota_refusal or self.pod_quota is None:
            return quota_refusal
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

    # --- ResourceQuotas: the quota admission of pods, and the controller's usage ------------------

    def _quota_used(self, ns: str, quota: Obj) -> Counter[str]:
        """What a quota counts: the non-terminal pods its scopes match, and (unscoped: scopes
        match pods only) the Jobs."""
        used: Counter[str] = Counter()
        if not _scoped(quota):
            used["count/jobs.batch"] = Decimal(len(self.store.list("jobs", ns)[0]))
        for pod in self.store.list("pods", ns)[0]:
            live = pod.get("status", {}).get("phase") not in ("Succeeded", "Failed")
            if live and _counts(quota, pod["spec"]):
                used.update(_usage(pod["spec"]))
        return used

    def _quota_refusal(self, ns: str, job: Obj) -> str:
        """The admission plugin: a pod whose usage would exceed a quota's `hard` is refused."""
        quotas = self.store.list("resourcequotas", ns)[0]
        if not quotas:
            return ""
        pod_spec = job["spec"]["template"]["spec"]
        wanted = _usage(pod_spec)
        for quota in quotas:
            if not _counts(quota, pod_spec):
                continue
            used = self._quota_used(ns, quota)
            for resource, hard in (quota.get("spec", {}).get("hard") or {}).items():
                need = wanted.get(resource, Decimal(0))
                if need and used[resource] + need > parse_quantity(hard):
                    pod = job["metadata"]["name"] + "-" + "".join(random.choices(string.ascii_lowercase, k=5))
                    name, have = quota["metadata"]["name"], _quantity(used[resource])
                    return (
                        f'Error creating: pods "{pod}" is forbidden: exceeded quota: {name}, requested: '
                        f"{resource}={_quantity(need)}, used: {resource}={have}, limited: {resource}={hard}"
                    )
        return ""

    def _quota_controller(self) -> None:
        """Keeps each quota's status (hard, used) current, as the quota controller does."""
        while not self.closing:
            for quota in self.store.list("resourcequotas", self.namespace)[0]:
                used = self._quota_used(self.namespace, quota)
                hard = quota.get("spec", {}).get("hard") or {}
                status = {"hard": dict(hard), "used": {r: _quantity(used[r]) for r in hard}}
                if quota.get("status") != status:
                    self.store.update("resourcequotas", self.namespace, quota["metadata"]["name"],
                                      lambda q, st=status: q.update(status=st))
            time.sleep(self.tick * 5)

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
                if current is not None and current["metadata"].get("deletionTimestamp"):
                    self.store.delete("pods", ns, name)

    def _kubelet(self, ns: str, pod: Obj, job: Obj, deadline: float | None) -> str:
        """Schedule, pull, run and end one pod; returns succeeded|failed|gone."""
        name = pod["metadata"]["name"]
        job_id = (job["metadata"].get("labels") or {}).get("fractal-scheduler/job-id", "")
        fault = self.faults.get(job_id, "")
        container = pod["spec"]["containers"][0]
        ts = now_iso()
        gpus = _gpus(pod)
        if fault == "unschedulable" or gpus > self.node_gpus:  # no node will ever fit it
            self._unschedulable(ns, pod, ts)
            return self._stuck(ns, name, job["metadata"]["name"], deadline)
        told = False
        while gpus and not self._place_gpus(ns, name, gpus):  # the node's GPUs are taken: retry
            if not told:
                self._unschedulable(ns, pod, ts)
                told = True
            current = self.store.get("pods", ns, name)
            if current is None or current["metadata"].get("deletionTimestamp") or self.closing:
                return "gone"
            if deadline is not None and time.monotonic() > deadline:
                self._deadline_passed(ns, job["metadata"]["name"])
            time.sleep(self.tick * 5)
            ts = now_iso()

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
            return self._stuck(ns, name, job["metadata"]["name"], deadline)
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
            return self._stuck(ns, name, job["metadata"]["name"], deadline)
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
        if self.pid_namespaces:
            argv = ["unshare", "--pid", "--fork", "--kill-child", *argv]
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
        code = self._supervise(ns, name, job["metadata"]["name"], proc, deadline)
        if code is None:
            return "gone"
        reader.join(5)
        message = ""
        if code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            # The tail of the log: at most 80 lines or 2048 bytes, whichever is smaller.
            tail = b"\n".join(bytes(buf).splitlines()[-80:])[-2048:]
            message = tail.decode(errors="replace")
        outcome = self._terminate(
            ns, pod, running, started, code, "Completed" if code == 0 else "Error", message
        )
        current = self.store.get("pods", ns, name)
        return "gone" if current is None or current["metadata"].get("deletionTimestamp") else outcome

    def _supervise(self, ns: str, name: str, job_name: str, proc: subprocess.Popen[bytes],
                   deadline: float | None) -> int | None:
        """Wait for the container to exit: SIGTERM to its PID 1 once the pod is being deleted,
        SIGKILL when the grace period is over. Its exit code, or None when the pod vanished
        (force-deleted, or the double is closing)."""
        term_at, grace = None, 0.0
        while proc.poll() is None:
            pod = self.store.get("pods", ns, name)
            if self.closing or pod is None:
                proc.kill()
                proc.wait()
                return None
            meta = pod["metadata"]
            if deadline is not None and time.monotonic() > deadline and not meta.get("deletionTimestamp"):
                self._deadline_passed(ns, job_name)
                continue
            if meta.get("deletionTimestamp") and term_at is None:
                term_at, grace = time.monotonic(), float(meta.get("deletionGracePeriodSeconds") or 0)
                self._signal_pid1(proc, signal.SIGTERM)
            if term_at is not None and time.monotonic() >= term_at + grace:
                proc.kill()  # --kill-child: its PID 1 goes with it
                proc.wait()
                return 128 + signal.SIGKILL
            time.sleep(self.tick)
        code = proc.returncode
        return 128 - code if code < 0 else code

    def _signal_pid1(self, proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        """Signal the container's PID 1: unshare's child in its PID namespace (a signal it has
        no handler for is ignored there, as in a container), else the process itself."""
        pid = proc.pid
        if self.pid_namespaces:
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

    def _unschedulable(self, ns: str, pod: Obj, ts: str) -> None:
        message = (
            "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 nodes are "
            "available: 1 No preemption victims found for incoming pod."
        )
        condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                     "lastProbeTime": None, "lastTransitionTime": ts}
        self._set_pod(ns, pod, conditions=[condition])
        self._event(ns, pod, "Pod", "FailedScheduling", message, "Warning")

    def _place_gpus(self, ns: str, name: str, gpus: int) -> bool:
        """The scheduler's GPU fit: the node's GPUs minus those of the pods bound to it that
        have not ended. A fit binds the pod at once (nodeName), under the lock."""
        with self._schedule_lock:
            held = sum(
                _gpus(p) for p in self.store.list("pods", ns)[0]
                if p["metadata"]["name"] != name and p["spec"].get("nodeName")
                and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
            )
            if held + gpus > self.node_gpus:
                return False
            return self.store.update("pods", ns, name, lambda p: p["spec"].update(nodeName=NODE)) is not None

    def _stuck(self, ns: str, name: str, job_name: str, deadline: float | None) -> str:
        """A pod that never starts: wait until it is deleted (nothing runs: it goes at once)."""
        while not self.closing:
            pod = self.store.get("pods", ns, name)
            if pod is None or pod["metadata"].get("deletionTimestamp"):
                return "gone"
            if deadline is not None and time.monotonic() > deadline:
                self._deadline_passed(ns, job_name)
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
