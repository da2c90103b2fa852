"""The API double's Indexed Jobs behave as the Job controller's (checked through the real client):
one pod per index, parallelism bounding the pods and raised by PATCH, a failed index retried
alone within its backoff, podFailurePolicy, the interval strings and the condition order."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from tests.kubernetes.apiserver import FakeApiServer
from tests.kubernetes.apiserver.indexed import intervals, judge
from tests.kubernetes.test_apiserver import conditions, history, poll, terminated

Obj = dict[str, Any]
INDEX = "batch.kubernetes.io/job-completion-index"
# Each index prints itself and exits as told by argv: "fail:1,2" exits 1 on those indexes,
# "exit2:0" exits 2 there, "wait:PATH" runs (SIGTERM: 143) until PATH exists.
SCRIPT = """
import os, pathlib, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
index = os.environ["JOB_COMPLETION_INDEX"]
print("index", index, "host", os.environ.get("HOSTNAME", ""), flush=True)
for arg in sys.argv[1:]:
    what, _, value = arg.partition(":")
    if what == "fail" and index in value.split(","):
        sys.exit(1)
    if what == "exit2" and index in value.split(","):
        sys.exit(2)
    if what == "wait":
        deadline = time.monotonic() + 60
        while not pathlib.Path(value).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
"""
FAIL_JOB_ON_2 = {"rules": [
    {"action": "FailJob", "onExitCodes": {"containerName": "render", "operator": "In", "values": [2]}},
    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
]}


@pytest.fixture
def admin(apiserver: FakeApiServer, tmp_path: Path) -> Iterator[k.ApiClient]:
    token = next(t for t, user in apiserver.tokens.items() if user == "admin")
    api = kube_config.new_client_from_config(str(apiserver.write_kubeconfig(tmp_path / "admin", token)))
    yield api
    api.close()


def indexed_job(apiserver: FakeApiServer, *args: str, completions: int = 3, **spec: Any) -> str:
    job_id = uuid.uuid4().hex
    apiserver.commands[job_id] = [sys.executable, "-c", SCRIPT, *args]
    labels = {"fractal-scheduler/job-id": job_id}
    apiserver.create("jobs", apiserver.namespace, {
        "metadata": {"name": f"fractal-{job_id}", "labels": labels},
        "spec": {
            "completionMode": "Indexed", "completions": completions, "parallelism": completions,
            "template": {"metadata": {"labels": labels}, "spec": {
                "restartPolicy": "Never", "containers": [{"name": "render", "image": "fractal-job:1"}]}},
            **spec,
        },
    })
    return job_id


def index(pod: Obj) -> int:
    return int(pod["metadata"]["labels"][INDEX])


def ended(apiserver: FakeApiServer, job_id: str) -> Obj:
    return poll(lambda: (j := apiserver.job(job_id)) and {"Complete", "Failed"} & set(conditions(j)) and j)


def running(apiserver: FakeApiServer, job_id: str) -> list[Obj]:
    return [p for p in apiserver.pods(job_id)
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]


def test_intervals_are_written_as_the_job_status_writes_them() -> None:
    assert intervals([]) == ""
    assert intervals([5, 1, 3, 4]) == "1,3-5"
    assert intervals(range(4)) == "0-3"


def test_one_pod_per_index_with_its_index_and_the_target_first(apiserver: FakeApiServer) -> None:
    job_id = indexed_job(apiserver)
    job = ended(apiserver, job_id)
    assert conditions(job) == ["SuccessCriteriaMet", "Complete"]
    assert job["status"]["completedIndexes"] == "0-2" and job["status"]["succeeded"] == 3
    pods = apiserver.pods(job_id)
    assert sorted(index(p) for p in pods) == [0, 1, 2]
    for pod in pods:
        i = index(pod)
        assert pod["metadata"]["annotations"][INDEX] == str(i)
        assert pod["metadata"]["name"].startswith(f"fractal-{job_id}-{i}-")
        assert pod["spec"]["hostname"] == f"fractal-{job_id}-{i}"
        assert f"index {i} host".encode() in apiserver.logs[pod["metadata"]["name"]]
    seen = [conditions(o) for _, o in history(apiserver, "jobs", f"fractal-{job_id}") if conditions(o)]
    assert seen[0] == ["SuccessCriteriaMet"]


def test_parallelism_bounds_the_pods_and_a_patch_raises_it(
    apiserver: FakeApiServer, admin: k.ApiClient, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    job_id = indexed_job(apiserver, f"wait:{go}", completions=4, parallelism=1)
    poll(lambda: (apiserver.job(job_id) or {}).get("status", {}).get("ready") == 1)
    assert [index(p) for p in apiserver.pods(job_id)] == [0]  # the lowest index, and only it
    patch = {"spec": {"parallelism": 3}}
    patched = k.BatchV1Api(admin).patch_namespaced_job(f"fractal-{job_id}", apiserver.namespace, patch)
    assert patched.spec.parallelism == 3
    poll(lambda: apiserver.job(job_id)["status"]["ready"] == 3)
    assert sorted(index(p) for p in apiserver.pods(job_id)) == [0, 1, 2]
    go.touch()
    job = ended(apiserver, job_id)
    assert job["status"]["completedIndexes"] == "0-3" and len(apiserver.pods(job_id)) == 4


def test_a_patch_may_not_change_what_the_job_api_keeps(apiserver: FakeApiServer, admin: k.ApiClient,
                                                      tmp_path: Path) -> None:
    job_id = indexed_job(apiserver, f"wait:{tmp_path / 'never'}", parallelism=0)
    name, ns, batch = f"fractal-{job_id}", apiserver.namespace, k.BatchV1Api(admin)
    for body, field in (
        ({"spec": {"template": {"spec": {"restartPolicy": "OnFailure"}}}}, "spec.template"),
        ({"spec": {"completionMode": "NonIndexed"}}, "spec.completionMode"),
        ({"spec": {"completions": 5}}, "spec.completions"),
        ({"spec": {"parallelism": -1}}, "spec.parallelism"),
    ):
        with pytest.raises(ApiException) as refused:
            batch.patch_namespaced_job(name, ns, body)
        assert refused.value.status == 422 and field in refused.value.body
    # A JSON patch (the client sends one for a list body) and a merge patch both apply.
    batch.patch_namespaced_job(name, ns, [{"op": "replace", "path": "/spec/parallelism", "value": 1}])
    assert apiserver.job(job_id)["spec"]["parallelism"] == 1
    batch.patch_namespaced_job(name, ns, {"metadata": {"labels": {"x": "y"}}},
                               _content_type="application/merge-patch+json")
    job = apiserver.job(job_id)
    assert job["metadata"]["labels"]["x"] == "y" and job["spec"]["parallelism"] == 1
    with pytest.raises(ApiException) as unknown:
        batch.patch_namespaced_job(name, ns, {"spec": {}}, _content_type="application/yaml")
    assert unknown.value.status == 415
    with pytest.raises(ApiException) as missing:
        batch.patch_namespaced_job("fractal-nothing", ns, {"spec": {"parallelism": 1}})
    assert missing.value.status == 404


def test_patch_needs_the_verb_in_the_role(apiserver: FakeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    job_id = indexed_job(apiserver, f"wait:{tmp_path / 'never'}", parallelism=0)
    apiserver.rules = [{**r, "verbs": [v for v in r["verbs"] if v != "patch"]} for r in apiserver.rules]
    api = kube_config.new_client_from_config(str(kubeconfig))
    try:
        with pytest.raises(ApiException) as denied:
            k.BatchV1Api(api).patch_namespaced_job(f"fractal-{job_id}", apiserver.namespace,
                                                   {"spec": {"parallelism": 1}})
    finally:
        api.close()
    assert denied.value.status == 403 and "cannot patch resource" in denied.value.body
    assert apiserver.denials == ["patch jobs.batch"]


def test_a_failed_index_is_retried_alone_until_its_backoff_is_spent(apiserver: FakeApiServer) -> None:
    job_id = indexed_job(apiserver, "fail:1", backoffLimitPerIndex=1)
    job = ended(apiserver, job_id)
    status = job["status"]
    assert (status["completedIndexes"], status["failedIndexes"], status["failed"]) == ("0,2", "1", 2)
    failed = job["status"]["conditions"][-1]
    assert (failed["type"], failed["reason"]) == ("Failed", "FailedIndexes")
    assert conditions(job) == ["FailureTarget", "Failed"]
    pods = sorted(apiserver.pods(job_id), key=lambda p: p["metadata"]["creationTimestamp"])
    assert sorted(index(p) for p in pods) == [0, 1, 1, 2]  # index 1 again, with a new pod
    counts = [p["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"]
              for p in pods if index(p) == 1]
    assert sorted(counts) == ["0", "1"]


def test_max_failed_indexes_ends_the_job_and_stops_the_rest(apiserver: FakeApiServer, tmp_path: Path) -> None:
    job_id = indexed_job(apiserver, "fail:0", f"wait:{tmp_path / 'never'}",
                         backoffLimitPerIndex=0, maxFailedIndexes=0)
    job = ended(apiserver, job_id)
    assert job["status"]["conditions"][-1]["reason"] == "MaxFailedIndexesExceeded"
    assert job["status"]["failedIndexes"] == "0" and apiserver.live(job_id) == []


def test_fail_job_on_exit_2_stops_every_index_and_fails_once_they_are_gone(
    apiserver: FakeApiServer, tmp_path: Path
) -> None:
    job_id = indexed_job(apiserver, "exit2:0", f"wait:{tmp_path / 'never'}",
                         backoffLimitPerIndex=3, podFailurePolicy=FAIL_JOB_ON_2)
    job = ended(apiserver, job_id)
    failed = job["status"]["conditions"][-1]
    assert (failed["type"], failed["reason"]) == ("Failed", "PodFailurePolicy")
    assert "failed with exit code 2 matching FailJob rule at index 0" in failed["message"]
    assert sorted(index(p) for p in apiserver.pods(job_id) if index(p) == 0) == [0]  # not retried
    versions = [(int(o["metadata"]["resourceVersion"]), conditions(o))
                for _, o in history(apiserver, "jobs", f"fractal-{job_id}")]
    target = next(rv for rv, kinds in versions if "FailureTarget" in kinds)
    final = next(rv for rv, kinds in versions if "Failed" in kinds)
    others = {n for n in apiserver.logs if n.startswith(f"fractal-{job_id}-")} - {
        p["metadata"]["name"] for p in apiserver.pods(job_id)}
    assert len(others) == 2  # indexes 1 and 2, deleted once the target was set
    for pod in others:
        gone = next(int(o["metadata"]["resourceVersion"]) for kind, o in history(apiserver, "pods", pod)
                    if kind == "DELETED")
        last = [o for kind, o in history(apiserver, "pods", pod) if terminated(o)][-1]
        # SIGTERM: 143, or 137 once the grace period is over for a PID 1 without its handler yet
        assert target < gone < final and terminated(last)["exitCode"] in (137, 143)


def test_an_evicted_pod_is_replaced_and_not_counted(apiserver: FakeApiServer, tmp_path: Path) -> None:
    go = tmp_path / "go"
    job_id = indexed_job(apiserver, f"wait:{go}", completions=1, backoffLimitPerIndex=0,
                         podFailurePolicy=FAIL_JOB_ON_2)
    first = poll(lambda: running(apiserver, job_id))[0]["metadata"]["name"]
    poll(lambda: b"index 0" in apiserver.logs.get(first, b""))  # its SIGTERM handler is set
    apiserver.evict(first)
    second = poll(lambda: [p for p in running(apiserver, job_id) if p["metadata"]["name"] != first])[0]
    assert index(second) == 0
    assert second["metadata"]["annotations"]["batch.kubernetes.io/job-index-ignored-failure-count"] == "1"
    go.touch()
    job = ended(apiserver, job_id)
    assert conditions(job)[-1] == "Complete" and job["status"]["failed"] == 0


@pytest.mark.parametrize(("spec", "says"), [
    ({"completionMode": "NonIndexed", "backoffLimitPerIndex": 1}, "requires indexed completion mode"),
    ({"maxFailedIndexes": 1}, "backoffLimitPerIndex must also be specified"),
    ({"podFailurePolicy": FAIL_JOB_ON_2, "template": {"spec": {"restartPolicy": "OnFailure", "containers": [
        {"name": "render", "image": "fractal-job:1"}]}}}, "is supported when podFailurePolicy is specified"),
])
def test_the_job_api_refuses_what_an_indexed_job_may_not_be(
    apiserver: FakeApiServer, admin: k.ApiClient, spec: Obj, says: str
) -> None:
    body = {"metadata": {"name": "bad"}, "spec": {
        "completionMode": "Indexed", "completions": 2,
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "render", "image": "x"}]}},
        **spec}}
    with pytest.raises(ApiException) as refused:
        k.BatchV1Api(admin).create_namespaced_job(apiserver.namespace, body)
    assert refused.value.status == 422 and says in refused.value.body


def test_the_policy_takes_the_first_rule_that_matches() -> None:
    def pod(code: int, *conds: str) -> Obj:
        return {"metadata": {"name": "p", "namespace": "n"}, "spec": {"containers": [{"name": "render"}]},
                "status": {"conditions": [{"type": c, "status": "True"} for c in conds],
                           "containerStatuses": [{"state": {"terminated": {"exitCode": code}}}]}}

    assert judge(pod(2), FAIL_JOB_ON_2)[0] == "FailJob"
    assert judge(pod(143, "DisruptionTarget"), FAIL_JOB_ON_2)[0] == "Ignore"
    assert judge(pod(2, "DisruptionTarget"), FAIL_JOB_ON_2)[0] == "FailJob"  # rule 0 first
    assert judge(pod(1), FAIL_JOB_ON_2)[0] == "Count"
    not_in = {"rules": [{"action": "FailIndex", "onExitCodes": {"operator": "NotIn", "values": [1]}}]}
    assert judge(pod(3), not_in)[0] == "FailIndex" and judge(pod(1), not_in)[0] == "Count"
