"""Runners start and track jobs; `RUNNER` picks one. Routes never import a runner directly."""

from __future__ import annotations

from job_image.storage import Storage
from scheduler.core.config import Settings
from scheduler.runners.base import Report, Runner


def make_runner(settings: Settings, report: Report, storage: Storage) -> Runner:
    if settings.runner == "kubernetes":
        from scheduler.runners.kubernetes import KubernetesRunner  # the client is heavy: import on use

        return KubernetesRunner(settings, report, storage)
    from scheduler.runners.local import LocalRunner

    return LocalRunner(settings, report, storage)
