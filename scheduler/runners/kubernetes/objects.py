"""Pure builders for the Kubernetes objects the runner creates (no API calls, no file reads).

Shape per docs/design.md ("Kubernetes objects"). Tested by comparing
`ApiClient().sanitize_for_serialization(make_job(...))` with a literal dict.
"""

from __future__ import annotations

from collections.abc import Sequence

from kubernetes import client as k

from job_image.indexes import intervals
from scheduler.admission.capacity import JobShape
from scheduler.core.config import Settings
from scheduler.runners.base import JobSpec

NAME_LABEL = "app.kubernetes.io/name"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
JOB_ID_LABEL = "fractal-scheduler/job-id"
# Lets a restarted service save a Job's log beside its result without the DB.
RESULT_PREFIX_ANNOTATION = "fractal-scheduler/result-prefix"
TASKS_ANNOTATION = "fractal-scheduler/tasks"  # a retry's Job: the tasks it runs, its index k the k-th
APP_NAME = "fractal-job"
MANAGER = "fractal-scheduler"
CONTAINER = "render"
OPENCL_CACHE = "/tmp/opencl-cache"

# Every Job and Pod this service owns carries it; both watches use it.
# https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors
SELECTOR = f"{NAME_LABEL}={APP_NAME},{MANAGED_BY_LABEL}={MANAGER}"

# (api group, resource, verb) for every call the runner makes. serviceaccount/role.yaml grants
# exactly these; the startup check asks a SelfSubjectAccessReview for each.
API_ACCESS: tuple[tuple[str, str, str], ...] = (
    ("batch", "jobs", "create"),  # submit
    ("batch", "jobs", "get"),  # submit: a 409 is checked to be our own Job before adopting it
    ("batch", "jobs", "list"),  # reflector: list
    ("batch", "jobs", "watch"),  # reflector: watch
    ("batch", "jobs", "delete"),  # cancel, pending deadline, a retry's finished Job
    ("batch", "jobs", "patch"),  # a render array's parallelism, raised as its tasks are admitted
    ("", "pods", "get"),  # a Job's end can outrun its pod's last update: read the pod's final state
    ("", "pods", "list"),  # reflector: list
    ("", "pods", "watch"),  # reflector: watch
    ("", "pods/log", "get"),  # logs(), and job.log saved when a Job ends
    ("", "events", "list"),  # events.json saved when a Job ends
    ("", "resourcequotas", "list"),  # reflector: what the namespace's quotas leave for admission
    ("", "resourcequotas", "watch"),  # reflector: watch
    ("", "resourcequotas", "get"),  # (read-only, as docs/design.md lists it)
)


def job_name(job_id: str) -> str:
    """The Job's name: `fractal-<job_id>` (40 chars, a valid DNS label)."""
    return f"fractal-{job_id}"


def job_labels(job_id: str) -> dict[str, str]:
    return {NAME_LABEL: APP_NAME, MANAGED_BY_LABEL: MANAGER, JOB_ID_LABEL: job_id}


def job_env(spec: JobSpec, settings: Settings) -> list[k.V1EnvVar]:
    """Per-job variables; storage variables come from the ConfigMap/Secret via envFrom."""
    # The root filesystem may be read-only; PoCL caches compiled kernels in /tmp.
    env = spec.env(settings, opencl_cache_dir=OPENCL_CACHE) | {"POCL_CACHE_DIR": OPENCL_CACHE}
    # The log's first line names the pod and its node (job_image/worker.py): the downward API.
    # Not HOSTNAME: an Indexed Job's pod is named <job>-<index>-<suffix> but its hostname <job>-<index>.
    # https://kubernetes.io/docs/concepts/workloads/pods/downward-api/
    where = {"POD_NAME": "metadata.name", "NODE_NAME": "spec.nodeName"}
    return [k.V1EnvVar(name=name, value=value) for name, value in env.items()] + [
        k.V1EnvVar(name=name, value_from=k.V1EnvVarSource(field_ref=k.V1ObjectFieldSelector(field_path=path)))
        for name, path in where.items()
    ]


def _resources(spec: JobSpec, settings: Settings) -> k.V1ResourceRequirements:
    requests = {"cpu": settings.job_cpu_request, "memory": settings.job_memory_request}
    limits = {"cpu": settings.job_cpu_limit, "memory": settings.job_memory_limit}
    if spec.params.device == "gpu":
        # Extended resources are set in limits (requests default to them).
        # https://kubernetes.io/docs/tasks/manage-gpus/scheduling-gpus/
        limits[settings.job_gpu_resource] = "1"
    return k.V1ResourceRequirements(requests=requests, limits=limits)


# Exit codes of the job contract the Job's podFailurePolicy acts on.
EXIT_INVALID = 2  # invalid parameters: no retry can help, the whole Job fails at once
EXIT_SIGTERM = 143  # stopped by SIGTERM (a pod deleted or drained): not the task's failure


def failure_policy() -> k.V1PodFailurePolicy:
    """Exit 2 fails the Job at once; a disrupted pod (DisruptionTarget: eviction, preemption, node
    drain) or one stopped by SIGTERM (deleted) is not counted: its task gets a new pod.
    https://kubernetes.io/docs/concepts/workloads/controllers/job/#pod-failure-policy"""
    return k.V1PodFailurePolicy(rules=[
        k.V1PodFailurePolicyRule(action="FailJob", on_exit_codes=k.V1PodFailurePolicyOnExitCodesRequirement(
            container_name=CONTAINER, operator="In", values=[EXIT_INVALID])),
        k.V1PodFailurePolicyRule(action="Ignore", on_pod_conditions=[
            k.V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget", status="True")]),
        k.V1PodFailurePolicyRule(action="Ignore", on_exit_codes=k.V1PodFailurePolicyOnExitCodesRequirement(
            container_name=CONTAINER, operator="In", values=[EXIT_SIGTERM])),
    ])


def make_job(
    spec: JobSpec, settings: Settings, *, run: Sequence[int] | None = None, parallelism: int | None = None
) -> k.V1Job:
    """The batch/v1 Job that renders one request: an Indexed Job of its tasks (one for a single
    frame), or of the tasks `run` only (a retry: those with no part stored; the Job's index k
    runs the k-th, see tasks.py), `parallelism` of them at once (default all; the runner raises
    it as the scheduler admits more). Each task is retried alone, JOB_BACKOFF_LIMIT times.
    https://kubernetes.io/docs/concepts/workloads/controllers/job/#backoff-limit-per-index"""
    labels = job_labels(spec.job_id)
    completions = spec.total if run is None else len(run)
    annotations = {RESULT_PREFIX_ANNOTATION: spec.result_prefix}
    env = job_env(spec, settings)
    if run is not None:
        annotations[TASKS_ANNOTATION] = intervals(run)
        env.append(k.V1EnvVar(name="TASK_INDEXES", value=annotations[TASKS_ANNOTATION]))
    gpu = spec.params.device == "gpu"
    container = k.V1Container(
        name=CONTAINER,
        image=settings.job_image,
        image_pull_policy=settings.job_image_pull_policy,
        command=["python", "-m", "job_image"],
        env=env,
        env_from=[
            k.V1EnvFromSource(config_map_ref=k.V1ConfigMapEnvSource(name=settings.minio_config_map)),
            k.V1EnvFromSource(secret_ref=k.V1SecretEnvSource(name=settings.minio_secret)),
        ],
        resources=_resources(spec, settings),
        # Pod Security Standard "restricted".
        # https://kubernetes.io/docs/concepts/security/pod-security-standards/#restricted
        security_context=k.V1SecurityContext(
            allow_privilege_escalation=False,
            capabilities=k.V1Capabilities(drop=["ALL"]),
            run_as_non_root=True,
            seccomp_profile=k.V1SeccompProfile(type="RuntimeDefault"),
        ),
        # The last lines of the log become the termination message when the job fails
        # without writing one: its own stderr line reaches the job's error.
        # https://kubernetes.io/docs/tasks/debug/debug-application/determine-reason-pod-failure/
        termination_message_policy="FallbackToLogsOnError",
    )
    pod_spec = k.V1PodSpec(
        restart_policy="Never",
        automount_service_account_token=False,  # the job never talks to the API server
        containers=[container],
        security_context=k.V1PodSecurityContext(
            run_as_non_root=True, seccomp_profile=k.V1SeccompProfile(type="RuntimeDefault")
        ),
        node_selector=(dict(settings.job_gpu_node_selector) or None) if gpu else None,
        # Written as in a manifest (camelCase keys), e.g. [{"key": "nvidia.com/gpu", "operator": "Exists"}].
        tolerations=[k.V1Toleration.from_dict(t) for t in settings.job_gpu_tolerations]
        if gpu and settings.job_gpu_tolerations
        else None,
    )
    return k.V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=k.V1ObjectMeta(
            name=job_name(spec.job_id),
            labels=labels,
            annotations=annotations,
        ),
        spec=k.V1JobSpec(
            completion_mode="Indexed",
            completions=completions,
            parallelism=completions if parallelism is None else parallelism,
            backoff_limit_per_index=settings.job_backoff_limit,
            # Bounded, yet never the binding limit: every task may spend its own retries.
            # https://kubernetes.io/docs/concepts/workloads/controllers/job/#job-termination-and-cleanup
            backoff_limit=completions * (settings.job_backoff_limit + 1),
            pod_failure_policy=failure_policy(),
            active_deadline_seconds=settings.job_timeout_seconds,
            ttl_seconds_after_finished=settings.job_ttl_seconds_after_finished,
            template=k.V1PodTemplateSpec(
                metadata=k.V1ObjectMeta(labels=dict(labels)),
                spec=pod_spec,
            ),
        ),
    )


def make_access_review(namespace: str, group: str, resource: str, verb: str) -> k.V1SelfSubjectAccessReview:
    """A namespaced "may I?" question; needs no Role rule (every user may ask about itself).
    https://kubernetes.io/docs/reference/access-authn-authz/authorization/#checking-api-access"""
    resource, _, subresource = resource.partition("/")
    return k.V1SelfSubjectAccessReview(
        api_version="authorization.k8s.io/v1",
        kind="SelfSubjectAccessReview",
        spec=k.V1SelfSubjectAccessReviewSpec(
            resource_attributes=k.V1ResourceAttributes(
                namespace=namespace,
                group=group,
                resource=resource,
                subresource=subresource or None,
                verb=verb,
            )
        ),
    )


def job_shape(settings: Settings) -> JobShape:
    """What one Job's pod counts against a ResourceQuota: the requests and limits make_job sets."""
    return JobShape(
        cpu_request=settings.job_cpu_request, cpu_limit=settings.job_cpu_limit,
        memory_request=settings.job_memory_request, memory_limit=settings.job_memory_limit,
        gpu_resource=settings.job_gpu_resource,
    )
