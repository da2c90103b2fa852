"""The capacity snapshot: local devices, and ResourceQuota arithmetic as a pure function."""

from __future__ import annotations

import pytest
from kubernetes import client as k

from scheduler.admission.capacity import JobShape, counts_our_pods, kube_snapshot, local_snapshot

SHAPE = JobShape(cpu_request="500m", cpu_limit="2", memory_request="256Mi", memory_limit="1Gi",
                 gpu_resource="nvidia.com/gpu")


def quota(name: str, hard: dict[str, str], used: dict[str, str], scopes: list[str] | None = None,
          selector: list[tuple[str, str, list[str] | None]] = ()) -> k.V1ResourceQuota:
    expressions = [k.V1ScopedResourceSelectorRequirement(scope_name=n, operator=op, values=v)
                   for n, op, v in selector]
    scope_selector = k.V1ScopeSelector(match_expressions=expressions) if selector else None
    spec = k.V1ResourceQuotaSpec(hard=hard, scopes=scopes, scope_selector=scope_selector)
    return k.V1ResourceQuota(metadata=k.V1ObjectMeta(name=name), spec=spec,
                             status=k.V1ResourceQuotaStatus(hard=hard, used=used))


def snapshot(quotas: list[k.V1ResourceQuota], in_use: dict | None = None, uncounted: dict | None = None,
             max_active: int = 100, gpu_capacity: int = 0):
    return kube_snapshot(quotas, shape=SHAPE, in_use=in_use or {}, uncounted=uncounted or {},
                         max_active_jobs=max_active, gpu_capacity=gpu_capacity)


def test_local_classes_are_separate() -> None:
    snap = local_snapshot(max_concurrent=2, gpus=1, in_use={"cpu": 1})
    assert (snap.free_jobs("cpu"), snap.free_jobs("gpu")) == (1, 1)
    assert snap.take("gpu") and not snap.take("gpu")
    assert snap.free_jobs("cpu") == 1
    assert snap.reason("gpu") == "1 of 1 in use"


def test_local_without_gpu_has_no_gpu_class() -> None:
    snap = local_snapshot(max_concurrent=2, gpus=0, in_use={})
    assert snap.exists("cpu") and not snap.exists("gpu")


def test_gpu_quota_bounds_gpu_jobs() -> None:
    q = quota("compute", {"requests.nvidia.com/gpu": "2", "requests.cpu": "8"},
              {"requests.nvidia.com/gpu": "1", "requests.cpu": "1"})
    snap = snapshot([q], in_use={"gpu": 1})
    assert snap.exists("gpu") and snap.free_jobs("gpu") == 1
    assert snap.free_jobs("cpu") == 14  # (8 - 1) / 0.5
    assert snap.take("gpu")
    assert snap.free_jobs("gpu") == 0 and snap.free_jobs("cpu") == 13  # the GPU job's CPU is booked too
    assert snap.reason("gpu") == "2 of 2 in use (requests.nvidia.com/gpu of ResourceQuota compute)"


def test_tightest_resource_decides_across_quotas() -> None:
    quotas = [
        quota("a", {"limits.memory": "4Gi", "services": "3"}, {"limits.memory": "2Gi", "services": "3"}),
        quota("b", {"count/pods": "10", "count/jobs.batch": "5"},
              {"count/pods": "1", "count/jobs.batch": "4"}),
    ]
    snap = snapshot(quotas)
    assert snap.free_jobs("cpu") == 1  # jobs.batch: 5 - 4; memory would allow 2; services ignored
    assert snap.take("cpu") and not snap.take("cpu")
    assert snap.reason("cpu") == "5 of 5 in use (count/jobs.batch of ResourceQuota b)"


def test_uncounted_jobs_are_booked() -> None:
    """Jobs we admitted that the quota does not count yet still take their room."""
    q = quota("compute", {"requests.memory": "1Gi"}, {"requests.memory": "0"})
    assert snapshot([q]).free_jobs("cpu") == 4
    assert snapshot([q], uncounted={"cpu": 3}).free_jobs("cpu") == 1


def test_without_quota_settings_decide() -> None:
    snap = snapshot([], in_use={"cpu": 2}, max_active=3)
    assert snap.free_jobs("cpu") == 1
    assert not snap.exists("gpu")  # no quota names GPUs and the GPU capacity setting is 0
    with_gpus = snapshot([], in_use={"gpu": 1}, max_active=10, gpu_capacity=2)
    assert with_gpus.exists("gpu") and with_gpus.free_jobs("gpu") == 1
    assert snapshot([], in_use={"cpu": 9, "gpu": 1}, max_active=10, gpu_capacity=2).free_jobs("gpu") == 0


def test_quota_fractions_report_units() -> None:
    q = quota("compute", {"requests.cpu": "1"}, {"requests.cpu": "750m"})
    snap = snapshot([q])
    assert snap.free_jobs("cpu") == 0
    assert snap.reason("cpu") == "0.75 of 1 used (requests.cpu of ResourceQuota compute), a job needs 0.5"


@pytest.mark.parametrize(("scopes", "selector", "counts"), [
    (None, [], True),
    (["NotTerminating", "NotBestEffort"], [], True),  # the Job, not its pod, has the deadline
    (["Terminating"], [], False),
    (["BestEffort"], [], False),  # our pods request CPU and memory
    (None, [("PriorityClass", "In", ["batch-high"])], False),  # our pods name no PriorityClass
    (None, [("PriorityClass", "NotIn", ["batch-high"])], True),
    (None, [("PriorityClass", "Exists", None)], False),
    (None, [("PriorityClass", "DoesNotExist", None)], True),
    (["NotBestEffort"], [("PriorityClass", "In", ["batch-high"])], False),  # every scope must match
    (None, [("CrossNamespacePodAffinity", "Exists", None)], False),
])
def test_a_quota_counts_our_pods_when_all_its_scopes_match(scopes, selector, counts) -> None:
    assert counts_our_pods(quota("q", {"pods": "0"}, {"pods": "0"}, scopes, selector), SHAPE) is counts


def test_a_quota_scoped_away_from_our_pods_bounds_nothing() -> None:
    """A full quota for BestEffort pods, or for another PriorityClass, leaves our jobs' room alone."""
    quotas = [quota("best-effort", {"pods": "0"}, {"pods": "0"}, scopes=["BestEffort"]),
              quota("high", {"requests.nvidia.com/gpu": "0"}, {"requests.nvidia.com/gpu": "0"},
                    selector=[("PriorityClass", "In", ["batch-high"])]),
              quota("ours", {"pods": "3"}, {"pods": "1"}, scopes=["NotBestEffort"])]
    snap = snapshot(quotas, gpu_capacity=1)
    assert snap.free_jobs("cpu") == 2
    assert snap.free_jobs("gpu") == 1  # no quota that counts our pods bounds GPUs: the setting does
