"""Pod and Job status -> the sentence a user reads (pending message or error)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k

from scheduler.runners.kubernetes import reasons
from scheduler.runners.kubernetes.status import observe


def pod(
    state: dict[str, Any] | None = None,
    conditions: list[dict[str, Any]] | None = None,
    phase: str = "Pending",
    **status: Any,
) -> k.V1Pod:
    containers = (
        [
            {
                "name": "render",
                "image": "fractal-job:1",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": state,
            }
        ]
        if state
        else None
    )
    return k.V1Pod.from_dict(
        {
            "metadata": {"name": "p", "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {
                "containers": [
                    {"name": "render", "image": "fractal-job:1", "resources": {"limits": {"memory": "1Gi"}}}
                ]
            },
            "status": {"phase": phase, "conditions": conditions, "containerStatuses": containers, **status},
        }
    )


def failed_job(reason: str, **status: Any) -> k.V1Job:
    return k.V1Job.from_dict(
        {
            "metadata": {"name": "j"},
            "spec": {
                "activeDeadlineSeconds": 60,
                "template": {"spec": {"containers": [{"name": "render", "image": "i"}]}},
            },
            "status": {
                "conditions": [
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": reason,
                        "message": "m",
                        "lastTransitionTime": "2025-01-01T00:01:00Z",
                    }
                ],
                **status,
            },
        }
    )


UNSCHEDULABLE = [
    {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
    }
]


@pytest.mark.parametrize(
    ("p", "sentence"),
    [
        (None, "Waiting for the Job controller to create a pod."),
        (pod(), "Waiting for the scheduler to place the pod."),
        (
            pod(conditions=UNSCHEDULABLE),
            "No node can run the job yet (Unschedulable): "
            "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
        ),
        (
            pod(
                {
                    "waiting": {
                        "reason": "ImagePullBackOff",
                        "message": 'Back-off pulling image "fractal-job:1"',
                    }
                }
            ),
            "Cannot pull the job image fractal-job:1 (ImagePullBackOff): "
            'Back-off pulling image "fractal-job:1".',
        ),
        (
            pod({"waiting": {"reason": "ErrImagePull"}}),
            "Cannot pull the job image fractal-job:1 (ErrImagePull).",
        ),
        (
            pod(
                {
                    "waiting": {
                        "reason": "CreateContainerConfigError",
                        "message": 'secret "minio-secret" not found',
                    }
                }
            ),
            "The job's container cannot be created (CreateContainerConfigError): "
            'secret "minio-secret" not found.',
        ),
        (
            pod({"waiting": {"reason": "ContainerCreating"}}, [{"type": "PodScheduled", "status": "True"}]),
            "The pod is scheduled; its container is being created.",
        ),
    ],
    ids=["no-pod", "unscheduled", "unschedulable", "image-backoff", "image-pull", "config", "creating"],
)
def test_pending_message(p: k.V1Pod | None, sentence: str) -> None:
    assert reasons.pending_message(p) == sentence


def terminated(code: int, reason: str, message: str | None = None) -> k.V1Pod:
    return pod({"terminated": {"exitCode": code, "reason": reason, "message": message}}, phase="Failed")


@pytest.mark.parametrize(
    ("job", "pods", "sentence"),
    [
        (
            failed_job("BackoffLimitExceeded", failed=2),
            [terminated(137, "OOMKilled")],
            "The job ran out of memory and was killed (OOMKilled): it needs more than its 1Gi limit.",
        ),
        (
            failed_job("BackoffLimitExceeded", failed=2),
            [terminated(3, "Error", "rendering...\nno usable OpenCL device: platforms: none\n\n")],
            "no usable OpenCL device: platforms: none (exit code 3)",
        ),
        (
            failed_job("BackoffLimitExceeded", failed=2),
            [terminated(1, "Error")],
            "The job's container exited with code 1 (Error).",
        ),
        (
            failed_job("BackoffLimitExceeded", failed=2),
            [],
            "The job failed 2 time(s) and reached its retry limit (BackoffLimitExceeded).",
        ),
        (
            failed_job("DeadlineExceeded"),
            [terminated(1, "Error", "x")],
            "The job ran longer than its deadline of 60 s and was stopped (DeadlineExceeded).",
        ),
        (failed_job("PodFailurePolicy"), [], "m (PodFailurePolicy)."),
    ],
    ids=["oom", "stderr-line", "exit-code", "backoff", "deadline", "other"],
)
def test_job_error(job: k.V1Job, pods: list[k.V1Pod], sentence: str) -> None:
    assert reasons.job_error(job, pods) == sentence
    obs = observe(job, pods)
    assert obs.status == "failed" and obs.error == sentence and obs.done


def test_observe_running_and_complete() -> None:
    running = pod({"running": {"startedAt": "2025-01-01T00:00:05Z"}}, phase="Running")
    job = k.V1Job.from_dict(
        {"metadata": {"name": "j"}, "spec": {"template": {"spec": {"containers": []}}}, "status": {}}
    )
    obs = observe(job, [running])
    assert obs.status == "running" and obs.started_at.isoformat() == "2025-01-01T00:00:05+00:00"
    job.status = k.V1JobStatus.from_dict(
        {"completionTime": "2025-01-01T00:00:09Z", "conditions": [{"type": "Complete", "status": "True"}]}
    )
    obs = observe(job, [running])
    assert obs.status == "succeeded" and obs.finished_at.isoformat() == "2025-01-01T00:00:09+00:00"


def test_a_retry_after_start_stays_running() -> None:
    first = terminated(1, "Error", "boom")
    first.status.container_statuses[0].state.terminated.started_at = k.V1Pod.from_dict(
        {"metadata": {"creationTimestamp": "2025-01-01T00:00:01Z"}}
    ).metadata.creation_timestamp
    retry = pod()
    retry.metadata.name, retry.metadata.creation_timestamp = "p2", None
    job = k.V1Job.from_dict(
        {
            "metadata": {"name": "j"},
            "spec": {"template": {"spec": {"containers": []}}},
            "status": {"failed": 1},
        }
    )
    assert observe(job, [first, retry]).status == "running"


def event(reason: str, message: str, at: str) -> k.CoreV1Event:
    return k.CoreV1Event.from_dict(
        {
            "metadata": {"name": f"fractal-x.{at[-3:-1]}"},
            "involvedObject": {"kind": "Job", "name": "fractal-x"},
            "reason": reason,
            "message": message,
            "type": "Warning" if reason == "FailedCreate" else "Normal",
            "lastTimestamp": at,
        }
    )


QUOTA = (
    'Error creating: pods "fractal-x-abcde" is forbidden: exceeded quota: compute, '
    "requested: pods=1, used: pods=10, limited: pods=10"
)
PSA = (
    'Error creating: pods "fractal-x-fghij" is forbidden: violates PodSecurity "restricted:latest": '
    "runAsNonRoot != true"
)


@pytest.mark.parametrize(
    ("events", "sentence"),
    [
        ([], None),
        ([event("SuccessfulCreate", "Created pod: fractal-x-abcde", "2025-01-01T00:00:01Z")], None),
        (
            [
                event("FailedCreate", PSA, "2025-01-01T00:00:09Z"),
                event("FailedCreate", QUOTA, "2025-01-01T00:00:01Z"),
            ],
            f"The Job controller cannot create the job's pod (FailedCreate): {PSA}.",
        ),
    ],
    ids=["none", "created", "newest-failure"],
)
def test_failed_create(events: list[k.CoreV1Event], sentence: str | None) -> None:
    assert reasons.failed_create(events) == sentence


def test_a_job_without_a_pod_is_explained_by_its_failed_create() -> None:
    job = k.V1Job.from_dict({"metadata": {"name": "fractal-x"}, "status": {}})
    why = reasons.failed_create([event("FailedCreate", QUOTA, "2025-01-01T00:00:01Z")])
    obs = observe(job, [], why)
    assert obs.status == "pending" and obs.message == why and "exceeded quota: compute" in why
    assert observe(job, []).message == "Waiting for the Job controller to create a pod."
