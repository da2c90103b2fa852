"""The API server double fails the way a real cluster fails (checked through the real client):
graceful deletion, the Job controller's condition order, 410 and 504, selectors, RBAC."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client as k
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from scheduler.runners.kubernetes import errors
from scheduler.runners.kubernetes.reflector import Reflector
from tests.kubernetes.apiserver import FakeApiServer
from tests.kubernetes.conftest import STANDIN

Obj = dict[str, Any]


@pytest.fixture
def admin(apiserver: FakeApiServer, tmp_path: Path) -> Iterator[k.ApiClient]:
    token = next(t for t, user in apiserver.tokens.items() if user == "admin")
    api = kube_config.new_client_from_config(str(apiserver.write_kubeconfig(tmp_path / "admin", token)))
    yield api
    api.close()


@pytest.fixture
def service_account(apiserver: FakeApiServer, kubeconfig: Path) -> Iterator[k.ApiClient]:
    api = kube_config.new_client_from_config(str(kubeconfig))
    yield api
    api.close()


def poll(what: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"not reached within {timeout} s")


def start_job(apiserver: FakeApiServer, mode: str, **spec: Any) -> str:
    """A Job running the stand-in in `mode`; "ok" exits 0 (no storage here)."""
    job_id = uuid.uuid4().hex
    ok = [sys.executable, "-c", "print('done')"]
    apiserver.commands[job_id] = ok if mode == "ok" else [sys.executable, STANDIN, mode]
    labels = {"fractal-scheduler/job-id": job_id}
    apiserver.create(
        "jobs",
        apiserver.namespace,
        {
            "metadata": {"name": f"fractal-{job_id}", "labels": labels},
            "spec": {
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "render", "image": "fractal-job:1"}],
                    },
                },
                **spec,
            },
        },
    )
    return job_id


def history(apiserver: FakeApiServer, resource: str, name: str) -> list[tuple[str, Obj]]:
    """Every watch event of one object, in order."""
    with apiserver.store.cond:
        return [
            (kind, obj)
            for _, r, _, kind, obj in apiserver.store.history
            if r == resource and obj["metadata"]["name"] == name
        ]


def conditions(obj: Obj) -> list[str]:
    return [c["type"] for c in obj["status"].get("conditions") or []]


def terminated(pod: Obj) -> Obj | None:
    for status in pod["status"].get("containerStatuses") or []:
        if "terminated" in status["state"]:
            return status["state"]["terminated"]
    return None


# --- graceful deletion --------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "exit_code"), [("sleep", 143), ("stubborn", 137)])
def test_a_deleted_job_goes_at_once_and_its_pod_terminates_gracefully(
    apiserver: FakeApiServer, admin: k.ApiClient, mode: str, exit_code: int
) -> None:
    """Background propagation: the Job is gone at once; its pod is Terminating while its PID 1
    has SIGTERM; a PID 1 without a handler ignores it and is killed after the grace period."""
    if mode == "stubborn" and not apiserver.pid_namespaces:
        pytest.skip("PID 1 semantics need a PID namespace (root and unshare)")
    apiserver.default_grace_seconds = 1
    job_id = start_job(apiserver, mode)
    pod = poll(lambda: [p for p in apiserver.pods(job_id) if p["status"].get("phase") == "Running"])[0]
    name = pod["metadata"]["name"]
    poll(lambda: b"stand-in job" in apiserver.logs.get(name, b""))  # up, its handler (if any) set
    k.BatchV1Api(admin).delete_namespaced_job(
        f"fractal-{job_id}", apiserver.namespace, propagation_policy="Background"
    )
    assert apiserver.job(job_id) is None
    poll(lambda: apiserver.store.get("pods", apiserver.namespace, name) is None)
    events = history(apiserver, "pods", name)
    kinds = [kind for kind, _ in events]
    terminating = next(i for i, (_, p) in enumerate(events) if p["metadata"].get("deletionTimestamp"))
    assert kinds[-1] == "DELETED" and terminating < len(kinds) - 1  # Terminating before it went
    assert events[terminating][1]["metadata"]["deletionGracePeriodSeconds"] == 1
    last = [p for kind, p in events if kind == "MODIFIED" and terminated(p)][-1]
    assert terminated(last)["exitCode"] == exit_code
    assert apiserver.live(job_id) == []


def test_past_its_deadline_a_job_fails_only_once_its_pod_is_gone(apiserver: FakeApiServer) -> None:
    job_id = start_job(apiserver, "sleep", activeDeadlineSeconds=1, backoffLimit=0)
    poll(lambda: "Failed" in conditions(apiserver.job(job_id) or {"status": {}}))
    job_events = history(apiserver, "jobs", f"fractal-{job_id}")
    target = next(
        obj["metadata"]["resourceVersion"] for _, obj in job_events if "FailureTarget" in conditions(obj)
    )
    failed = next(obj["metadata"]["resourceVersion"] for _, obj in job_events if "Failed" in conditions(obj))
    pod = next(name for name, _ in apiserver.logs.items() if name.startswith(f"fractal-{job_id}-"))
    gone = next(
        obj["metadata"]["resourceVersion"]
        for kind, obj in history(apiserver, "pods", pod)
        if kind == "DELETED"
    )
    assert int(target) < int(gone) < int(failed)


@pytest.mark.parametrize(
    ("mode", "target", "final"),
    [("ok", "SuccessCriteriaMet", "Complete"), ("fail", "FailureTarget", "Failed")],
)
def test_the_target_condition_comes_first_in_an_update_of_its_own(
    apiserver: FakeApiServer, mode: str, target: str, final: str
) -> None:
    job_id = start_job(apiserver, mode, backoffLimit=0)
    poll(lambda: final in conditions(apiserver.job(job_id) or {"status": {}}))
    seen = [conditions(obj) for _, obj in history(apiserver, "jobs", f"fractal-{job_id}") if conditions(obj)]
    assert seen[0] == [target] and seen[-1] == [target, final]


# --- 410 and 504 ------------------------------------------------------------------------------------------


def watch(api: k.ApiClient, resource_version: str, **params: Any) -> list[Obj]:
    """One watch request, read to its end: the events as the server sent them."""
    resp = k.CoreV1Api(api).list_namespaced_config_map(
        "fractal-test",
        watch=True,
        resource_version=resource_version,
        timeout_seconds=1,
        _preload_content=False,
        **params,
    )
    try:
        import json

        return [json.loads(line) for line in resp.read().splitlines() if line.strip()]
    finally:
        resp.release_conn()


def test_an_expired_resource_version_is_a_410_as_a_status_or_in_the_stream(
    apiserver: FakeApiServer, admin: k.ApiClient
) -> None:
    apiserver.put_config("a", {})
    old = str(apiserver.store.rv - 1)
    apiserver.expire_watches()
    apiserver.rng.random = lambda: 0.0  # type: ignore[method-assign]
    with pytest.raises(ApiException) as status:
        watch(admin, old)
    assert status.value.status == 410
    with pytest.raises(ApiException) as listed:
        k.CoreV1Api(admin).list_namespaced_config_map(
            "fractal-test", resource_version=old, resource_version_match="Exact"
        )
    assert listed.value.status == 410
    apiserver.rng.random = lambda: 0.9  # type: ignore[method-assign]
    [event] = watch(admin, old)
    assert event["type"] == "ERROR" and event["object"]["code"] == 410


def test_a_lagging_watch_cache_answers_504_too_large_resource_version(
    apiserver: FakeApiServer, admin: k.ApiClient
) -> None:
    apiserver.watch_cache_lag = 5
    with pytest.raises(ApiException) as refused:
        watch(admin, str(apiserver.store.rv))
    assert refused.value.status == 504 and "Too large resource version" in refused.value.body


def test_the_reflector_gets_over_410_504_and_early_ends(apiserver: FakeApiServer, admin: k.ApiClient) -> None:
    apiserver.watch_early_end = 0.01  # streams end almost at once, at random
    seen: list[str] = []
    reflector = Reflector(
        "configmaps",
        k.CoreV1Api(admin).list_namespaced_config_map,
        k.V1ConfigMap,
        lambda kind, obj: seen.append(f"{kind} {obj.metadata.name}"),
        namespace="fractal-test",
        label_selector="app=x",
        request_timeout=3,
        watch_timeout=2,
        backoff_max=0.2,
    )
    reflector.start()
    try:
        poll(reflector.synced.is_set)
        apiserver.watch_cache_lag = 10**6  # every watch from a version is a 504 ...
        apiserver.expire_watches()  # ... once the open one ended with a 410
        poll(lambda: "Too large resource version" in (reflector.last_error or ""))
        apiserver.watch_cache_lag = 0
        apiserver.store.create(
            "configmaps", "fractal-test", {"metadata": {"name": "b", "labels": {"app": "x"}}}
        )
        poll(lambda: reflector.get("b") is not None)
        poll(lambda: reflector.healthy)
    finally:
        reflector.stop()
    assert seen.count("ADDED b") == 1


# --- selectors --------------------------------------------------------------------------------------------


def test_set_based_label_selectors(apiserver: FakeApiServer, admin: k.ApiClient) -> None:
    for name, labels in {
        "a": {"tier": "x"},
        "b": {"tier": "y", "skip": "1"},
        "c": {"tier": "z"},
        "d": {},
    }.items():
        apiserver.store.create("configmaps", "fractal-test", {"metadata": {"name": name, "labels": labels}})

    def names(selector: str) -> list[str]:
        found = k.CoreV1Api(admin).list_namespaced_config_map("fractal-test", label_selector=selector)
        return [cm.metadata.name for cm in found.items]

    assert names("tier in (x, y)") == ["a", "b"]
    assert names("tier in (x,y),!skip") == ["a"]
    assert names("tier notin (x)") == ["b", "c", "d"]
    assert names("tier,tier!=z") == ["a", "b"]
    with pytest.raises(ApiException) as bad:
        names("tier in (x")
    assert bad.value.status == 400


def test_an_unknown_field_selector_is_a_400(apiserver: FakeApiServer, admin: k.ApiClient) -> None:
    core = k.CoreV1Api(admin)
    assert core.list_namespaced_pod("fractal-test", field_selector="status.phase=Running").items == []
    for call in (core.list_namespaced_pod, core.list_namespaced_event):
        with pytest.raises(ApiException) as bad:
            call("fractal-test", field_selector="spec.colour=red")
        assert bad.value.status == 400 and "field label not supported: spec.colour" in bad.value.body
    with pytest.raises(ApiException):  # a watch too, before any event
        core.list_namespaced_pod(
            "fractal-test", field_selector="spec.colour=red", watch=True, _preload_content=False
        )


# --- RBAC -----------------------------------------------------------------------------------------------


def test_the_role_applies_only_to_the_subjects_of_its_binding(
    apiserver: FakeApiServer, service_account: k.ApiClient
) -> None:
    def may_list() -> bool:
        try:
            errors.call(k.BatchV1Api(service_account).list_namespaced_job, "fractal-test")
        except errors.Forbidden:
            return False
        return True

    review = k.V1SelfSubjectAccessReview(
        spec=k.V1SelfSubjectAccessReviewSpec(
            resource_attributes=k.V1ResourceAttributes(
                namespace="fractal-test", group="batch", resource="jobs", verb="list"
            )
        )
    )
    authz = k.AuthorizationV1Api(service_account)
    assert may_list() and authz.create_self_subject_access_review(review).status.allowed
    apiserver.bindings[0]["subjects"][0]["name"] = "another-account"  # the Role is bound to someone else
    assert not may_list() and not authz.create_self_subject_access_review(review).status.allowed
    apiserver.bindings[0]["subjects"][0].update(name="fractal-scheduler", namespace="elsewhere")
    assert not may_list()


# --- ResourceQuota scopes -------------------------------------------------------------------------


def test_a_quota_counts_and_refuses_only_the_pods_its_scopes_match(apiserver: FakeApiServer) -> None:
    """The stand-in's pods request nothing (BestEffort): a full BestEffort quota refuses them
    (FailedCreate); a full NotBestEffort quota, or one for a PriorityClass, neither refuses nor
    counts them."""
    ns = apiserver.namespace

    def make_quota(name: str, **spec: Any) -> None:
        body = {"metadata": {"name": name}, "spec": {"hard": {"pods": "1"}, **spec}}
        apiserver.store.create("resourcequotas", ns, body)

    make_quota("not-best-effort", scopes=["NotBestEffort"])
    make_quota("high", scopeSelector={"matchExpressions": [
        {"scopeName": "PriorityClass", "operator": "In", "values": ["batch-high"]}]})
    make_quota("best-effort", scopes=["BestEffort"])
    running = start_job(apiserver, "sleep")
    poll(lambda: apiserver.live(running))
    refused = start_job(apiserver, "ok")

    def refusal() -> str:
        events = apiserver.store.list("events", ns)[0]
        return next((e["message"] for e in events if e["involvedObject"]["name"] == f"fractal-{refused}"
                     and e["reason"] == "FailedCreate"), "")

    assert "exceeded quota: best-effort, requested: pods=1, used: pods=1, limited: pods=1" in poll(refusal)
    assert apiserver.pods(refused) == []

    def used(name: str) -> dict[str, str] | None:
        status = apiserver.store.get("resourcequotas", ns, name).get("status")
        return status and status["used"]

    assert poll(lambda: used("best-effort") == {"pods": "1"})
    assert poll(lambda: used("not-best-effort") == {"pods": "0"}) and used("high") == {"pods": "0"}


def test_a_malformed_request_is_a_400_status(apiserver: FakeApiServer, admin: k.ApiClient) -> None:
    """Not JSON, not an object, or a number that is not one: a BadRequest Status, as the API server
    answers, and the double goes on serving."""
    token = next(t for t, user in apiserver.tokens.items() if user == "admin")
    pods = f"{apiserver.url}/api/v1/namespaces/fractal-test/pods"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    for body in (b"{not json", b'"a string"'):
        answer = urllib3.request("POST", pods, body=body, headers=headers)
        status = json.loads(answer.data)
        assert (answer.status, status["kind"], status["reason"]) == (400, "Status", "BadRequest")
        assert "json parse error" in status["message"]
    for query in ("resourceVersion=abc", "watch=true&resourceVersion=abc", "watch=true&timeoutSeconds=soon"):
        answer = urllib3.request("GET", f"{pods}?{query}", headers=headers)
        status = json.loads(answer.data)
        assert (answer.status, status["reason"]) == (400, "BadRequest")
        assert "not a number" in status["message"]
    assert k.CoreV1Api(admin).list_namespaced_pod("fractal-test").items == []
