"""Access: the API client from a kubeconfig (or the pod's account), and the check that the
service account may do every call the runner makes (one SelfSubjectAccessReview per verb).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from kubernetes import client as k
from kubernetes import config as kube_config

from scheduler.core.config import Settings
from scheduler.runners.kubernetes import errors, objects

log = logging.getLogger(__name__)


def api_client(settings: Settings) -> k.ApiClient:
    """KUBECONFIG (or settings.kubeconfig), else ~/.kube/config, else the pod's service account.
    https://kubernetes.io/docs/tasks/run-application/access-api-from-pod/"""
    cfg = k.Configuration()
    try:
        if settings.kubeconfig:
            kube_config.load_kube_config(config_file=settings.kubeconfig, client_configuration=cfg)
        elif os.path.exists(os.path.expanduser(kube_config.KUBE_CONFIG_DEFAULT_LOCATION)):
            kube_config.load_kube_config(client_configuration=cfg)
        else:
            kube_config.load_incluster_config(client_configuration=cfg)
    except (kube_config.ConfigException, OSError) as exc:
        raise errors.KubeError(f"no usable Kubernetes configuration: {exc}") from exc
    # urllib3 would retry a refused connection 3 times inside one call; retries are ours (the
    # dispatcher's backoff, the watch loop, the sweep), so a call ends within its timeout.
    cfg.retries = False
    return k.ApiClient(cfg)


class AccessCheck:
    """Which of the verbs the runner uses the service account lacks, asked in its namespace
    (no ClusterRole). One round of reviews at a time, however often /readyz asks."""

    def __init__(self, namespace: str, ask: Callable[[k.V1SelfSubjectAccessReview], bool]) -> None:
        self.namespace = namespace
        self.ask = ask  # one review -> allowed?
        self.denied: list[str] | None = None  # None until a round has answered
        self._round: asyncio.Future[None] | None = None

    async def run(self) -> None:
        """Ask once more when no round has answered yet (joining the one in flight)."""
        if self.denied is not None:
            return
        if self._round is None or self._round.done():
            self._round = asyncio.ensure_future(self._ask_all())
            self._round.add_done_callback(lambda t: t.cancelled() or t.exception())
        await asyncio.shield(self._round)

    def raise_if_denied(self) -> None:
        if self.denied:
            raise errors.Forbidden(
                f"the service account may not {', '.join(self.denied)} in namespace {self.namespace}"
            )

    async def _ask_all(self) -> None:
        def ask_all() -> list[str]:
            denied = []
            for group, resource, verb in objects.API_ACCESS:
                if not self.ask(objects.make_access_review(self.namespace, group, resource, verb)):
                    denied.append(f"{verb} {resource}" + (f".{group}" if group else ""))
            return denied

        self.denied = await asyncio.to_thread(ask_all)
        if self.denied:
            log.error("service account lacks: %s", ", ".join(self.denied))
