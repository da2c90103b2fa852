"""Every error is `{"detail": "<a sentence>"}`; request validation errors too (plus the raw list)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def describe_validation(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors:
        if err.get("type") == "json_invalid":  # loc is ("body", character offset)
            reason = (err.get("ctx") or {}).get("error", "JSON decode error")
            return f"The body is not valid JSON: {reason} at character {err['loc'][-1]}."
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {str(err.get('msg', 'invalid')).removeprefix('Value error, ')}")
    return "Invalid request: " + "; ".join(parts) + "."


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        raw = exc.errors()
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in raw]
        return JSONResponse(
            {"detail": describe_validation(raw), "errors": errors},
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )


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
