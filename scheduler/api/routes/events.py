"""Server-Sent Events: a job's changes (`/jobs/{id}/events`) or all of yours (`/events`)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated

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

LastEventId = Annotated[
    str | None, Header(alias="Last-Event-ID", description="resume after this event (EventSource sends it)")
]
STREAM: Answers = {
    200: {
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
        "description": "`id: <seq>` and `data: <job document>` per change; `event: deleted` when a "
        "job is removed; `: ping` comments keep the connection open",
    },
    422: problem("a Last-Event-ID that is not an event's id", model=InvalidRequest),
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


def _encode(event: JobEvent) -> bytes:
    kind = None if event.kind in ("job", CURRENT) else event.kind  # job documents are plain `message`s
    return ServerSentEvent(data=json.dumps(event.document), id=str(event.seq), event=kind).encode()


def parse_last_event_id(value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    if not value.strip().isdigit() or len(value.strip()) > 18:
        raise unprocessable("Last-Event-ID must be the id of an event from this stream.")
    return int(value)


def open_stream(
    feed: EventFeed, settings: Settings, owner: str, job_id: str | None, last_event_id: str | None
) -> EventStream:
    after = parse_last_event_id(last_event_id)
    sub = feed.subscribe(owner, job_id)  # TooManyStreams: a 429 (api/errors.py)

    async def frames() -> AsyncIterator[bytes]:
        async for event in feed.follow(sub, after):
            yield encoded(event)

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
    return open_stream(feed, settings, job.owner, job.id, last_event_id)


@router.get("/events", response_class=EventStream, responses=ALL_ANSWERS)  # type: ignore[arg-type]
async def all_events(
    user: CurrentUser, feed: EventsDep, settings: SettingsDep, last_event_id: LastEventId = None
) -> EventStream:
    """Live changes of all your jobs as Server-Sent Events (unfinished jobs first, as they are now)."""
    return open_stream(feed, settings, user.username, None, last_event_id)
