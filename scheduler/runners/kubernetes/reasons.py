"""Pure functions: a Job's and its Pods' status -> one human sentence (pending message, error).

What the sentences are built from:
- container states and reasons: https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#container-states
- Job failure conditions (BackoffLimitExceeded, DeadlineExceeded):
  https://kubernetes.io/docs/concepts/workloads/controllers/job/#job-termination-and-cleanup
- the termination message (FallbackToLogsOnError):
  https://kubernetes.io/docs/tasks/debug/debug-application/determine-reason-pod-failure/
"""

from __future__ import annotations

from collections.abc import Sequence

from kubernetes import client as k

IMAGE_PULL_REASONS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
CONFIG_REASONS = {"CreateContainerConfigError", "CreateContainerError"}


def last_line(text: str | None) -> str:
    """The last non-blank line, trimmed (a job prints one clear line on failure)."""
    for line in reversed((text or "").splitlines()):
        if line.strip():
            return line.strip()[:500]
    return ""


def _condition(conditions: Sequence[k.V1PodCondition] | Sequence[k.V1JobCondition] | None, type_: str):
    for cond in conditions or ():
        if cond.type == type_ and cond.status == "True":
            return cond
    return None


def job_condition(job: k.V1Job, type_: str) -> k.V1JobCondition | None:
    """The Job's condition of that type when it is True (Complete, Failed)."""
    return _condition(job.status.conditions if job.status else None, type_)


def _statuses(pod: k.V1Pod) -> list[k.V1ContainerStatus]:
    return list((pod.status and pod.status.container_statuses) or [])


def terminated(pod: k.V1Pod) -> k.V1ContainerStateTerminated | None:
    """The container's terminated state, if it has ended."""
    for cs in _statuses(pod):
        if cs.state and cs.state.terminated:
            return cs.state.terminated
    return None


def pending_message(pod: k.V1Pod | None, no_pod: str | None = None) -> str:
    """Why a job has not started yet, as a sentence. `no_pod`: why the Job controller could
    not create the pod (see failed_create), used while there is none."""
    if pod is None:
        return no_pod or "Waiting for the Job controller to create a pod."
    status = pod.status
    for cs in _statuses(pod):
        waiting = cs.state.waiting if cs.state else None
        if waiting is None or not waiting.reason:
            continue
        if waiting.reason in IMAGE_PULL_REASONS:
            detail = f": {waiting.message}" if waiting.message else ""
            return f"Cannot pull the job image {cs.image} ({waiting.reason}){detail}."
        if waiting.reason in CONFIG_REASONS:
            return _sentence(f"The job's container cannot be created ({waiting.reason})", waiting.message)
        if waiting.reason != "ContainerCreating":
            return _sentence(f"The job's container is waiting ({waiting.reason})", waiting.message)
    conditions = (status.conditions if status else None) or []
    scheduled = next((c for c in conditions if c.type == "PodScheduled"), None)
    if scheduled is not None and scheduled.status == "False":
        # The scheduler writes the FailedScheduling text into this condition too.
        # https://kubernetes.io/docs/concepts/scheduling-eviction/kube-scheduler/
        why = scheduled.message or "no node fits the pod"
        return f"No node can run the job yet ({scheduled.reason or 'Unschedulable'}): {why}"
    if scheduled is None:
        return "Waiting for the scheduler to place the pod."
    return "The pod is scheduled; its container is being created."


def waits_for_capacity(pod: k.V1Pod | None, no_pod: str | None) -> bool:
    """Whether the job waits only for room in the cluster that other work holds: its pod is
    refused by a full ResourceQuota (FailedCreate "exceeded quota"), or it is Unschedulable
    for lack of a resource ("Insufficient nvidia.com/gpu"). That waiting is not the job's
    failure (docs/design.md, "Scheduling"); a node selector nothing matches, a taint, a bad image are.
    https://kubernetes.io/docs/concepts/scheduling-eviction/kube-scheduler/"""
    if pod is None:
        return no_pod is not None and "exceeded quota" in no_pod
    conditions = (pod.status.conditions if pod.status else None) or []
    scheduled = next((c for c in conditions if c.type == "PodScheduled"), None)
    return (
        scheduled is not None and scheduled.status == "False" and scheduled.reason == "Unschedulable"
        and "Insufficient" in (scheduled.message or "")
    )


def pod_error(pod: k.V1Pod) -> str | None:
    """Why the pod's container failed, if it did (OOMKilled, or the job's last stderr line)."""
    state = terminated(pod)
    if state is not None and state.exit_code != 0:
        if state.reason == "OOMKilled":
            limit = " its memory limit"
            for c in (pod.spec.containers if pod.spec else []) or []:
                if c.resources and c.resources.limits and "memory" in c.resources.limits:
                    limit = f" its {c.resources.limits['memory']} limit"
            return f"The job ran out of memory and was killed (OOMKilled): it needs more than{limit}."
        line = last_line(state.message)
        if line:
            return f"{line} (exit code {state.exit_code})" if line[-1] != "." else line
        return f"The job's container exited with code {state.exit_code} ({state.reason or 'Error'})."
    if pod.status and pod.status.reason == "DeadlineExceeded":
        return "The job ran longer than its deadline and was stopped (DeadlineExceeded)."
    if pod.status and pod.status.phase == "Failed" and pod.status.reason:
        return f"The pod failed ({pod.status.reason}): {pod.status.message or ''}".rstrip(": ") + "."
    return None


def job_error(job: k.V1Job, pods: Sequence[k.V1Pod]) -> str:
    """The sentence for a failed Job: the pod's own reason when there is one, else the Job's."""
    failed = job_condition(job, "Failed")
    reason = failed.reason if failed else ""
    if reason == "DeadlineExceeded":
        deadline = job.spec.active_deadline_seconds if job.spec else None
        limit = f" of {deadline} s" if deadline else ""
        return f"The job ran longer than its deadline{limit} and was stopped (DeadlineExceeded)."
    # Newest pod first: its failure is the one that exhausted the retries.
    for pod in sorted(pods, key=created, reverse=True):
        err = pod_error(pod)
        if err:
            return err
    if reason == "BackoffLimitExceeded":
        tries = (job.status.failed or 0) if job.status else 0
        return f"The job failed {tries} time(s) and reached its retry limit (BackoffLimitExceeded)."
    message = failed.message if failed and failed.message else "the Job failed"
    return f"{message.rstrip('.')} ({reason or 'Failed'})."


def failed_create(events: Sequence[k.CoreV1Event]) -> str | None:
    """Why the Job controller cannot create the job's pod, from the Job's newest FailedCreate
    event: a full ResourceQuota ('Error creating: pods "..." is forbidden: exceeded quota: ...')
    or a Pod Security admission refusal. No pod exists then, so no pod status says it.
    https://kubernetes.io/docs/concepts/policy/resource-quotas/"""
    found = [e for e in events if e.reason == "FailedCreate"]
    if not found:
        return None
    newest = max(found, key=event_time)
    return _sentence("The Job controller cannot create the job's pod (FailedCreate)", newest.message)


def event_time(event: k.CoreV1Event) -> str:
    """A sort key: when the event last happened, as ISO text ("" when unset)."""
    ts = event.last_timestamp or event.event_time or (event.metadata and event.metadata.creation_timestamp)
    return ts.isoformat() if ts else ""


def _sentence(head: str, detail: str | None) -> str:
    detail = (detail or "").strip().rstrip(".")
    return f"{head}: {detail}." if detail else f"{head}."


def created(pod: k.V1Pod) -> str:
    """A sort key: the creation time as ISO text ("" when unset, i.e. oldest)."""
    ts = pod.metadata.creation_timestamp if pod.metadata else None
    return ts.isoformat() if ts else ""
