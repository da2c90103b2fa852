"""The capacity snapshot: what each device class may still take, taken once per admission cycle.

Capacity is a set of pools (GPUs, CPU slots, each resource a ResourceQuota bounds, the active-Job
cap), and each class demands some amount of some pools per job. A job of a class fits when every
pool it draws on has room for one more; `take` books it, so jobs admitted in one cycle share
the pools the two classes have in common (a quota's CPU, memory and pod count). The pool that
stops a class is kept as the reason shown to the waiting jobs.

Building a snapshot is pure: the local runner's from its settings and the GPUs OpenCL found,
Kubernetes's from the namespace's ResourceQuota objects as the reflector holds them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

from scheduler.admission.throughput import CLASSES, DeviceClass

NOUN: dict[DeviceClass, str] = {"cpu": "a CPU slot", "gpu": "a GPU"}


@dataclass(frozen=True)
class Pool:
    """One bounded resource: `total` units, `used` of them taken (by anyone)."""

    label: str  # how users read it, e.g. "GPUs" or "requests.memory of ResourceQuota compute"
    total: Decimal
    used: Decimal
    slots: bool = False  # counted in jobs (say "2 of 2 in use"), not in resource units

    @property
    def free(self) -> Decimal:
        return max(Decimal(0), self.total - self.used)

    def describe(self, per_job: Decimal) -> str:
        """E.g. "2 of 2 in use", or "1.5 of 2 used (requests.cpu of ResourceQuota q), a job needs 0.5"."""
        where = "" if self.slots else f" ({self.label})"
        used, total = f"{self.used.normalize():f}", f"{self.total.normalize():f}"
        if per_job == 1:
            return f"{used} of {total} in use{where}"
        return f"{used} of {total} used{where}, a job needs {per_job.normalize():f}"


@dataclass
class Snapshot:
    """Pools and what one job of each class takes from them (pool key -> amount)."""

    pools: dict[str, Pool]
    demand: dict[DeviceClass, dict[str, Decimal]]
    _booked: dict[str, Decimal] = field(default_factory=dict)

    def _pool(self, key: str) -> Pool:
        pool = self.pools[key]
        return replace(pool, used=pool.used + self._booked.get(key, Decimal(0)))

    def exists(self, c: DeviceClass) -> bool:
        """Whether the class could ever run a job here (a GPU class with no GPU cannot)."""
        return all(self.pools[k].total >= d for k, d in self.demand[c].items())

    def missing(self, c: DeviceClass) -> str:
        """What makes class `c` impossible here, e.g. "LOCAL_GPUS ... is 0"."""
        short = [self.pools[k] for k, d in self.demand[c].items() if self.pools[k].total < d]
        return "; ".join(f"{p.label} is {p.total.normalize():f}" for p in short) or "nothing"

    def free_jobs(self, c: DeviceClass) -> int:
        """How many more jobs of class `c` fit now, counting what this cycle has booked."""
        return min((int(self._pool(k).free // d) for k, d in self.demand[c].items() if d > 0), default=0)

    def slots(self, c: DeviceClass, in_use: int) -> int:
        """Jobs of `c` that could run at once: ours now plus what still fits."""
        return in_use + self.free_jobs(c)

    def take(self, c: DeviceClass) -> bool:
        """Book one job of class `c` if it fits."""
        if self.free_jobs(c) < 1:
            return False
        for k, d in self.demand[c].items():
            self._booked[k] = self._booked.get(k, Decimal(0)) + d
        return True

    def reason(self, c: DeviceClass) -> str:
        """Why class `c` has no room: the tightest pool, as a sentence fragment."""
        if not self.demand[c]:
            return "no capacity is configured"
        key = min(self.demand[c], key=lambda k: self._pool(k).free / self.demand[c][k])
        return self._pool(key).describe(self.demand[c][key])


def local_snapshot(*, max_concurrent: int, gpus: int, in_use: Mapping[DeviceClass, int]) -> Snapshot:
    """Local runner: `LOCAL_MAX_CONCURRENT` CPU processes and one job per OpenCL GPU found."""
    pools = {
        "cpu": Pool("LOCAL_MAX_CONCURRENT", Decimal(max_concurrent), Decimal(in_use.get("cpu", 0)),
                    slots=True),
        "gpu": Pool("LOCAL_GPUS (default: the OpenCL GPU devices found)", Decimal(gpus),
                    Decimal(in_use.get("gpu", 0)), slots=True),
    }
    return Snapshot(pools, {"cpu": {"cpu": Decimal(1)}, "gpu": {"gpu": Decimal(1)}})


@dataclass(frozen=True)
class JobShape:
    """What one Job's pod asks for (the runner's requests and limits, from settings)."""

    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    gpu_resource: str  # e.g. nvidia.com/gpu

    @property
    def best_effort(self) -> bool:
        """QoS BestEffort: no CPU or memory requests or limits at all."""
        return not any((self.cpu_request, self.cpu_limit, self.memory_request, self.memory_limit))

    def demand(self, c: DeviceClass) -> dict[str, Decimal]:
        """ResourceQuota resource names -> what one pod and its Job of class `c` count against."""
        cpu, mem = parse_quantity(self.cpu_request), parse_quantity(self.memory_request)
        d = {
            "requests.cpu": cpu, "cpu": cpu, "limits.cpu": parse_quantity(self.cpu_limit),
            "requests.memory": mem, "memory": mem, "limits.memory": parse_quantity(self.memory_limit),
            "pods": Decimal(1), "count/pods": Decimal(1), "count/jobs.batch": Decimal(1),
        }
        if c == "gpu":  # extended resources are quota'd by request only
            d[f"requests.{self.gpu_resource}"] = Decimal(1)
        return d


def counts_our_pods(quota: Any, shape: JobShape) -> bool:
    """Whether a quota's scopes all match the pods our Jobs create, as quota admission decides
    (Kubernetes pkg/quota/v1/evaluator/core/pods.go): the pods set no activeDeadlineSeconds
    (the Job does: NotTerminating), no priorityClassName and no pod affinity. A quota without
    scopes counts every pod. (Where a PriorityClass is the cluster's globalDefault our pods get
    it, which this cannot see: a pod refused by such a quota waits, see runners/kubernetes.)"""
    spec = quota.spec
    if spec is None:
        return True
    selectors = [(name, "Exists") for name in spec.scopes or []]  # a listed scope: the pod has it
    if spec.scope_selector is not None:
        selectors += [(e.scope_name, e.operator) for e in spec.scope_selector.match_expressions or []]
    matches = {
        "Terminating": False, "NotTerminating": True,
        "BestEffort": shape.best_effort, "NotBestEffort": not shape.best_effort,
        "CrossNamespacePodAffinity": False,
    }
    # PriorityClass is a label selector over {PriorityClass: name}, empty for a pod without one
    without_class = {"In": False, "NotIn": True, "Exists": False, "DoesNotExist": True}
    return all(without_class.get(op, False) if name == "PriorityClass" else matches.get(name, False)
               for name, op in selectors)


def _quantities(values: Mapping[str, Any] | None) -> dict[str, Decimal]:
    return {k: parse_quantity(v) for k, v in (values or {}).items()}


def kube_snapshot(
    quotas: Iterable[Any],
    *,
    shape: JobShape,
    in_use: Mapping[DeviceClass, int],
    uncounted: Mapping[DeviceClass, int],
    max_active_jobs: int,
    gpu_capacity: int,
) -> Snapshot:
    """Kubernetes runner: what the namespace's ResourceQuotas leave free, capped by KUBE_MAX_ACTIVE_JOBS.

    `quotas` are V1ResourceQuota objects; `hard - used` of each resource a job counts against
    becomes a pool. `uncounted` are our admitted jobs the quota's `used` does not show yet (the
    pod is not created, or the watch lags): their demand is added so a cycle never spends the
    same room twice. Where no quota bounds `requests.<gpu>`, `gpu_capacity` (a setting,
    default 0: no GPU) does. A quota whose scopes do not match our pods (e.g. BestEffort, or a
    PriorityClass our pods do not have) bounds nothing here.
    https://kubernetes.io/docs/concepts/policy/resource-quotas/
    """
    demand = {c: shape.demand(c) for c in CLASSES}
    pools: dict[str, Pool] = {}
    need: dict[DeviceClass, dict[str, Decimal]] = {c: {} for c in CLASSES}
    for quota in quotas:
        if not counts_our_pods(quota, shape):
            continue
        name = quota.metadata.name
        status = quota.status
        hard, used = _quantities(status and status.hard), _quantities(status and status.used)
        for resource, limit in hard.items():
            if not any(resource in demand[c] for c in CLASSES):
                continue  # e.g. services, secrets: no job of ours counts against them
            pending = sum(demand[c].get(resource, Decimal(0)) * uncounted.get(c, 0) for c in CLASSES)
            ours = sum(demand[c].get(resource, Decimal(0)) * in_use.get(c, 0) for c in CLASSES)
            key = f"{name}/{resource}"
            # never less than our own admitted jobs take: the Pod watch can show a new pod before
            # the ResourceQuota watch shows it counted, and that room must not be spent twice
            taken = max(used.get(resource, Decimal(0)) + pending, ours)
            pools[key] = Pool(f"{resource} of ResourceQuota {name}", limit, taken)
            for c in CLASSES:
                if resource in demand[c]:
                    need[c][key] = demand[c][resource]
    active = sum(in_use.values())
    pools["active"] = Pool("KUBE_MAX_ACTIVE_JOBS", Decimal(max_active_jobs), Decimal(active), slots=True)
    gpu_quota = f"requests.{shape.gpu_resource}"
    if not any(key.endswith("/" + gpu_quota) for key in need["gpu"]):
        label = f"KUBE_GPU_CAPACITY (no ResourceQuota bounds {gpu_quota})"
        pools["gpu"] = Pool(label, Decimal(gpu_capacity), Decimal(in_use.get("gpu", 0)), slots=True)
        need["gpu"]["gpu"] = Decimal(1)
    for c in CLASSES:
        need[c]["active"] = Decimal(1)
    return Snapshot(pools, need)
