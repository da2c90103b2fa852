"""Every error is `{"detail": "<a sentence>"}`, and this is where errors become responses.

Routes raise domain errors (a full store, a refusing runner, a taken username, too many jobs)
and let them go: the handlers below give each its status and sentence. The few errors that
belong to HTTP itself are made by the helpers here (`unauthorized`, `not_found`,
`unprocessable`, `conflict`). Request validation errors carry the raw list too. Routes declare
the errors they answer with `problem()` (and the shared sets SIGNED_IN, OWN_JOB), so that
/openapi.json shows each with its body and headers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from job_image.params import describe_errors
from job_image.storage import StorageError
from scheduler import db
from scheduler.admission.limits import NoSuchDevice, TooExpensive
from scheduler.api.disconnect import ClientGone
from scheduler.callbacks import CallbackRefused
from scheduler.core.ratelimit import Throttled
from scheduler.crud import UsernameTaken
from scheduler.events import ResumeRefused, TooManyStreams
from scheduler.idempotency import BadKey, KeyInProgress, KeyReused
from scheduler.job_status import NotRetryable, QueueFull, TooManyActiveJobs
from scheduler.jobs import JobFinished, JobGone
from scheduler.pricing import PricingBusy
from scheduler.runners.base import RunnerUnavailable
from scheduler.videos import VideoFailed


class Problem(BaseModel):
    """The body of every error answer."""

    model_config = ConfigDict(extra="forbid")  # /openapi.json then says there is nothing else

    detail: str = Field(description="a sentence: what went wrong, and what to do about it")


class FieldProblem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class InvalidRequest(Problem):
    """A 422: a body or query that does not parse also lists each field's problem."""

    errors: list[FieldProblem] = Field(default=[], description="present when the request did not parse")


HEADERS: dict[str, dict[str, Any]] = {
    "Accept-Ranges": {"description": "`bytes`: a Range is honoured", "schema": {"type": "string"}},
    "Content-Disposition": {"description": "inline, with the file's name", "schema": {"type": "string"}},
    "Content-Length": {"description": "the body's size in bytes", "schema": {"type": "integer"}},
    "Content-Range": {"description": "the bytes sent, or the file's size", "schema": {"type": "string"}},
    "ETag": {"description": "this version of the body, for If-None-Match (the PNG's: its sha256)",
             "schema": {"type": "string"}},
    "Idempotent-Replayed": {"description": "`true`: the first answer to this Idempotency-Key, again",
                            "schema": {"type": "string"}},
    "Location": {"description": "the job's URL (202), or the stored file's presigned URL (307)",
                 "schema": {"type": "string"}},
    "Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "integer"}},
    "WWW-Authenticate": {"description": "the scheme to sign in with", "schema": {"type": "string"}},
}
SCHEMAS = (Problem, InvalidRequest)  # the error bodies /openapi.json defines (api/openapi.py)
CLIENT_GONE = 499  # nginx's "client closed request": what a request cut short by its client ends as


def headers(*always: str, sometimes: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """Headers (named in HEADERS) of an answer: `always` sent, `sometimes` only in some cases."""
    return {name: {**HEADERS[name], "required": name in always} for name in (*always, *sometimes)}


def problem(
    meaning: str, *always: str, sometimes: tuple[str, ...] = (), model: type[Problem] = Problem
) -> dict[str, Any]:
    """One error answer of a route's `responses=`: what it means, its JSON body (whatever the
    route's own media type) and its headers; /openapi.json declares it so."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    answer: dict[str, Any] = {"description": meaning, "content": {"application/json": {"schema": schema}}}
    if always or sometimes:
        answer["headers"] = headers(*always, sometimes=sometimes)
    return answer


Answers = dict[int | str, dict[str, Any]]  # a route's `responses=`

TOO_BIG = problem("a body over MAX_BODY_BYTES")
DATABASE_DOWN = problem("the database cannot be used now")
STORAGE_DOWN = problem("the database or result storage cannot be used now")
# What every operation of a signed-in user may answer, and those about one of their jobs
SIGNED_IN: Answers = {401: problem("no valid bearer token", "WWW-Authenticate"), 503: DATABASE_DOWN}
OWN_JOB: Answers = {
    **SIGNED_IN, 404: problem("no job of yours has this id (another user's job is missing too)")
}


def unauthorized(detail: str, scheme: str = "Bearer") -> HTTPException:
    """401 naming the scheme that would succeed (Bearer for the API, Basic for sign-in)."""
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": scheme})


def not_found(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail)


def job_not_found(job_id: str) -> HTTPException:
    return not_found(f"No job {job_id} here.")


def unprocessable(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


def conflict(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, detail)


def describe_validation(errors: list[dict[str, Any]]) -> str:
    for err in errors:
        if err.get("type") == "json_invalid":  # loc is ("body", character offset)
            reason = (err.get("ctx") or {}).get("error", "JSON decode error")
            return f"The body is not valid JSON: {reason} at character {err['loc'][-1]}."
    return f"Invalid request: {describe_errors(errors) or 'body: invalid'}."


def _detail(code: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=code, headers=headers)


def database_unavailable(exc: Exception) -> str:
    return f"The database is unavailable: {db.describe(exc)}. Try again later."


# domain error -> (status, the sentence for it)
DOMAIN_ERRORS: dict[type[Exception], tuple[int, Callable[[Any], str]]] = {
    StorageError: (503, lambda exc: f"Result storage is unavailable: {exc}"),
    RunnerUnavailable: (
        503, lambda exc: f"The job cannot be cancelled now: {exc}. Nothing was changed; try again later."
    ),
    UsernameTaken: (409, lambda exc: f"The username {exc.args[0]!r} is taken."),
    TooManyActiveJobs: (
        429,
        lambda exc: f"You have {exc} unfinished jobs, the most allowed; wait for one to finish or delete one."
    ),
    CallbackRefused: (422, lambda exc: f"callback_url: {exc}"),
    # a full disk, a read-only or unreadable file, a server that is down or out of connections
    DBAPIError: (503, database_unavailable),
    SQLAlchemyTimeout: (503, database_unavailable),
    KeyInProgress: (
        409, lambda exc: "The first request with this Idempotency-Key is still being handled; try again soon."
    ),
    KeyReused: (
        422, lambda exc: "This Idempotency-Key came with another request body; use a new key for this one."
    ),
    BadKey: (422, str),
    JobFinished: (409, lambda exc: f"The job has already finished ({exc}); there is nothing to cancel."),
    JobGone: (404, lambda exc: f"No job {exc} here."),
    NotRetryable: (409, lambda exc: f"{str(exc)[0].upper()}{str(exc)[1:]}."),
    VideoFailed: (503, lambda exc: f"The video could not be made: {exc}. Try again later."),
    TooManyStreams: (429, lambda exc: f"You have {exc} event streams open, the most allowed; close one."),
    ResumeRefused: (422, lambda exc: f"Last-Event-ID: {exc}."),
    NoSuchDevice: (422, lambda exc: f"{str(exc)[0].upper()}{str(exc)[1:]}."),
    TooExpensive: (
        422,
        lambda exc: f"The render is estimated at {exc.estimate:.4g} iterations, above MAX_JOB_ITERATIONS "
        f"({exc.limit:.4g}); lower max_iter, the size or supersample.",
    ),
}


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        raw = exc.errors()
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in raw]
        return JSONResponse(
            {"detail": describe_validation(raw), "errors": errors},
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        # FastAPI answers a body that is not UTF-8 with a 400 "There was an error parsing the
        # body": it is invalid JSON like any other, so a 422 that says where it broke
        if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            where = exc.__cause__.start
            return _detail(422, f"The body is not valid JSON: it is not UTF-8 (byte {where}).")
        # the router's own answers are a bare phrase: make them sentences that say what to do
        path = request.url.path
        if exc.status_code == 404 and exc.detail == "Not Found":
            return _detail(404, f"There is no {path}; the API is described at /docs.")
        if exc.status_code == 405 and exc.detail == "Method Not Allowed":
            detail = f"{path} does not take {request.method}; /docs lists what it takes."
            allow = allowed_methods(request)
            return _detail(405, detail, {"Allow": allow} if allow else exc.headers)
        return await http_exception_handler(request, exc)

    @app.exception_handler(Throttled)
    async def _throttled(_request: Request, exc: Throttled) -> JSONResponse:
        wait = str(math.ceil(exc.retry_after))
        return _detail(429, f"Too many attempts; try again in {wait} seconds.", {"Retry-After": wait})

    @app.exception_handler(QueueFull)
    async def _queue_full(_request: Request, exc: QueueFull) -> JSONResponse:
        wait = str(exc.retry_after)
        detail = f"The queue is full ({exc} jobs wait, all users together); try again in {wait} seconds."
        return _detail(429, detail, {"Retry-After": wait})

    @app.exception_handler(ClientGone)
    async def _gone(_request: Request, _exc: ClientGone) -> Response:
        return Response(status_code=CLIENT_GONE)  # nobody reads it; the metrics count it

    @app.exception_handler(PricingBusy)
    async def _pricing_busy(_request: Request, exc: PricingBusy) -> JSONResponse:
        wait = str(exc.retry_after)
        detail = f"Too many submits are being priced ({exc}); try again in {wait} seconds."
        return _detail(429, detail, {"Retry-After": wait})

    for error, (code, sentence) in DOMAIN_ERRORS.items():
        app.add_exception_handler(error, _domain_handler(code, sentence))


def allowed_methods(request: Request) -> str | None:
    """The methods /openapi.json documents at this path (Starlette's 405 names only the first
    route's: `Allow: POST` for /jobs, which also takes GET); None for an undocumented path."""
    for template, item in request.app.openapi()["paths"].items():
        if re.fullmatch(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)), request.url.path):
            return ", ".join(sorted(method.upper() for method in item))
    return None


def _domain_handler(code: int, sentence: Callable[[Any], str]) -> Any:
    async def handle(_request: Request, exc: Exception) -> JSONResponse:
        return _detail(code, sentence(exc))

    return handle


class BodyLimitMiddleware:
    """Refuse bodies over `max_bytes` with 413, whether announced (Content-Length) or chunked.

    The body is read up front (it is small: a few hundred bytes of JSON) and handed on whole,
    so an oversized chunked body is refused before any route parses it.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # e.g. http.disconnect while a response streams
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"The request body is larger than the limit of {self.max_bytes} bytes."},
            status_code=status.HTTP_413_CONTENT_TOO_LARGE,
        )
        await response({"type": "http"}, _nothing, send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}
