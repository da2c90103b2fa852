"""The status poll's fast path: a signed-in user's `GET /jobs/{id}` of their own job, answered
without FastAPI's routing and dependency resolution.

Pollers send this request more than all others together, and profiling it showed FastAPI's work
per request (matching the routes, resolving the dependency tree, its exception and exit-stack
layers) costing more than the answer itself. This pure ASGI layer answers only the common case
(a GET without a query string, a valid bearer token of a known user, one of their jobs) with the
route's own code: `authenticate`, `finished_or_current`, `job_document` (a change to the
document there is a change here), and the route's read of the job, which on SQLite is done on the
loop (scheduler/loop_reads.py: the thread hop cost more than the read). Anything else (no token or
a bad one, another user's job, `?wait=`, a database that fails or cannot be read at once) goes on
to the routed app, which answers it as /openapi.json documents.
"""

from __future__ import annotations

import re
import sqlite3

from fastapi import HTTPException
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from scheduler.api.deps import authenticate, bearer, read_owned_job
from scheduler.api.routes import jobs
from scheduler.models import Job
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
            job = await self._read(job_id, user.username)
        except (HTTPException, SQLAlchemyError, sqlite3.Error):  # a 401 or a 503: the route says which
            return None
        if job is None:
            return None
        doc = await jobs.finished_or_current(self.service.tracker, self.service.settings, job, wait=0)
        return jobs.job_document(doc, connection.headers.get("if-none-match"))

    async def _read(self, job_id: str, owner: str) -> Job | None:
        """On SQLite on the loop (scheduler/loop_reads.py: a locked database raises, and the routed
        app reads in a thread); on other databases in a worker thread, as the route does."""
        if self.service.loop_reads is not None:
            return self.service.loop_reads.read_owned_job(job_id, owner)
        return await read_owned_job(self.service.engine, job_id, owner)
