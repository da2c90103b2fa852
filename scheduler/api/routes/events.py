"""Server-Sent Events: a job's changes (`/jobs/{id}/events`) or all of yours (`/events`)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Header
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send

from scheduler.api.deps import CurrentUser, EventsDep, OwnedJob, SettingsDep
from scheduler.api.errors import OWN_JOB, SIGNED_IN, Answers, InvalidRequest, problem, unprocessable
from scheduler.core.config import Settings
from scheduler.events import CURRENT, EventFeed
from scheduler.models import JobEvent

log = logging.getLogger(__name__)

router = APIRouter(tags=["events"])

EVENT_ID = re.compile(r"[0-9]{1,18}")  # [0-9] is ASCII; 18 digits stay below 2**63
LastEventId = Annotated[
    str | None, Header(alias="Last-Event-ID", description="resume after this event (EventSource sends it)")
]


def sse_event(kind: str, document: str, meaning: str) -> dict[str, Any]:
    """One Server-Sent Event as OpenAPI 3.1 describes a `text/event-stream` item (what
    schemathesis checks each event against): its fields, `data` being a JSON document."""
    return {
        "type": "object",
        "description": meaning,
        "required": ["id", "event", "data"],
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9]+$", "description": "its seq: resume after it"},
            "event": {"const": kind},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": f"#/components/schemas/{document}"},
            },
        },
    }


EVENT = {
    "oneOf": [
        sse_event("message", "JobPublic", "a job as it is now, or as a change left it"),
        sse_event("deleted", "JobDeleted", "the job was deleted"),
    ]
}
STREAM: Answers = {
    200: {
        "content": {"text/event-stream": {"schema": EVENT}},
        "description": "an event per change (`id: <seq>`, `data: <job document>`); `event: deleted` when "
        "a job is removed; `: ping` comments keep the connection open",
    },
    422: problem(
        "a Last-Event-ID that is not ASCII digits, that no event has (past the newest), or more than "
        "EVENTS_MAX_RESUME of the stream's events back",
        model=InvalidRequest,
    ),
    429: problem("EVENTS_MAX_STREAMS_PER_USER streams of yours are open"),
}
ALL_ANSWERS: Answers = {**STREAM, **SIGNED_IN}
JOB_ANSWERS: Answers = {**STREAM, **OWN_JOB}


class EventStream(EventSourceResponse):
    """A client too slow to take one event within the send timeout is dropped quietly (it can
    resume with Last-Event-ID); that is expected, not an application error."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            log.info(
                "event stream to %s dropped: it did not read for %s s", scope.get("client"), self.send_timeout
            )


ENCODE_OFF_LOOP = 32  # events in a batch: a resume's, encoded in a worker thread
FRAME_CACHE = 4096  # encoded events kept: one change goes out to every stream, encoded once
_frames: dict[tuple[int, str, str], bytes] = {}


def encoded(event: JobEvent) -> bytes:
    """The event on the wire (`id:`, `event:` unless a plain job document, `data:`), encoded
    once however many streams send it."""
    if event.kind == CURRENT:  # made for this stream alone, and may differ from the log's
        return _encode(event)
    key = (event.seq or 0, event.job_id, event.kind)
    frame = _frames.get(key)
    if frame is None:
        if len(_frames) >= FRAME_CACHE:
            _frames.clear()
        frame = _frames[key] = _encode(event)
    return frame


def encode_all(events: list[JobEvent]) -> bytes:
    """The events on the wire, without the shared cache (for a worker thread)."""
    return b"".join(_encode(event) for event in events)


def _encode(event: JobEvent) -> bytes:
    kind = None if event.kind in ("job", CURRENT) else event.kind  # job documents are plain `message`s
    return ServerSentEvent(data=json.dumps(event.document), id=str(event.seq), event=kind).encode()


def parse_last_event_id(value: str | None) -> int | None:
    """The seq to resume after; None for a fresh stream. ASCII digits only (`str.isdigit` takes
    superscripts, which `int` refuses), within the log's 63-bit range."""
    value = (value or "").strip(" \t")
    if not value:
        return None
    if not EVENT_ID.fullmatch(value):
        raise unprocessable("Last-Event-ID must be the id of an event from this stream: ASCII digits.")
    return int(value)


async def open_stream(
    feed: EventFeed, settings: Settings, owner: str, job_id: str | None, last_event_id: str | None
) -> EventStream:
    after = parse_last_event_id(last_event_id)
    if after is not None:
        await feed.check_resume(owner, job_id, after)  # ResumeRefused: a 422 (api/errors.py)
    sub = await feed.subscribe(owner, job_id)  # TooManyStreams: a 429

    async def frames() -> AsyncIterator[bytes]:
        async for batch in feed.follow(sub, after):  # one write per batch (up to 500 events)
            if len(batch) < ENCODE_OFF_LOOP:  # live changes: each encoded once for every stream
                yield b"".join(encoded(event) for event in batch)
            else:  # a resume's batch, this stream's alone: encoded off the event loop, uncached
                yield await feed.off_loop(partial(encode_all, batch))

    return EventStream(
        frames(),
        ping=settings.events_ping_seconds,
        send_timeout=settings.events_send_timeout_seconds,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},  # no proxy buffering
    )


@router.get("/jobs/{job_id}/events", response_class=EventStream, responses=JOB_ANSWERS)  # type: ignore[arg-type]
async def job_events(
    job: OwnedJob, feed: EventsDep, settings: SettingsDep, last_event_id: LastEventId = None
) -> EventStream:
    """Live changes of one job as Server-Sent Events; the stream ends after its final status."""
    return await open_stream(feed, settings, job.owner, job.id, last_event_id)


@router.get("/events", response_class=EventStream, responses=ALL_ANSWERS)  # type: ignore[arg-type]
async def all_events(
    user: CurrentUser, feed: EventsDep, settings: SettingsDep, last_event_id: LastEventId = None
) -> EventStream:
    """Live changes of all your jobs as Server-Sent Events (unfinished jobs first, as they are now)."""
    return await open_stream(feed, settings, user.username, None, last_event_id)
