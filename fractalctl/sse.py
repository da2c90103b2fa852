"""Server-Sent Events parsing, per the WHATWG "event stream interpretation" rules."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    data: str
    event: str = "message"
    id: str | None = None  # the last `id:` seen so far in the stream, as the spec's "last event ID"


def parse_events(lines: Iterable[str]) -> Iterator[Event]:
    """Events from the stream's lines (line endings already removed). Comments (`: keep-alive`)
    and events without data are skipped, as a browser's EventSource does."""
    data: list[str] = []
    event = ""
    last_id: str | None = None
    for line in lines:
        if not line:
            if data:
                yield Event(data="\n".join(data), event=event or "message", id=last_id)
            data, event = [], ""
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            last_id = value
