"""ResourceQuota as a cluster enforces it: what a pod counts against a quota (its requests,
limits and one pod; only when all of the quota's scopes match it), the admission plugin's
refusal of a pod over a `hard`, and the quota controller that keeps `status.used` current.
https://kubernetes.io/docs/concepts/policy/resource-quotas/"""

from __future__ import annotations

import random
import string
import time
from collections import Counter
from decimal import Decimal
from typing import TYPE_CHECKING

from kubernetes.utils import parse_quantity

from .resources import Obj

if TYPE_CHECKING:
    from .server import FakeApiServer


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


class Quotas:
    """The quota admission of our Jobs' pods and the quota controller, over the double's store."""

    def __init__(self, api: FakeApiServer) -> None:
        self.api = api
        self.store = api.store

    def refusal(self, ns: str, job: Obj) -> str:
        """The quota admission's refusal of the Job's next pod, as the Job controller's
        FailedCreate event words it; "" when the pod may be created."""
        quota_refusal = self._quota_refusal(ns, job)
        if quota_refusal or self.api.pod_quota is None:
            return quota_refusal
        used = sum(
            1
            for p in self.store.list("pods", ns)[0]
            if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
        )
        if used < self.api.pod_quota:
            return ""
        pod = job["metadata"]["name"] + "-" + "".join(random.choices(string.ascii_lowercase, k=5))
        return (
            f'Error creating: pods "{pod}" is forbidden: exceeded quota: fractal-quota, '
            f"requested: pods=1, used: pods={used}, limited: pods={self.api.pod_quota}"
        )

    def used(self, ns: str, quota: Obj) -> Counter[str]:
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
            used = self.used(ns, quota)
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

    def control(self) -> None:
        """Keeps each quota's status (hard, used) current, as the quota controller does."""
        while not self.api.closing:
            for quota in self.store.list("resourcequotas", self.api.namespace)[0]:
                used = self.used(self.api.namespace, quota)
                hard = quota.get("spec", {}).get("hard") or {}
                status = {"hard": dict(hard), "used": {r: _quantity(used[r]) for r in hard}}
                if quota.get("status") != status:
                    self.store.update("resourcequotas", self.api.namespace, quota["metadata"]["name"],
                                      lambda q, st=status: q.update(status=st))
            time.sleep(self.api.tick * 5)
