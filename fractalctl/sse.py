"""Server-Sent Events parsing, per the WHATWG "event stream interpretation" rules.

Not httpx's `iter_lines` (it splits on every line break `str.splitlines` knows, U+2028 among
them), nor httpx-sse 0.4 (once an id was seen, it dispatches an empty event at every blank line,
e.g. after each `: ping` comment, where the standard dispatches nothing).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class Event:
    data: str
    event: str = "message"
    id: str | None = None  # the last `id:` seen so far in the stream, as the spec's "last event ID"


def split_lines(chunks: Iterable[str]) -> Iterator[str]:
    """The lines of text arriving in chunks, ended by CR, LF or CRLF (and nothing else), however
    the chunks split them: a chunk may end between CR and LF. An unended last line is dropped."""
    rest, after_cr = "", False
    for chunk in chunks:
        if after_cr and chunk.startswith("\n"):  # the LF of a CRLF split across chunks
            chunk, after_cr = chunk[1:], False
        if not chunk:
            continue
        after_cr = chunk.endswith("\r")
        *lines, rest = LINE_END.split(rest + chunk)
        yield from lines


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
