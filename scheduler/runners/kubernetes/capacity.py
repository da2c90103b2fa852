"""The Kubernetes runner's capacity snapshot, in tasks (pods): the namespace's ResourceQuotas as
the watch holds them, and the tasks of ours a quota cannot count yet
(scheduler/admission/capacity.py does the arithmetic). Called from the dispatcher's worker
thread: it only reads copies."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from scheduler.admission.capacity import Pool, Snapshot, kube_snapshot
from scheduler.admission.throughput import DeviceClass
from scheduler.core.config import Settings
from scheduler.runners.kubernetes import objects, reasons, tracking
from scheduler.runners.kubernetes.tracking import JobState
from scheduler.runners.kubernetes.watches import Watches

NOT_LISTED = Pool("the ResourceQuota watch has not listed yet", Decimal(1), Decimal(1))


def uncounted(
    states: Mapping[str, JobState], placements: Mapping[str, DeviceClass], watches: Watches
) -> dict[DeviceClass, int]:
    """Tasks holding a slot here that have no pod yet: a quota's `used` cannot count them
    (quota admission counts a pod when it is created)."""
    out: dict[DeviceClass, int] = {}
    for job_id, state in states.items():
        live = sum(p.metadata.deletion_timestamp is None and reasons.terminated(p) is None
                   for p in watches.pods(job_id))
        waiting = max(0, tracking.slots_held(state) - live)
        if waiting:
            placement = placements.get(job_id, "cpu")
            out[placement] = out.get(placement, 0) + waiting
    return out


def snapshot(settings: Settings, watches: Watches, *, in_use: Mapping[DeviceClass, int], held: int,
             states: Mapping[str, JobState], placements: Mapping[str, DeviceClass]) -> Snapshot:
    """What the quotas leave free, capped by KUBE_MAX_ACTIVE_JOBS; KUBE_GPU_CAPACITY where no
    quota bounds GPUs. `in_use`: admitted jobs in the DB; `held`: Jobs this runner holds (it
    may know of some the DB does not count yet). Before the quota watch has listed, nothing
    fits and nothing is refused."""
    if not watches.quotas_listed():
        return Snapshot({"watch": NOT_LISTED}, {c: {"watch": Decimal(1)} for c in ("cpu", "gpu")})
    counted = dict(in_use)
    counted["cpu"] = counted.get("cpu", 0) + max(0, held - sum(in_use.values()))  # class unknown here
    return kube_snapshot(
        watches.quotas(), shape=objects.job_shape(settings), in_use=counted,
        uncounted=uncounted(states, placements, watches), max_active_jobs=settings.kube_max_active_jobs,
        gpu_capacity=settings.kube_gpu_capacity,
    )
