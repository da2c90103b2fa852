"""Checks an answer against what /openapi.json declares for its operation."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema
from fastapi.testclient import TestClient


def declared_answers(client: TestClient, method: str, path: str) -> dict[str, Any]:
    """The operation's declared responses, by status ("202", "429", ...)."""
    return client.get("/openapi.json").json()["paths"][path][method.lower()]["responses"]


def assert_declared(client: TestClient, response: httpx.Response, path: str) -> None:
    """`response` (to `path`, the route's template) is one its operation declares: the status,
    a body that the declared schema accepts, and every header declared required."""
    doc = client.get("/openapi.json").json()
    method = response.request.method
    answers = doc["paths"][path][method.lower()]["responses"]
    code = str(response.status_code)
    assert code in answers, f"{method} {path} answered {code}, not declared: {sorted(answers)}"
    media = response.headers["content-type"].split(";")[0]
    content = answers[code].get("content", {})
    assert media in content, f"{method} {path} {code} answered {media}, declared {sorted(content)}"
    schema = content[media].get("schema")
    if schema and media == "application/json":
        jsonschema.validate(response.json(), {**schema, "components": doc["components"]})
    for name, header in answers[code].get("headers", {}).items():
        if header.get("required"):
            assert name in response.headers, f"{method} {path} {code} without its {name} header"
