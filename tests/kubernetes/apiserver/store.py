"""The versioned object store: objects by (resource, namespace, name), one resourceVersion
counter, and the history of ADDED/MODIFIED/DELETED events that watches replay (forgotten on
expire(), as etcd compaction does)."""

from __future__ import annotations

import copy
import random
import re
import string
import threading
import uuid
from collections.abc import Callable

from .resources import RESOURCES, ApiError, Obj, now_iso, object_error
from .selectors import field_match, label_match


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
                raise object_error(409, "AlreadyExists", resource, name, "already exists")
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
