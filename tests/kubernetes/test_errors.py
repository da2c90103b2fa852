"""ApiException and transport errors -> the runner's error family, raised `from` the original."""

from __future__ import annotations

import json

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from scheduler.runners.kubernetes import errors


def api_exception(code: int, reason: str, message: str) -> ApiException:
    body = json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "code": code,
            "reason": reason,
            "message": message,
        }
    )
    return ApiException(status=code, reason=reason, body=body)


@pytest.mark.parametrize(
    ("code", "reason", "cls"),
    [
        (400, "BadRequest", errors.Invalid),
        (401, "Unauthorized", errors.Unauthorized),
        (403, "Forbidden", errors.Forbidden),
        (404, "NotFound", errors.NotFound),
        (409, "AlreadyExists", errors.Conflict),
        (410, "Expired", errors.Gone),
        (422, "Invalid", errors.Invalid),
        (429, "TooManyRequests", errors.ServerError),
        (500, "InternalError", errors.ServerError),
        (503, "ServiceUnavailable", errors.ServerError),
    ],
)
def test_status_codes_map_to_the_family(code: int, reason: str, cls: type) -> None:
    def boom() -> None:
        raise api_exception(code, reason, f"the {reason} message")

    with pytest.raises(cls) as info:
        errors.call(boom)
    assert str(info.value) == f"Kubernetes API: the {reason} message (HTTP {code})"
    assert info.value.status == code and info.value.reason == reason
    assert isinstance(info.value.__cause__, ApiException)


def test_quota_is_told_apart() -> None:
    err = errors.translate(api_exception(403, "Forbidden", 'jobs.batch "x" is forbidden: exceeded quota: q'))
    assert isinstance(err, errors.Forbidden) and err.quota


def test_transport_errors_are_unreachable() -> None:
    def refused() -> None:
        raise urllib3.exceptions.MaxRetryError(None, "/api", "Connection refused")

    with pytest.raises(errors.Unreachable, match="unreachable") as info:
        errors.call(refused)
    assert isinstance(info.value.__cause__, urllib3.exceptions.MaxRetryError)


@pytest.mark.parametrize(
    ("code", "reason", "message", "sentence"),
    [
        (
            403,
            "Forbidden",
            'jobs.batch "fractal-x" is forbidden: User "sa" cannot delete resource "jobs"',
            "the service account may not delete jobs.batch in namespace ns (",
        ),
        (401, "Unauthorized", "Unauthorized", "the Kubernetes API server refused the service account's"),
        (500, "InternalError", "etcdserver: request timed out", "the Kubernetes API server is failing or "),
        (429, "TooManyRequests", "too many requests", "the Kubernetes API server is failing or "),
        (422, "Invalid", "bad", "the Kubernetes API server refused to delete jobs.batch ("),
    ],
    ids=["forbidden", "unauthorized", "server-error", "throttled", "other"],
)
def test_refusal_says_why_in_a_sentence(code: int, reason: str, message: str, sentence: str) -> None:
    err = errors.translate(api_exception(code, reason, message))
    text = errors.refusal(err, "delete", "jobs.batch", "ns")
    assert text.startswith(sentence) and text.endswith(f"{message} (HTTP {code}))")


def test_refusal_when_unreachable() -> None:
    err = errors.translate(urllib3.exceptions.MaxRetryError(None, "/api", "Connection refused"))
    assert errors.refusal(err, "delete", "jobs.batch", "ns").startswith(
        "the Kubernetes API server cannot be reached (Kubernetes API server unreachable: "
    )
