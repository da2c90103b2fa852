"""A split render's PNG, joined from its parts as it streams: no pixel decoded, memory flat.

Task i stored `parts/<i>.png`, a PNG of its band whose one IDAT chunk holds a zlib stream: a
2-byte header, deflate data ending in a full flush (byte-aligned, referring to nothing
before it), an empty final block and the Adler-32 of the band's scanlines (job_image/png.py);
`parts/<i>.json` says where that IDAT lies. The whole image is then, byte for byte:
signature, IHDR (the whole height), the palette, one IDAT chunk per part, IEND, where the zlib
stream across those chunks is the first part's header, every part's deflate data in order,
the last part's final block, and the parts' Adler-32s combined (`adler32_combine`). Each IDAT
chunk's CRC is computed as its bytes pass; every length is known up front, so
`Content-Length` and single ranges work (a range that ends in a chunk's CRC reads that chunk
from its start, one part at most).
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from job_image.png import EMPTY_FINAL_BLOCK, SIGNATURE, adler32_combine, zlib_header
from job_image.storage import Storage
from scheduler.stored import read_object

HEADER_BYTES = 2  # a zlib stream's header (RFC 1950)
TRAILER_BYTES = len(EMPTY_FINAL_BLOCK) + 4  # the empty final block and the Adler-32


class PartsIncomplete(Exception):
    """A part is missing or does not fit the others (the sentence says which)."""


@dataclass(frozen=True)
class Part:
    """Where one band's deflate data lies in its stored PNG, and what the join needs of it."""

    key: str
    idat_offset: int  # of the IDAT chunk's body (its zlib stream)
    idat_length: int
    adler: int  # of the band's raw scanlines
    raw_bytes: int  # the band's raw scanlines: rows * (1 + width * bytes per pixel)
    sha256: str

    @property
    def deflate(self) -> tuple[int, int]:
        """(start, length) of the deflate data: the zlib stream less its header and trailer."""
        return self.idat_offset + HEADER_BYTES, self.idat_length - HEADER_BYTES - TRAILER_BYTES


@dataclass(frozen=True)
class Piece:
    """Bytes of the output: literal, or `length` bytes of a stored object from `start`."""

    data: bytes = b""
    key: str = ""
    start: int = 0
    length: int = 0

    @property
    def size(self) -> int:
        return len(self.data) if not self.key else self.length


@dataclass(frozen=True)
class Layout:
    head: bytes  # signature, IHDR, palette: everything before the first IDAT
    chunks: tuple[tuple[Piece, ...], ...]  # each IDAT chunk's body
    etag: str

    @property
    def size(self) -> int:
        return len(self.head) + sum(12 + body_size(c) for c in self.chunks) + len(IEND)


IEND = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))


def body_size(chunk: Sequence[Piece]) -> int:
    return sum(p.size for p in chunk)


def part_of(key: str, doc: Any, bytes_per_pixel: int) -> Part:
    """A part's join facts from its JSON (parts/<i>.json); PartsIncomplete when they are not there."""
    try:
        idat, rows = doc["idat"], doc["rows"]
        raw = (rows[1] - rows[0]) * (1 + doc["width"] * bytes_per_pixel)
        offset, length, adler = (int(idat[k]) for k in ("offset", "length", "adler32"))
        return Part(key, offset, length, adler, raw, str(doc["sha256"]))
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise PartsIncomplete(f"{key} does not describe its compressed stream") from exc


def with_height(head: bytes, height: int) -> bytes:
    """The PNG's first bytes with IHDR's height set (and its CRC made again)."""
    ihdr = len(SIGNATURE)  # IHDR is always the first chunk: length, type, 13 bytes, CRC
    body = head[ihdr + 8 : ihdr + 8 + 13]
    body = body[:4] + struct.pack(">I", height) + body[8:]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + body))
    return head[: ihdr + 8] + body + crc + head[ihdr + 25 :]


def layout(head: bytes, height: int, parts: Sequence[Part]) -> Layout:
    """The joined PNG of `parts` (top to bottom) under part 0's `head` (bytes before its IDAT)."""
    adler = 1
    for part in parts:
        adler = adler32_combine(adler, part.adler, part.raw_bytes)
    chunks = []
    for i, part in enumerate(parts):
        start, length = part.deflate
        body = [Piece(key=part.key, start=start, length=length)]
        if i == 0:
            body.insert(0, Piece(zlib_header()))
        if i == len(parts) - 1:
            body.append(Piece(EMPTY_FINAL_BLOCK + struct.pack(">I", adler)))
        chunks.append(tuple(body))
    etag = hashlib.sha256("".join(p.sha256 for p in parts).encode()).hexdigest()
    return Layout(with_height(head, height), tuple(chunks), f'"{etag}"')


def read_layout(storage: Storage, prefix: str, tasks: int, height: int) -> Layout:
    """The layout of a split job's parts under `prefix` (blocking: small storage reads)."""
    parts, head, bpp = [], b"", 1
    for i in range(tasks):
        key = f"{prefix}parts/{i}"
        data = read_object(storage, f"{key}.json")
        if data is None:
            raise PartsIncomplete(f"part {i} has not been stored")
        doc = json.loads(data)
        if i == 0:
            offset = int(doc.get("idat", {}).get("offset", 0))
            head = b"".join(storage.iter_bytes(f"{key}.png", 0, offset - 8))
            bpp = 1 if head[len(SIGNATURE) + 8 + 9] == 3 else 3  # colour type: palette or RGB
        parts.append(part_of(f"{key}.png", doc, bpp))
    return layout(head, height, parts)


def iter_range(storage: Storage, plan: Layout, first: int, last: int) -> Iterator[bytes]:
    """The joined PNG's bytes first..last (inclusive), read from storage as they are sent."""
    pos = 0

    def clip(data: bytes, at: int) -> bytes:
        return data[max(0, first - at) : max(0, last + 1 - at)]

    if first < len(plan.head):
        yield clip(plan.head, 0)
    pos = len(plan.head)
    for body in plan.chunks:
        size = body_size(body)
        end = pos + 12 + size  # this chunk: [pos, end)
        if end > first and pos <= last:
            yield from _chunk(storage, body, size, pos, first, last)
        pos = end
    if last >= pos:
        yield clip(IEND, pos)


def _chunk(storage: Storage, body: Sequence[Piece], size: int, at: int, first: int,
           last: int) -> Iterator[bytes]:
    """One IDAT chunk at output position `at`, clipped to first..last. Its CRC covers the
    whole body: when the range reaches the CRC every byte of the body is read; otherwise only
    what the range covers."""
    def clip(data: bytes, pos: int) -> bytes:
        return data[max(0, first - pos) : max(0, last + 1 - pos)]

    head = struct.pack(">I", size) + b"IDAT"
    crc, pos = zlib.crc32(b"IDAT"), at + 8
    need_crc = last >= at + 8 + size
    if first < pos:
        yield clip(head, at)
    for piece in body:
        if not need_crc and (pos + piece.size <= first or pos > last):
            pos += piece.size
            continue
        if not piece.key:
            crc = zlib.crc32(piece.data, crc)
            if (out := clip(piece.data, pos)):
                yield out
            pos += piece.size
            continue
        skip = 0 if need_crc else max(0, first - pos)
        for data in storage.iter_bytes(piece.key, piece.start + skip, piece.length - skip):
            crc = zlib.crc32(data, crc)
            if (out := clip(data, pos + skip)):
                yield out
            skip += len(data)
        pos += piece.size
    if need_crc:
        yield clip(struct.pack(">I", crc), pos)
