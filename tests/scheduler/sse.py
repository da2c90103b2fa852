"""A small Server-Sent Events reader over httpx (the wire format of the HTML standard)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Event:
    id: str | None
    event: str
    data: str

    @property
    def document(self) -> dict[str, Any]:
        return json.loads(self.data)


def parse(lines: Iterator[str], comments: list[str] | None = None) -> Iterator[Event]:
    """Events from the stream's lines; comment lines go to `comments` when given."""
    fields: dict[str, list[str]] = {}
    for line in lines:
        if not line:
            if "data" in fields:
                yield Event(
                    fields.get("id", [None])[-1],
                    fields.get("event", ["message"])[-1],
                    "\n".join(fields["data"]),
                )
            fields = {}
            continue
        if line.startswith(":"):
            if comments is not None:
                comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name, []).append(value.removeprefix(" "))


def collect(
    client: httpx.Client,
    path: str,
    auth: dict[str, str],
    *,
    last_event_id: str | None = None,
    until: Any = None,
    timeout: float = 120,
) -> tuple[list[Event], bool]:
    """Read events until the server ends the stream (returns True) or `until(events)` holds
    (returns False), failing at the deadline."""
    headers = dict(auth)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    with client.stream("GET", path, headers=headers, timeout=httpx.Timeout(timeout)) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in parse(response.iter_lines()):
            events.append(event)
            if until is not None and until(events):
                return events, False
            assert time.monotonic() < deadline, f"no end of {path} in {timeout} s: {events}"
    return events, True
