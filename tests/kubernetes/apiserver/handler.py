"""The HTTP side: routing a request to a verb on a resource (authorised through RBAC first), lists
with their resourceVersion, watch streams as chunked JSON lines, and every error as a Status."""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import re
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .resources import RESOURCES, ApiError, Obj, status_obj, too_large
from .selectors import field_match, field_terms, label_match, label_terms

if TYPE_CHECKING:
    from .server import FakeApiServer

log = logging.getLogger(__name__)

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
            user = api.rbac.authenticate(self.headers.get("Authorization", ""))
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
                self._send_json(201, api.rbac.access_review(user, body))
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
            api.rbac.authorize(user, group, full, verb, ns, name)
            if verb in ("list", "watch"):  # bad selectors are refused before anything is sent
                label_terms(query.get("labelSelector", ""))
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
