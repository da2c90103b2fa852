"""A small error family for Kubernetes API failures, mapped from status codes (kopf-style).

Callers catch these, never `ApiException` or urllib3 errors; each is raised `from` the original.
Status codes: https://kubernetes.io/docs/reference/using-api/api-concepts/#http-status-codes
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypeVar

import urllib3
from kubernetes.client.exceptions import ApiException

T = TypeVar("T")


class KubeError(Exception):
    """Any failed Kubernetes API call; the message is a sentence."""

    status: int | None = None
    reason: str = ""


class Unreachable(KubeError):
    """No answer: connection refused or reset, or the request timed out."""


class Unauthorized(KubeError):
    """401: the token is missing, wrong or expired (mint a new kubeconfig)."""


class Forbidden(KubeError):
    """403: the Role lacks a verb, or a ResourceQuota is exhausted."""

    @property
    def quota(self) -> bool:
        return "exceeded quota" in str(self)


class NotFound(KubeError):
    """404."""


class Conflict(KubeError):
    """409: AlreadyExists or a conflicting update."""


class Gone(KubeError):
    """410: the resourceVersion is too old (expired from the watch cache); relist."""


class Invalid(KubeError):
    """400/422: the request itself is wrong; retrying will not help."""


class ServerError(KubeError):
    """5xx and 429: the API server is unwell or throttling; retry later."""


_BY_STATUS: dict[int, type[KubeError]] = {
    400: Invalid,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Invalid,
}


def _status_message(exc: ApiException) -> tuple[str, str]:
    """The Status object's message and reason, else the HTTP reason."""
    try:
        body = json.loads(exc.body or "")
        return str(body.get("message") or exc.reason or ""), str(body.get("reason") or "")
    except (ValueError, AttributeError):
        return str(exc.reason or ""), ""


def from_status(status: int, message: str, reason: str = "") -> KubeError:
    """The error for a status code (also used for watch ERROR events)."""
    cls = _BY_STATUS.get(status, ServerError if status >= 500 or status == 429 else KubeError)
    err = cls(f"Kubernetes API: {message or reason or status} (HTTP {status})")
    err.status, err.reason = status, reason
    return err


def translate(exc: BaseException) -> KubeError:
    """Map a client exception to the family."""
    if isinstance(exc, KubeError):
        return exc
    if isinstance(exc, ApiException):
        if not exc.status:  # the client's own failures (e.g. unsupported content type)
            return KubeError(f"Kubernetes API: {exc.reason}")
        message, reason = _status_message(exc)
        return from_status(int(exc.status), message, reason)
    if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
        return Unreachable(f"Kubernetes API server unreachable: {exc}")
    return KubeError(f"Kubernetes client: {exc}")


def refusal(exc: KubeError, verb: str, resource: str, namespace: str) -> str:
    """Why a call did not go through, as a clause a user can act on (the HTTP layer makes it
    a sentence); the API server's own message follows in parentheses."""
    if isinstance(exc, Forbidden) and not exc.quota:
        return f"the service account may not {verb} {resource} in namespace {namespace} ({exc})"
    if isinstance(exc, Unauthorized):
        return f"the Kubernetes API server refused the service account's token ({exc})"
    if isinstance(exc, Unreachable):
        return f"the Kubernetes API server cannot be reached ({exc})"
    if isinstance(exc, ServerError):
        return f"the Kubernetes API server is failing or throttling requests ({exc})"
    return f"the Kubernetes API server refused to {verb} {resource} ({exc})"


def call(fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Run one client call, raising the family's error `from` the client's."""
    try:
        return fn(*args, **kwargs)
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise translate(exc) from exc
