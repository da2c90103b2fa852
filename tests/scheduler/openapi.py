"""Checks answers against what /openapi.json declares for their operation: one answer
(`assert_declared`), or every answer a service gave during a test (`undeclared`): those of the
apps of `make_client` (kept by `Recorder`) and of the `python -m scheduler` of `serve`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import httpx
import jsonschema
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def declared_answers(client: TestClient, method: str, path: str) -> dict[str, Any]:
    """The operation's declared responses, by status ("202", "429", ...)."""
    return client.get("/openapi.json").json()["paths"][path][method.lower()]["responses"]


def check(
    doc: dict[str, Any], method: str, path: str, code: int, headers: httpx.Headers, body: bytes
) -> None:
    """An answer of `method path` (the route's template) is one its operation declares: the
    status, a content type it declares (none when it declares none), a JSON body that the
    declared schema accepts, and every header declared required."""
    answers = doc["paths"][path][method.lower()]["responses"]
    assert str(code) in answers, f"{method} {path} answered {code}, not declared: {sorted(answers)}"
    answer = answers[str(code)]
    content = answer.get("content", {})
    media = headers.get("content-type", "").split(";")[0] or None
    if media is None:
        assert not content, f"{method} {path} {code} answered no content type, declared {sorted(content)}"
    else:
        assert media in content, f"{method} {path} {code} answered {media}, declared {sorted(content)}"
        schema = content[media].get("schema")
        if schema and media == "application/json" and method != "HEAD":
            jsonschema.validate(json.loads(body), {**schema, "components": doc["components"]})
    for name, header in answer.get("headers", {}).items():
        if header.get("required"):
            assert name in headers, f"{method} {path} {code} without its {name} header"


def assert_declared(client: TestClient, response: httpx.Response, path: str) -> None:
    """`response` (to `path`, the route's template) is one its operation declares."""
    doc = client.get("/openapi.json").json()
    check(doc, response.request.method, path, response.status_code, response.headers, response.content)


@dataclass
class Answer:
    method: str
    path: str  # as requested; its route is found when checked
    code: int
    headers: httpx.Headers
    body: bytes  # JSON bodies only (a stream or a PNG is not checked against a schema)


class Recorder:
    """Outermost middleware: keeps every answer the app sends, refusals of the middleware below
    it (413) included."""

    def __init__(self, app: ASGIApp, answers: list[Answer]) -> None:
        self.app, self.answers = app, answers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        answer: Answer | None = None

        async def keep(message: Message) -> None:
            nonlocal answer
            if message["type"] == "http.response.start":  # kept at once: a stream may never end
                headers = httpx.Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in
                                         message["headers"]])
                answer = Answer(scope["method"], scope["path"], message["status"], headers, b"")
                self.answers.append(answer)
            elif message["type"] == "http.response.body" and answer is not None and is_json(answer.headers):
                answer.body += message.get("body", b"")
            await send(message)

        await self.app(scope, receive, keep)


def is_json(headers: httpx.Headers) -> bool:
    return headers.get("content-type", "").startswith("application/json")


def operation(doc: dict[str, Any], method: str, path: str) -> str | None:
    """The template of the documented operation that takes `method path`; None when none does
    (an unknown path, a method the path lacks, the docs or the web pages)."""
    for template, item in doc["paths"].items():
        if method.lower() in item and re.fullmatch(re.sub(r"\\{\w+\\}", "[^/]+", re.escape(template)), path):
            return template
    return None


def provoked(doc: dict[str, Any], answers: list[Answer], *templates: str) -> set[tuple[str, str, str]]:
    """(method, template, status) of each of `answers` to the operations of `templates`."""
    kept = ((a.method, operation(doc, a.method, a.path), str(a.code)) for a in answers)
    return {(method, template, code) for method, template, code in kept if template in templates}


def declared(doc: dict[str, Any], *templates: str) -> set[tuple[str, str, str]]:
    """(method, template, status) of each answer the operations of `templates` declare."""
    return {
        (method.upper(), template, code)
        for template in templates
        for method, op in doc["paths"][template].items()
        for code in op["responses"]
    }


def undeclared(doc: dict[str, Any], answers: list[Answer]) -> list[str]:
    """What in `answers` `doc` (an /openapi.json) does not declare, a line each."""
    found = []
    for answer in answers:
        template = operation(doc, answer.method, answer.path)
        if template is None:
            continue
        try:
            check(doc, answer.method, template, answer.code, answer.headers, answer.body)
        except (AssertionError, jsonschema.ValidationError) as exc:
            found.append(f"{answer.method} {answer.path}: {str(exc).splitlines()[0]}")
    return found


def answer_of(response: httpx.Response) -> Answer:
    """An httpx client's answer; a stream closed unread has no body to check."""
    try:
        body = response.content
    except httpx.ResponseNotRead:
        body = b""
    request = response.request
    return Answer(request.method, request.url.path, response.status_code, response.headers, body)
