"""Streaming a stored object to the client: Content-Length, ETag/304 and single byte ranges.

Bytes are passed through in the storage's chunks (4 MiB), one read ahead of the one being sent,
so memory does not grow with the object's size. The first chunk is fetched before the headers
go out: a dead store is then still a clean 503 instead of a response cut short. A GET of the
whole object opens it at once (its answer gives the size and type): one storage request, not
a `stat` and then the download.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Iterator

from fastapi import status
from fastapi.responses import JSONResponse, Response, StreamingResponse

from job_image.storage import Download, ObjectInfo, Storage

RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")  # ASCII digits only, matched whole
# A position with more digits is past any object (and int() refuses over 4300 digits).
_MAX_DIGITS = 18


class RangeNotSatisfiable(Exception):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (first, last) byte of a single `Range: bytes=` header, or None for the
    whole object. Multiple ranges and other units are ignored (answered with the whole
    object, which RFC 9110 allows); an unsatisfiable range raises RangeNotSatisfiable."""
    if not header:
        return None
    match = RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = (_position(g) for g in match.groups())
    if first is None and last is None:
        return None
    if first is None:  # suffix range: the last N bytes
        if last == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - last), size - 1
    end = min(last, size - 1) if last is not None else size - 1
    if first >= size or (last is not None and last < first):
        raise RangeNotSatisfiable(header)
    return first, end


def _position(digits: str) -> int | None:
    if not digits:
        return None
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


def sends_whole(head: bool, range_header: str | None, if_none_match: str | None) -> bool:
    """Whether the answer is the whole object whatever it is (a GET with no Range and no
    If-None-Match): then the download can be opened first, and `stat` is not needed."""
    return not (head or range_header or if_none_match)


async def read_ahead(first: bytes, chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Yield the chunks while the next one is already being read from storage (one chunk
    ahead, so memory stays bounded): storage reads and socket writes overlap."""
    ahead = asyncio.ensure_future(asyncio.to_thread(next, chunks, b""))
    try:
        chunk = first
        while chunk:
            yield chunk
            chunk = await ahead
            if chunk:
                ahead = asyncio.ensure_future(asyncio.to_thread(next, chunks, b""))
    finally:
        # The client may have gone mid-read: the storage stream is released (closed) once the
        # read still running in its thread has ended; closing it now would race that read.
        ahead.add_done_callback(lambda _: close_quietly(chunks))


def close_quietly(chunks: Iterator[bytes]) -> None:
    with contextlib.suppress(Exception):
        getattr(chunks, "close", lambda: None)()


async def stream_object(
    storage: Storage,
    key: str,
    found: ObjectInfo | Download,
    *,
    etag: str | None,
    range_header: str | None,
    if_none_match: str | None,
    filename: str,
    head: bool = False,
) -> Response:
    """The object (or the range asked for) streamed from storage; for HEAD its headers only.
    `found` is what `stat` said, or the whole object already opened (a plain GET)."""
    info, opened = (found.info, found.chunks) if isinstance(found, Download) else (found, None)
    return await stream_bytes(
        lambda start, length: storage.iter_bytes(key, start, length), info.size, info.content_type,
        etag=etag, range_header=range_header, if_none_match=if_none_match, filename=filename, head=head,
        opened=opened,
    )


async def stream_bytes(
    open_range: Callable[[int, int], Iterator[bytes]],
    size: int,
    content_type: str,
    *,
    etag: str | None,
    range_header: str | None,
    if_none_match: str | None,
    filename: str,
    head: bool = False,
    opened: Iterator[bytes] | None = None,
) -> Response:
    """`size` bytes (or the range asked for) from `open_range(start, length)`, a blocking
    iterator of chunks (a stored object, or a PNG joined from parts); for HEAD the headers only.
    `opened`: the whole object's chunks, opened already; used when the whole object is sent."""
    if opened is not None and not sends_whole(head, range_header, if_none_match):
        close_quietly(opened)
        opened = None
    headers = {"Accept-Ranges": "bytes", "Content-Disposition": f'inline; filename="{filename}"'}
    if etag:
        headers["ETag"] = etag
        if etag_matches(if_none_match, etag):
            return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    try:
        span = parse_range(range_header, size)
    except RangeNotSatisfiable:
        return JSONResponse(
            {"detail": f"The requested range is outside the {size}-byte file."},
            status_code=status.HTTP_416_RANGE_NOT_SATISFIABLE,
            headers={"Content-Range": f"bytes */{size}"},
        )
    start, end = span if span else (0, size - 1)
    length = max(0, end - start + 1)
    code = status.HTTP_206_PARTIAL_CONTENT if span else status.HTTP_200_OK
    if span:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    if head:  # the headers a GET would send; nothing is read from storage
        return Response(
            status_code=code, media_type=content_type, headers={**headers, "Content-Length": str(length)}
        )
    # Opening the download is network I/O too: off the event loop; a StorageError is a 503.
    chunks = opened if opened is not None else await asyncio.to_thread(open_range, start, length)
    first = await asyncio.to_thread(next, chunks, b"")
    headers["Content-Length"] = str(length)
    return StreamingResponse(
        read_ahead(first, chunks),
        status_code=code,
        media_type=content_type,
        headers=headers,
    )
