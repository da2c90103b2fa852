"""Probes and metrics for the platform (no authentication)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from scheduler.api.deps import ServiceDep

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up (liveness)."""
    return {"status": "ok"}


Check = Literal["database", "storage", "runner"]
ExcludeQuery = Annotated[list[Check] | None, Query(description="checks to leave out, as kube-apiserver's")]


@router.get("/readyz")
async def readyz(
    service: ServiceDep,
    exclude: ExcludeQuery = None,
) -> JSONResponse:
    """Database, storage and runner all reachable (readiness); 503 says which is not.
    `?exclude=runner` leaves a check out, e.g. for a Deployment's readinessProbe."""
    problems = await service.problems(exclude or ())
    if problems:
        detail = "Not ready: " + "; ".join(f"{part}: {why}" for part, why in problems.items())
        return JSONResponse({"detail": detail, "problems": problems}, status_code=503)
    return JSONResponse({"status": "ready", "runner": service.runner.name})


@router.get("/metrics", response_class=Response)
def metrics(service: ServiceDep) -> Response:
    """Prometheus metrics: jobs by status, job durations, HTTP latency."""
    body, content_type = service.metrics.render()
    return Response(body, media_type=content_type)
