"""Probes and metrics for the platform (no authentication)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from scheduler.api.deps import MetricsDep, ReadinessDep
from scheduler.api.errors import Answers, InvalidRequest, Problem, problem

router = APIRouter(tags=["operations"])


class Ready(BaseModel):
    status: Literal["ready"]
    runner: str


class NotReady(Problem):
    problems: dict[str, str]


READY_ANSWERS: Answers = {
    200: {"model": Ready, "description": "the database, storage and runner can all be used"},
    422: problem("an unknown check in ?exclude=", model=InvalidRequest),
    503: {"model": NotReady, "description": "not ready: a sentence per part that cannot work"},
}
METRICS_ANSWERS: Answers = {
    200: {"content": {"text/plain": {"schema": {"type": "string"}}},
          "description": "Prometheus' text exposition format"},
}


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up (liveness)."""
    return {"status": "ok"}


Check = Literal["database", "storage", "runner"]
ExcludeQuery = Annotated[list[Check] | None, Query(description="checks to leave out, as kube-apiserver's")]


@router.get("/readyz", responses=READY_ANSWERS)
async def readyz(
    readiness: ReadinessDep,
    exclude: ExcludeQuery = None,
) -> JSONResponse:
    """Database, storage and runner all reachable (readiness); 503 says which is not.
    `?exclude=runner` leaves a check out, e.g. for a Deployment's readinessProbe."""
    problems = await readiness.problems(exclude or ())
    if problems:
        detail = "Not ready: " + "; ".join(f"{part}: {why}" for part, why in problems.items())
        return JSONResponse({"detail": detail, "problems": problems}, status_code=503)
    return JSONResponse({"status": "ready", "runner": readiness.runner.name})


@router.get("/metrics", response_class=Response, responses=METRICS_ANSWERS)
def metrics(metrics: MetricsDep) -> Response:
    """Prometheus metrics: jobs by status, job durations, HTTP latency."""
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
