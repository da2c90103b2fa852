"""The Kubernetes runner's capacity, in tasks (pods): the namespace's ResourceQuotas as the watch
holds them, and the tasks of ours a quota cannot count yet (scheduler/admission/capacity.py does
the arithmetic).

`capture` runs on the event loop, where the runner's states change, and returns an immutable
`KubeView`; the dispatcher's worker thread computes the snapshot from that view alone."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from scheduler.admission.capacity import JobShape, Pool, Snapshot, kube_snapshot
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


@dataclass(frozen=True)
class KubeView:
    """What the runner holds, as `capture` found it on the loop. The quotas are the watch's
    objects, which it replaces on each event and never changes in place."""

    quotas_listed: bool
    quotas: tuple[Any, ...]
    held: int  # Jobs of ours holding a slot, capped at KUBE_MAX_ACTIVE_JOBS
    uncounted: tuple[tuple[DeviceClass, int], ...]
    shape: JobShape
    max_active_jobs: int
    gpu_capacity: int

    def snapshot(self, in_use: Mapping[DeviceClass, int]) -> Snapshot:
        """What the quotas leave free, capped by KUBE_MAX_ACTIVE_JOBS; KUBE_GPU_CAPACITY where no
        quota bounds GPUs. `in_use`: admitted jobs in the DB; `held` may count some the DB does
        not yet. Before the quota watch has listed, nothing fits and nothing is refused."""
        if not self.quotas_listed:
            return Snapshot({"watch": NOT_LISTED}, {c: {"watch": Decimal(1)} for c in ("cpu", "gpu")})
        counted = dict(in_use)
        counted["cpu"] = counted.get("cpu", 0) + max(0, self.held - sum(in_use.values()))  # class unknown
        return kube_snapshot(
            self.quotas, shape=self.shape, in_use=counted, uncounted=dict(self.uncounted),
            max_active_jobs=self.max_active_jobs, gpu_capacity=self.gpu_capacity,
        )


def capture(settings: Settings, watches: Watches, *, held: int, states: Mapping[str, JobState],
            placements: Mapping[str, DeviceClass]) -> KubeView:
    """On the event loop: the view the dispatcher's thread plans with."""
    return KubeView(
        quotas_listed=watches.quotas_listed(),
        quotas=tuple(watches.quotas()),
        held=held,
        uncounted=tuple(sorted(uncounted(states, placements, watches).items())),
        shape=objects.job_shape(settings),
        max_active_jobs=settings.kube_max_active_jobs,
        gpu_capacity=settings.kube_gpu_capacity,
    )
