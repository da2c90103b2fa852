"""The status poll's fast path: a signed-in user's `GET /jobs/{id}` of their own job, answered
without FastAPI's routing and dependency resolution.

Pollers send this request more than all others together, and profiling it showed FastAPI's work
per request (matching the routes, resolving the dependency tree, its exception and exit-stack
layers) costing more than the answer itself. This pure ASGI layer answers only the common case
(a GET without a query string, a valid bearer token of a known user, one of their jobs) with the
route's own code: `authenticate`, `JobReads.owned` (on SQLite a read on the loop), `finished_or_current`,
`job_document` (a change to the document there is a change here). Anything else (no token or a bad
one, another user's job, `?wait=`, a failing database) goes on to the routed app, which answers it
as /openapi.json documents.
"""

from __future__ import annotations

import re

from fastapi import HTTPException
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from scheduler.api.deps import authenticate, bearer
from scheduler.api.routes import jobs
from scheduler.service import Service

JOB_PATH = re.compile(r"/jobs/([^/]+)")  # the route's /jobs/{job_id}, matched whole
ROUTE = next(route for route in jobs.router.routes if getattr(route, "endpoint", None) is jobs.get_job)


class StatusReads:
    """Innermost middleware: answers the status poll itself, passes on everything else."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app, self.service = app, service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        poll = (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and not scope["query_string"]
            and not scope.get("root_path")
            and JOB_PATH.fullmatch(scope["path"])
        )
        response = await self._answer(scope, poll.group(1)) if poll else None
        if response is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = ROUTE  # what the router would record: metrics label it alike
        await response(scope, receive, send)

    async def _answer(self, scope: Scope, job_id: str) -> Response | None:
        """The route's answer where it is a 200 or 304; None where the routed app must answer."""
        connection = HTTPConnection(scope)
        try:
            user = await authenticate(self.service.accounts, await bearer(connection))
            job = await self.service.job_reads.owned(job_id, user.username)
        except (HTTPException, SQLAlchemyError):  # a 401 or a 503: the route says which, and how
            return None
        if job is None:
            return None
        doc = await jobs.finished_or_current(self.service.tracker, self.service.settings, job, wait=0)
        return jobs.job_document(doc, connection.headers.get("if-none-match"))
