"""What every part of the double shares: the resources it serves, the one node, timestamps, and
errors as the real Status objects an API server answers with."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]

# resource -> (api group, version, kind)
RESOURCES: dict[str, tuple[str, str, str]] = {
    "jobs": ("batch", "v1", "Job"),
    "pods": ("", "v1", "Pod"),
    "events": ("", "v1", "Event"),
    "configmaps": ("", "v1", "ConfigMap"),
    "resourcequotas": ("", "v1", "ResourceQuota"),
    "secrets": ("", "v1", "Secret"),
}
NODE = "double-node-1"

Obj = dict[str, Any]


def now_iso(later: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=later)).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_obj(code: int, reason: str, message: str, details: Obj | None = None) -> Obj:
    """A metav1.Status as the API server writes it."""
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure" if code >= 400 else "Success",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def too_large(asked: int, current: int) -> ApiError:
    """What a watch cache that is behind answers for a resourceVersion it has not seen yet."""
    return ApiError(
        504,
        "Timeout",
        f"Timeout: Too large resource version: {asked}, current: {current}",
        {"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
         "retryAfterSeconds": 1},
    )


def object_error(code: int, reason: str, resource: str, name: str, says: str) -> ApiError:
    """An error about one named object, worded and detailed as the API server does."""
    group = RESOURCES[resource][0]
    qualified = f"{resource}.{group}" if group else resource
    details = {"name": name, "group": group, "kind": resource}
    return ApiError(code, reason, f'{qualified} "{name}" {says}', details)


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.status = status_obj(code, reason, message, details)
