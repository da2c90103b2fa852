"""A watch-fed cache of one kind of object (kubespawner's reflector, kopf's error handling).

The loop: list -> reconcile the cache (synthetic events for what changed) -> watch from the
list's resourceVersion with bookmarks -> on a normal end (server timeout) watch again from the
last resourceVersion -> on 410 Gone relist at once -> on any other error relist with backoff.
`Watch.stream` is not used: it retries a 410 once, never with `timeout_seconds`, and ends
silently without a resourceVersion.
https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes

The client is synchronous, so the loop runs in its own thread; `handle()` (one event in, the
cache updated, the callback told) is what the tests drive with canned events. The cache is the
only copy of what the watch saw: readers on other threads use `get` and `select`, under a lock.
A deleted object's last state stays readable as a tombstone (client-go's
DeletedFinalStateUnknown does the same), marked with a deletionTimestamp, until the bounded
tombstone list drops it or the name is used again.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import urllib3

from job_image.backoff import Backoff
from scheduler.runners.kubernetes import errors

log = logging.getLogger(__name__)

# on_event(type, object): "ADDED" | "MODIFIED" | "DELETED", called on the reflector's thread.
EventCallback = Callable[[str, Any], None]
FIRST_RETRY_SECONDS = 0.4
TOMBSTONES = 1024  # deleted objects whose last state stays readable (a few minutes of deletions)


class Reflector:
    """List + watch one namespaced collection by label selector, keeping a cache by name."""

    def __init__(
        self,
        kind: str,
        list_fn: Callable[..., Any],
        model: type,
        on_event: EventCallback,
        *,
        namespace: str,
        label_selector: str,
        request_timeout: float,
        watch_timeout: int,
        backoff_max: float = 30.0,
        on_sync: Callable[[], None] | None = None,
    ) -> None:
        self.kind = kind
        self.list_fn = list_fn
        self.model = model
        self.namespace = namespace
        self.label_selector = label_selector
        self.on_event = on_event
        self.on_sync = on_sync
        self.request_timeout = request_timeout
        self.watch_timeout = watch_timeout
        self.backoff_max = backoff_max
        self.cache: dict[str, Any] = {}  # name -> the object as last seen (live ones)
        self.tombstones: OrderedDict[str, Any] = OrderedDict()  # name -> last state, deleted ones
        self._lock = threading.Lock()  # the loop thread reads while this one writes
        self.resource_version: str | None = None
        self.synced = threading.Event()  # the first list has been loaded
        self.last_error: str | None = None  # None while the last call succeeded
        self._backoff = Backoff(FIRST_RETRY_SECONDS, backoff_max)
        self._stop = threading.Event()
        self._resp: urllib3.BaseHTTPResponse | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"reflector-{self.kind}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """End the loop and unblock a watch read by shutting its socket down."""
        self._stop.set()
        resp = self._resp
        if resp is not None:
            try:
                resp.shutdown()  # urllib3 >= 2.3: unblocks a read in another thread
            except Exception:  # noqa: BLE001 - best effort; the read timeout bounds it anyway
                log.debug("%s watch: shutdown failed", self.kind, exc_info=True)
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def healthy(self) -> bool:
        return self.synced.is_set() and self.last_error is None

    # --- reading the cache (any thread) --------------------------------------------------------

    def get(self, name: str) -> Any | None:
        """The object as last seen, or its tombstone once deleted; None when never seen."""
        with self._lock:
            return self.cache.get(name) or self.tombstones.get(name)

    def live(self) -> list[Any]:
        """Every object as last seen, deleted ones left out."""
        with self._lock:
            return list(self.cache.values())

    def select(self, label: str, value: str) -> list[Any]:
        """Objects (tombstones too) whose label `label` is `value`."""
        with self._lock:
            return [
                obj
                for obj in itertools.chain(self.cache.values(), self.tombstones.values())
                if (obj.metadata.labels or {}).get(label) == value
            ]

    def _keep(self, obj: Any) -> None:
        with self._lock:
            self.tombstones.pop(obj.metadata.name, None)
            self.cache[obj.metadata.name] = obj

    def _bury(self, obj: Any) -> None:
        """Move a deleted object to the tombstones, marked deleted however the API sent it."""
        if obj.metadata.deletion_timestamp is None:
            obj.metadata.deletion_timestamp = datetime.now(UTC)
        with self._lock:
            self.cache.pop(obj.metadata.name, None)
            self.tombstones[obj.metadata.name] = obj
            while len(self.tombstones) > TOMBSTONES:
                self.tombstones.popitem(last=False)

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.resource_version is None:
                    self.relist()
                self.watch()
                self._backoff.reset()
            except errors.Gone:
                # Expected: the watch cache moved on. Relist at once; back off only if it repeats.
                log.info("%s watch: resourceVersion %s expired; relisting", self.kind, self.resource_version)
                self.resource_version = None
                delay = self._backoff.next()
                if self._backoff.failures > 1:
                    self._stop.wait(delay)
            except errors.KubeError as exc:
                if self._stop.is_set():
                    break
                self.last_error = str(exc)
                self.resource_version = None
                delay = self._backoff.next()
                log.warning("%s watch: %s; relisting in %.1f s", self.kind, exc, delay)
                self._stop.wait(delay)
            except Exception:  # a bug must not end tracking silently: log, back off, go on
                self.resource_version = None
                log.exception("%s watch: unexpected error", self.kind)
                self._stop.wait(self._backoff.next())

    def relist(self) -> None:
        """List, replace the cache, and tell the callback what changed since the last cache."""
        result = errors.call(
            self.list_fn,
            self.namespace,
            label_selector=self.label_selector,
            _request_timeout=self.request_timeout,
        )
        fresh = {obj.metadata.name: obj for obj in result.items or []}
        with self._lock:
            old = dict(self.cache)
        self.resource_version = result.metadata.resource_version
        self.last_error = None
        for name, obj in old.items():
            if name not in fresh:
                self._bury(obj)
                self.on_event("DELETED", obj)
        for name, obj in fresh.items():
            before = old.get(name)
            self._keep(obj)
            if before is None:
                self.on_event("ADDED", obj)
            elif before.metadata.resource_version != obj.metadata.resource_version:
                self.on_event("MODIFIED", obj)
        if not self.synced.is_set():
            self.synced.set()
        if self.on_sync is not None:
            self.on_sync()

    def watch(self) -> None:
        """One watch request, from the current resourceVersion until the server ends it."""
        resp = errors.call(
            self.list_fn,
            self.namespace,
            label_selector=self.label_selector,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            watch=True,
            timeout_seconds=self.watch_timeout,
            _preload_content=False,
            # (connect, read): the server ends the watch after timeout_seconds; the read
            # timeout only catches a server that went silent without closing.
            _request_timeout=(self.request_timeout, self.watch_timeout + self.request_timeout),
        )
        self._resp = resp
        self.last_error = None
        try:
            if self._stop.is_set():
                return
            for line in _lines(resp):
                if self._stop.is_set():
                    return
                if line.strip():
                    self.handle(json.loads(line))
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if self._stop.is_set():
                return
            raise errors.translate(exc) from exc
        finally:
            self._resp = None
            resp.release_conn()

    # --- one event ---------------------------------------------------------------------------

    def handle(self, event: dict[str, Any]) -> None:
        """Apply one watch event to the cache; raise Gone (relist) or KubeError on ERROR."""
        kind, raw = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            # The object is a Status; 410 means "relist", anything else is an error too.
            code = int(raw.get("code") or 500)
            raise errors.from_status(code, raw.get("message", ""), raw.get("reason", ""))
        if kind == "BOOKMARK":
            # Only metadata.resourceVersion is meaningful in a bookmark.
            # https://kubernetes.io/docs/reference/using-api/api-concepts/#watch-bookmarks
            self.resource_version = raw.get("metadata", {}).get("resourceVersion", self.resource_version)
            return
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            log.warning("%s watch: unknown event type %r skipped", self.kind, kind)
            return
        obj = self.model.from_dict(raw)
        rv = obj.metadata.resource_version
        if kind == "DELETED":
            self._bury(obj)
        else:
            self._keep(obj)
        if rv:
            self.resource_version = rv
        self.on_event(kind, obj)


def _lines(resp: urllib3.BaseHTTPResponse):
    """Newline-delimited JSON from a chunked response, however the chunks fall."""
    buffer = b""
    for chunk in resp.stream(amt=None, decode_content=False):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line.decode("utf-8", errors="replace")
    if buffer.strip():
        yield buffer.decode("utf-8", errors="replace")
