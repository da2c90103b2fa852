"""Events as the job-controller and the kubelet record them about their objects."""

from __future__ import annotations

import uuid

from .resources import NODE, Obj, now_iso
from .store import Store


def record(
    store: Store, ns: str, obj: Obj, kind: str, reason: str, message: str, typ: str = "Normal"
) -> None:
    """An Event about `obj` (a Job's from the job-controller, a Pod's from the kubelet)."""
    meta = obj["metadata"]
    ts = now_iso()
    store.create(
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
