"""The reflector's per-event handler, driven by canned watch events (kopf-style)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k

from scheduler.runners.kubernetes import errors
from scheduler.runners.kubernetes.reflector import Reflector


def job(name: str, rv: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv, "uid": "u-" + name},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
    }


ADDED = {"type": "ADDED", "object": job("a", "11")}
MODIFIED = {"type": "MODIFIED", "object": job("a", "12")}
DELETED = {"type": "DELETED", "object": job("a", "13")}
BOOKMARK = {
    "type": "BOOKMARK",
    "object": {"kind": "Job", "apiVersion": "batch/v1", "metadata": {"resourceVersion": "20"}},
}
ERROR_410 = {
    "type": "ERROR",
    "object": {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "too old resource version: 5 (20)",
        "reason": "Expired",
        "code": 410,
    },
}
ERROR_500 = {
    "type": "ERROR",
    "object": {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "etcdserver: request timed out",
        "reason": "InternalError",
        "code": 500,
    },
}
UNKNOWN = {"type": "SURPRISE", "object": {}}


class FakeList:
    """Stands in for list_namespaced_job in relist() (the double covers the HTTP side)."""

    def __init__(self, *names: str, rv: str = "30") -> None:
        self.result = k.V1JobList(
            metadata=k.V1ListMeta(resource_version=rv),
            items=[k.V1Job.from_dict(job(n, rv)) for n in names],
        )
        self.calls: list[dict[str, Any]] = []

    def __call__(self, namespace: str, **kwargs: Any) -> k.V1JobList:
        self.calls.append(kwargs)
        return self.result


def reflector(list_fn: Any = None) -> tuple[Reflector, list[tuple[str, str, str]]]:
    seen: list[tuple[str, str, str]] = []
    r = Reflector(
        "jobs",
        list_fn or FakeList(),
        k.V1Job,
        lambda kind, obj: seen.append((kind, obj.metadata.name, obj.metadata.resource_version)),
        namespace="ns",
        label_selector="a=b",
        request_timeout=1.0,
        watch_timeout=5,
    )
    return r, seen


def test_events_update_cache_and_resource_version() -> None:
    r, seen = reflector()
    r.handle(ADDED)
    assert r.cache["a"].metadata.resource_version == "11" and r.resource_version == "11"
    r.handle(MODIFIED)
    r.handle(BOOKMARK)
    assert r.resource_version == "20"
    r.handle(DELETED)
    assert "a" not in r.cache and r.resource_version == "13"
    assert seen == [("ADDED", "a", "11"), ("MODIFIED", "a", "12"), ("DELETED", "a", "13")]


def test_410_means_relist() -> None:
    r, _ = reflector()
    with pytest.raises(errors.Gone, match="too old resource version"):
        r.handle(ERROR_410)


def test_other_error_events_raise_the_mapped_error() -> None:
    r, _ = reflector()
    with pytest.raises(errors.ServerError, match="HTTP 500"):
        r.handle(ERROR_500)


def test_unknown_event_types_are_skipped() -> None:
    r, seen = reflector()
    r.handle(UNKNOWN)
    assert seen == [] and r.cache == {}


def test_relist_reconciles_the_cache() -> None:
    r, seen = reflector(FakeList("b", "c", rv="30"))
    r.handle(ADDED)  # "a" was known; the list no longer has it
    r.handle({"type": "ADDED", "object": job("b", "30")})  # unchanged: no event
    seen.clear()
    r.relist()
    assert sorted(seen) == [("ADDED", "c", "30"), ("DELETED", "a", "11")]
    assert r.resource_version == "30" and r.synced.is_set() and r.healthy
    assert r.list_fn.calls == [{"label_selector": "a=b", "_request_timeout": 1.0}]


def labelled(name: str, rv: str, job_id: str) -> dict[str, Any]:
    obj = job(name, rv)
    obj["metadata"]["labels"] = {"fractal-scheduler/job-id": job_id}
    return obj


def test_a_deleted_object_stays_readable_as_a_tombstone_until_its_name_returns() -> None:
    r, _ = reflector()
    r.handle({"type": "ADDED", "object": labelled("a", "11", "j1")})
    r.handle({"type": "ADDED", "object": labelled("b", "12", "j2")})
    r.handle({"type": "DELETED", "object": labelled("a", "13", "j1")})  # no deletionTimestamp sent
    tomb = r.get("a")
    assert "a" not in r.cache and tomb.metadata.resource_version == "13"
    assert tomb.metadata.deletion_timestamp is not None  # readers see it was deleted
    assert [o.metadata.name for o in r.select("fractal-scheduler/job-id", "j1")] == ["a"]
    r.handle({"type": "ADDED", "object": labelled("a", "14", "j1")})  # the name is used again
    assert r.get("a").metadata.deletion_timestamp is None and r.tombstones == {}


def test_a_relist_buries_what_it_no_longer_lists() -> None:
    r, seen = reflector(FakeList("b", rv="30"))
    r.handle(ADDED)
    r.relist()
    assert r.get("a").metadata.deletion_timestamp is not None and ("DELETED", "a", "11") in seen
