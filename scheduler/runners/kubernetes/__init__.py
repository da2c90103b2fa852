"""The Kubernetes runner: one batch/v1 Job per request (RUNNER=kubernetes)."""

from scheduler.runners.kubernetes.runner import KubernetesRunner

__all__ = ["KubernetesRunner"]
