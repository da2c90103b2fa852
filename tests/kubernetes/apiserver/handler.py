"""The HTTP side: routing a request to a verb on a resource (authorised through RBAC first), lists
with their resourceVersion, watch streams as chunked JSON lines, and every error as a Status."""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import re
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .patches import JSON_PATCH
from .resources import RESOURCES, ApiError, Obj, status_obj, too_large
from .selectors import field_match, field_terms, label_match, label_terms

if TYPE_CHECKING:
    from .server import FakeApiServer
    from .store import Store

log = logging.getLogger(__name__)

PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[a-z0-9.]+)/v1)"
    r"(?:/namespaces/(?P<ns>[a-z0-9-]+))?/(?P<resource>[a-z]+)"
    r"(?:/(?P<name>[a-z0-9.-]+))?(?:/(?P<sub>[a-z]+))?$"
)


@dataclass(frozen=True)
class _Watch:
    """What one watch asks for: the objects it follows, bookmarks or not, and when it ends."""

    resource: str
    ns: str
    labels: str
    fields: str
    bookmarks: bool
    deadline: float  # time.monotonic()

    def matches(self, resource: str, ns: str, obj: Obj) -> bool:
        return (
            resource == self.resource
            and ns == self.ns
            and label_match(self.labels, obj["metadata"].get("labels") or {})
            and field_match(self.fields, obj)
        )


def _parse_path(path: str) -> tuple[str, str | None, str, str | None, str | None]:
    """(group, namespace, resource, name, subresource) of a request path; 404 for any other path."""
    match = PATH.match(path)
    if not match:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    group, ns, resource, name, sub = (match.group(g) for g in ("group", "ns", "resource", "name", "sub"))
    return group or "", ns, resource, name, sub


def _verb(method: str, name: str | None, query: dict[str, str]) -> str:
    """The API verb RBAC authorises for an HTTP method on a collection or a named object."""
    if method == "GET":
        if query.get("watch") in ("true", "1"):
            return "watch"
        return "get" if name else "list"
    if method == "DELETE":
        return "delete" if name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}[method]


def _api_version(resource: str) -> str:
    group, version, _ = RESOURCES[resource]
    return f"{group}/{version}" if group else version


def _too_old(asked: int | str, oldest: int) -> str:
    return f"too old resource version: {asked} ({oldest})"


def _changes(store: Store, watch: _Watch, expiry: int, last: int) -> tuple[list[tuple[str, Obj]], int]:
    """The watch's events after `last` (read under store.cond) and the resourceVersion it has then
    seen to; an ERROR 410 instead once the store has expired the history it reads."""
    if store.expiry != expiry:
        return [("ERROR", status_obj(410, "Expired", _too_old(last, store.oldest_rv)))], last
    start = bisect.bisect_right(store.history_rvs, last)
    pending = [(kind, obj) for _, r, n, kind, obj in store.history[start:] if watch.matches(r, n, obj)]
    return pending, store.rv


def _body(raw: bytes, content_type: str = "") -> Any:
    """The request's JSON object (a list too for a JSON patch); anything else is a 400, as the
    API server's decoder says."""
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, "BadRequest", f"couldn't get version/kind; json parse error: {exc}") from None
    if isinstance(body, list) and content_type.startswith(JSON_PATCH):
        return body
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", "couldn't get version/kind; json parse error: not an object")
    return body


def _number(name: str, value: Any, kind: type[int] | type[float]) -> Any:
    """A numeric query or body field; a 400 naming it when it is not a number."""
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ApiError(400, "BadRequest", f'{name}: Invalid value: "{value}": not a number') from None


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
            user = api.rbac.authenticate(self.headers.get("Authorization", ""))
            group, ns, resource, name, sub = _parse_path(url.path)
            if resource == "selfsubjectaccessreviews" and method == "POST":
                api.count("create", resource)
                self._send_json(201, api.rbac.access_review(user, _body(raw)))
                return
            if resource not in RESOURCES or ns is None or RESOURCES[resource][0] != group:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            verb = _verb(method, name, query)
            full = f"{resource}/{sub}" if sub else resource
            api.count(verb, full)
            api.rbac.authorize(user, group, full, verb, ns, name)
            content_type = self.headers.get("Content-Type", "")
            body = _body(raw, content_type)  # decoded once authorised
            if verb == "patch":
                self._send_json(200, api.patch(resource, ns, name or "", content_type, body))
                return
            self._serve(verb, resource, ns, name, sub, query, body)
        except ApiError as exc:
            self._send_json(exc.status["code"], exc.status)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def _serve(
        self,
        verb: str,
        resource: str,
        ns: str,
        name: str | None,
        sub: str | None,
        query: dict[str, str],
        body: Obj,
    ) -> None:
        """Carry out an authorised verb and send its answer."""
        api = self.server.api
        if verb in ("list", "watch"):  # bad selectors are refused before anything is sent
            label_terms(query.get("labelSelector", ""))
            field_terms(resource, query.get("fieldSelector", ""))
        if verb == "watch":
            self._watch(resource, ns, query)
        elif verb == "list":
            self._send_json(200, self._list(resource, ns, query))
        elif verb == "get" and sub == "log":
            self._send_text(200, api.pod_log(ns, name, query))
        elif verb == "get":
            self._send_json(200, api.get(resource, ns, name))
        elif verb == "create":
            self._send_json(201, api.create(resource, ns, body))
        elif verb == "delete":
            policy = query.get("propagationPolicy") or body.get("propagationPolicy") or ""
            grace = query.get("gracePeriodSeconds", body.get("gracePeriodSeconds"))
            grace = None if grace is None else _number("gracePeriodSeconds", grace, int)
            self._send_json(200, api.delete(resource, ns, name, policy, grace))
        else:
            raise ApiError(405, "MethodNotAllowed", f"{verb} is not supported by this double")

    def _list(self, resource: str, ns: str, query: dict[str, str]) -> Obj:
        """A List of what matches the selectors, at the store's resourceVersion; 410 for a
        resourceVersion older than the store keeps."""
        store = self.server.api.store
        asked = query.get("resourceVersion", "")
        if asked not in ("", "0") and _number("resourceVersion", asked, int) < store.oldest_rv:
            raise ApiError(410, "Expired", _too_old(asked, store.oldest_rv))
        items, rv = store.list(resource, ns, query.get("labelSelector", ""), query.get("fieldSelector", ""))
        _, _, kind = RESOURCES[resource]
        return {
            "kind": f"{kind}List",
            "apiVersion": _api_version(resource),
            "metadata": {"resourceVersion": str(rv)},
            "items": items,
        }

    def _watch(self, resource: str, ns: str, query: dict[str, str]) -> None:
        """A watch stream: chunked JSON lines from resourceVersion until timeoutSeconds, or
        earlier at random (a real API server's streams end early too: restarts, rebalancing).
        An expired resourceVersion is a 410, as an HTTP status or as an ERROR event in the
        stream (both happen); one ahead of the server's is a 504 "Too large resource version"."""
        api = self.server.api
        timeout = _number("timeoutSeconds", query.get("timeoutSeconds") or "1800", float)
        watch = _Watch(
            resource,
            ns,
            query.get("labelSelector", ""),
            query.get("fieldSelector", ""),
            bookmarks=query.get("allowWatchBookmarks") in ("true", "1"),
            deadline=time.monotonic() + timeout * api.rng.uniform(api.watch_early_end, 1.0),
        )
        expiry, last, initial = self._watch_start(watch, query.get("resourceVersion", ""))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for kind, obj in initial:
            self._send_event(kind, obj)
        if not (initial and initial[-1][0] == "ERROR"):
            self._stream(watch, expiry, last)
        self._end_chunks()

    def _watch_start(self, watch: _Watch, rv_param: str) -> tuple[int, int, list[tuple[str, Obj]]]:
        """Where the watch starts: the store's expiry count, the resourceVersion it has seen to and
        the events it sends first (ADDED for each object now, when it starts at most recent)."""
        api, store = self.server.api, self.server.api.store
        with store.cond:
            if rv_param in ("", "0"):
                # "Start at most recent": synthetic ADDED for what exists now.
                items, last = store.list(watch.resource, watch.ns, watch.labels, watch.fields)
                return store.expiry, last, [("ADDED", o) for o in items]
            last = _number("resourceVersion", rv_param, int)
            if last > store.rv - api.watch_cache_lag:
                raise too_large(last, store.rv - api.watch_cache_lag)
            if last < store.oldest_rv:
                gone = status_obj(410, "Expired", _too_old(last, store.oldest_rv))
                if api.rng.random() < 0.5:
                    raise ApiError(410, "Expired", gone["message"])
                return store.expiry, last, [("ERROR", gone)]
            return store.expiry, last, []

    def _stream(self, watch: _Watch, expiry: int, last: int) -> None:
        """The changes after `last` as they happen, with a BOOKMARK every bookmark_interval when
        asked, until the watch's deadline, an ERROR event or the server's shutdown."""
        api, store = self.server.api, self.server.api.store
        next_bookmark = time.monotonic() + api.bookmark_interval
        while not api.closing:
            with store.cond:
                pending, last = _changes(store, watch, expiry, last)
                left = watch.deadline - time.monotonic()
                if not pending and left > 0 and time.monotonic() < next_bookmark:
                    store.cond.wait(min(left, max(0.01, next_bookmark - time.monotonic())))
                    continue
            for kind, obj in pending:
                self._send_event(kind, obj)
            if pending and pending[-1][0] == "ERROR":
                break
            if time.monotonic() >= watch.deadline:
                break
            if watch.bookmarks and time.monotonic() >= next_bookmark:
                _, _, kind = RESOURCES[watch.resource]
                bookmark = {
                    "kind": kind,
                    "apiVersion": _api_version(watch.resource),
                    "metadata": {"resourceVersion": str(last)},
                }
                self._send_event("BOOKMARK", bookmark)
            if time.monotonic() >= next_bookmark:
                next_bookmark = time.monotonic() + api.bookmark_interval

    def _send_event(self, kind: str, obj: Obj) -> None:
        data = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: FakeApiServer
