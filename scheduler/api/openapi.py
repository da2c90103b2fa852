"""/openapi.json as the service answers: FastAPI's document, less the 422 it adds to every
operation with parameters (`HTTPValidationError`, a shape this service never sends: its 422 is
`InvalidRequest`, declared by the routes that answer one), plus the error bodies' schemas and the
documents the event streams carry (their events name them in `contentSchema`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic.json_schema import models_json_schema

from scheduler.api.errors import SCHEMAS
from scheduler.models import JobDeleted, JobPublic

FASTAPI_422 = {"$ref": "#/components/schemas/HTTPValidationError"}


def as_answered(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` without FastAPI's own 422s and with SCHEMAS defined (mutated and returned)."""
    for item in doc["paths"].values():
        for operation in item.values():
            answers = operation["responses"]
            theirs = answers.get("422", {}).get("content", {}).get("application/json", {}).get("schema")
            if theirs == FASTAPI_422:
                del answers["422"]
            operation["responses"] = dict(sorted(answers.items()))  # read in order at /docs
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    _, defined = models_json_schema(
        [(model, "serialization") for model in (*SCHEMAS, JobPublic, JobDeleted)],
        ref_template="#/components/schemas/{model}",
    )
    schemas.update(defined["$defs"])
    return doc


def install(app: FastAPI) -> None:
    """Serve `as_answered` of FastAPI's document, built once."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = as_answered(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
