"""The Job manifest: a pure function of the request and the settings (docs/design.md "Kubernetes objects")."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
from kubernetes.client import ApiClient

from scheduler.core.config import Settings
from scheduler.runners.kubernetes.objects import job_name, make_access_review, make_job
from tests.kubernetes.conftest import make_spec

K8S_VERSION = "1.37.0"  # the schema set kubernetes-validate ships for the kubernetes==37 client
JOB_ID = "0123456789abcdef0123456789abcdef"
WHERE = [  # the downward API's names for the log's first line (job_image/worker.py)
    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
]
LABELS = {
    "app.kubernetes.io/name": "fractal-job",
    "app.kubernetes.io/managed-by": "fractal-scheduler",
    "fractal-scheduler/job-id": JOB_ID,
}
PARAMS = (
    '{"kind":"mandelbrot","width":64,"height":48,"center_x":-0.5,"center_y":0.0,"zoom":1.0,'
    '"max_iter":50,"julia_re":-0.8,"julia_im":0.156,"colormap":"classic","precision":"auto",'
    '"device":"%s","supersample":1,"counts":false}'
)
SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}

FAILURE_POLICY = {
    "rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": "render", "operator": "In", "values": [2]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": "Ignore", "onExitCodes": {"containerName": "render", "operator": "In", "values": [143]}},
    ]
}


def expected_job(device: str) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"fractal-{JOB_ID}",
            "labels": LABELS,
            "annotations": {"fractal-scheduler/result-prefix": f"alice/{JOB_ID}/"},
        },
        "spec": {
            "completionMode": "Indexed",
            "completions": 1,
            "parallelism": 1,
            "backoffLimitPerIndex": 1,
            "backoffLimit": 2,
            "podFailurePolicy": FAILURE_POLICY,
            "activeDeadlineSeconds": 600,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": LABELS},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [
                        {
                            "name": "render",
                            "image": "fractal-job:latest",
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["python", "-m", "job_image"],
                            "env": [
                                {"name": "JOB_ID", "value": JOB_ID},
                                {"name": "FRACTAL_PARAMS", "value": PARAMS % device},
                                {"name": "RESULT_PREFIX", "value": f"alice/{JOB_ID}/"},
                                {"name": "MAX_PIXELS", "value": "16777216"},
                                {"name": "MAX_ITER", "value": "100000"},
                                {"name": "MAX_COORDINATE_DIGITS", "value": "2000"},
                                {"name": "MAX_ZOOM", "value": "1E+1000"},
                                {"name": "OPENCL_CACHE_DIR", "value": "/tmp/opencl-cache"},
                                {"name": "POCL_CACHE_DIR", "value": "/tmp/opencl-cache"},
                                *WHERE,
                            ],
                            "envFrom": [
                                {"configMapRef": {"name": "minio-config"}},
                                {"secretRef": {"name": "minio-secret"}},
                            ],
                            "resources": {
                                "requests": {"cpu": "500m", "memory": "256Mi"},
                                "limits": {"cpu": "2", "memory": "1Gi"},
                            },
                            "securityContext": SECURITY,
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                        }
                    ],
                },
            },
        },
    }


def serialized(job: object) -> dict:
    return ApiClient().sanitize_for_serialization(job)


def test_cpu_job_is_exactly_this() -> None:
    assert serialized(make_job(make_spec(JOB_ID), Settings())) == expected_job("cpu")


def test_gpu_job_asks_for_one_gpu_on_gpu_nodes() -> None:
    settings = Settings(
        job_gpu_node_selector={"nvidia.com/gpu.present": "true"},
        job_gpu_tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    )
    want = expected_job("gpu")
    pod = want["spec"]["template"]["spec"]
    pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "1"
    pod["nodeSelector"] = {"nvidia.com/gpu.present": "true"}
    pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert serialized(make_job(make_spec(JOB_ID, device="gpu"), settings)) == want
    # GPU scheduling only for device=gpu.
    assert serialized(make_job(make_spec(JOB_ID, device="auto"), settings)) == expected_job("auto")


def expected_array(tasks: int, parallelism: int) -> dict:
    want = expected_job("cpu")
    want["spec"].update(completions=tasks, parallelism=parallelism, backoffLimit=2 * tasks)
    env = want["spec"]["template"]["spec"]["containers"][0]["env"]
    env.insert(-1 - len(WHERE), {"name": "RENDER_ARRAY", "value": '{"split":256}'})  # before POCL_CACHE_DIR
    return want


def test_an_array_is_one_indexed_job_started_with_the_tasks_admitted_now() -> None:
    spec = make_spec(JOB_ID, split=256, tasks=(0, 1, 2))
    assert serialized(make_job(spec, Settings(), parallelism=3)) == expected_array(256, 3)


def test_a_retry_runs_only_the_tasks_it_is_given_its_index_k_the_kth() -> None:
    want = expected_array(4, 2)
    want["metadata"]["annotations"]["fractal-scheduler/tasks"] = "1,5-7"
    env = want["spec"]["template"]["spec"]["containers"][0]["env"]
    env.append({"name": "TASK_INDEXES", "value": "1,5-7"})
    spec = make_spec(JOB_ID, split=256, tasks=(1, 5))
    assert serialized(make_job(spec, Settings(), run=(1, 5, 6, 7), parallelism=2)) == want


def test_builder_is_pure() -> None:
    settings = Settings(job_gpu_node_selector={"a": "b"}, job_gpu_tolerations=[{"key": "k"}])
    spec = make_spec(JOB_ID, device="gpu")
    before_settings, before_spec = settings.model_dump(), copy.deepcopy(spec)
    first, second = make_job(spec, settings), make_job(spec, settings)
    assert serialized(first) == serialized(second)
    first.spec.template.spec.node_selector["a"] = "changed"
    first.spec.template.metadata.labels["x"] = "y"
    assert settings.model_dump() == before_settings and spec == before_spec
    assert "x" not in (first.metadata.labels or {})


@pytest.mark.parametrize(("device", "split", "run"), [
    ("cpu", 1, None), ("gpu", 1, None), ("auto", 1, None), ("cpu", 1024, None), ("gpu", 1024, (3, 9)),
])
def test_generated_jobs_validate_against_the_kubernetes_schema(
    device: str, split: int, run: tuple[int, ...] | None
) -> None:
    settings = Settings(job_gpu_tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}])
    job = make_job(make_spec(JOB_ID, device=device, split=split), settings, run=run, parallelism=1)
    kubernetes_validate.validate(serialized(job), K8S_VERSION, strict=True)


def test_job_name_is_a_dns_label() -> None:
    name = job_name(JOB_ID)
    assert name == f"fractal-{JOB_ID}" and len(name) <= 63


def test_access_review_names_the_subresource() -> None:
    review = serialized(make_access_review("ns", "", "pods/log", "get"))
    assert review["spec"]["resourceAttributes"] == {
        "namespace": "ns",
        "group": "",
        "resource": "pods",
        "subresource": "log",
        "verb": "get",
    }
