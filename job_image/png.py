"""PNG encoding, compressed in bands on several threads and joined into one zlib stream.

The pigz way: each band of rows is deflated on its own into a segment that ends with a full
flush (byte-aligned, no reference to earlier data), so segments can be made independently,
in any order and on any thread, and simply concatenated. The zlib stream around them is a
2-byte header, the segments, an empty final block, and the Adler-32 of all the raw bytes,
which `adler32_combine` computes from the segments' own checksums without touching the data.
`join_zlib` is that join, usable for any segments (bands rendered separately become one PNG
without decompressing them). zlib's deflate releases the GIL, so threads run in parallel.

Palette mode stores one byte per pixel (the palette index) with filter None, as Pillow does;
RGB (supersampled) rows use the Sub filter, which suits smooth colour gradients.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

ADLER_MOD = 65521  # the largest prime below 2^16
SIGNATURE = b"\x89PNG\r\n\x1a\n"
EMPTY_FINAL_BLOCK = b"\x03\x00"  # BFINAL=1, fixed Huffman, end-of-block at once
SEGMENT_BYTES = 1 << 18  # raw bytes per deflate segment: enough to compress well, small enough to spread


def adler32_combine(adler1: int, adler2: int, len2: int) -> int:
    """Adler-32 of A+B from adler32(A), adler32(B) and len(B) (zlib's adler32_combine).

    Adler-32 is s1 = 1 + sum(bytes), s2 = sum of the running s1 values, both mod 65521. Over
    A+B, B's bytes each add A's s1 - 1 once more to s2 per byte of B: s1 = s1a + s1b - 1,
    s2 = s2a + s2b + len2 * (s1a - 1).
    """
    rem = len2 % ADLER_MOD
    s1a, s2a = adler1 & 0xFFFF, adler1 >> 16
    s1b, s2b = adler2 & 0xFFFF, adler2 >> 16
    s1 = (s1a + s1b - 1) % ADLER_MOD
    s2 = (s2a + s2b + rem * (s1a - 1)) % ADLER_MOD
    return (s2 << 16) | s1


@dataclass(frozen=True)
class Segment:
    """Raw deflate data ending on a full flush, with the Adler-32 and length of its input."""

    data: bytes
    adler: int
    size: int


def deflate_segment(raw: bytes | memoryview, level: int) -> Segment:
    """Deflate `raw` alone (no earlier data referenced) into a byte-aligned segment."""
    c = zlib.compressobj(level, zlib.DEFLATED, -15)  # raw deflate: no zlib header or trailer
    data = c.compress(raw) + c.flush(zlib.Z_FULL_FLUSH)
    return Segment(data, zlib.adler32(raw), len(raw))


def join_zlib(segments: Iterable[Segment], level: int = 1) -> bytes:
    """One zlib stream (RFC 1950) holding the segments' data in order."""
    parts, adler = [zlib_header(level)], 1
    for seg in segments:
        parts.append(seg.data)
        adler = adler32_combine(adler, seg.adler, seg.size)
    parts.append(EMPTY_FINAL_BLOCK)
    parts.append(struct.pack(">I", adler))
    return b"".join(parts)


def zlib_header(level: int = 1) -> bytes:
    """A zlib stream's 2-byte header (RFC 1950): CM 8, 32 KiB window; FLEVEL only informs
    (0 fastest ... 3 best); the check bits make the 16-bit value a multiple of 31."""
    cmf = 0x78
    flg = (0 if level <= 1 else 1 if level <= 5 else 2 if level == 6 else 3) << 6
    flg |= 31 - ((cmf << 8) | flg) % 31
    return bytes((cmf, flg))


def idat_span(data: bytes) -> tuple[int, int]:
    """(offset, length) of the body of a PNG's one IDAT chunk (what `png_bytes` writes)."""
    pos, found = len(SIGNATURE), None
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IDAT":
            if found is not None:
                raise ValueError("the PNG has more than one IDAT chunk")
            found = (pos + 8, length)
        pos += 12 + length
    if found is None:
        raise ValueError("the PNG has no IDAT chunk")
    return found


def stream_adler(data: bytes) -> int:
    """The Adler-32 that ends a PNG's (one IDAT's) zlib stream: of all its raw scanlines."""
    offset, length = idat_span(data)
    return int.from_bytes(data[offset + length - 4 : offset + length], "big")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bytes(width: int, height: int, lut: np.ndarray | None, idat: bytes) -> bytes:
    """A PNG file around an already compressed image stream: palette (8-bit indices with
    `lut` (N, 3)) or, without a lut, 8-bit RGB."""
    colour_type = 3 if lut is not None else 2
    head = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0))
    plte = _chunk(b"PLTE", np.ascontiguousarray(lut, np.uint8).tobytes()) if lut is not None else b""
    return SIGNATURE + head + plte + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def filtered_rows(rows: np.ndarray) -> bytes:
    """PNG scanlines of (h, w) palette indices (filter None) or (h, w, 3) RGB (filter Sub)."""
    h = rows.shape[0]
    flat = np.ascontiguousarray(rows).reshape(h, -1)
    out = np.empty((h, flat.shape[1] + 1), np.uint8)
    if rows.ndim == 2:
        out[:, 0] = 0
        out[:, 1:] = flat
    else:
        out[:, 0] = 1
        out[:, 1:4] = flat[:, :3]
        np.subtract(flat[:, 3:], flat[:, :-3], out=out[:, 4:])  # uint8 wraps mod 256
    return out.tobytes()


class Encoder:
    """Compresses bands of rows as they are added, on a pool of threads; `finish()` joins
    them into the PNG. Bands must be added top to bottom and cover the image exactly."""

    def __init__(self, width: int, height: int, lut: np.ndarray | None, level: int = 1,
                 threads: int = 0) -> None:
        self.width, self.height, self.lut, self.level = width, height, lut, level
        self._pool = ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1)
        self._segments: list[Future[Segment]] = []
        self._rows = 0

    def add(self, rows: np.ndarray) -> None:
        """Queue rows (palette indices (h, W) or RGB (h, W, 3)); they are copied first."""
        if rows.shape[1] != self.width or (rows.ndim == 2) != (self.lut is not None):
            raise ValueError(f"rows of shape {rows.shape} do not fit this {self.width}-wide image")
        bytes_per_row = rows[0].size + 1
        step = max(1, SEGMENT_BYTES // bytes_per_row)
        for r in range(0, rows.shape[0], step):
            raw = filtered_rows(rows[r:r + step])
            self._segments.append(self._pool.submit(deflate_segment, raw, self.level))
        self._rows += rows.shape[0]

    def finish(self) -> bytes:
        try:
            if self._rows != self.height:
                raise ValueError(f"{self._rows} rows added to a {self.height}-row image")
            idat = join_zlib((f.result() for f in self._segments), self.level)
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
        return png_bytes(self.width, self.height, self.lut, idat)


def encode(image: np.ndarray, lut: np.ndarray | None, compress_level: int = 1, threads: int = 0) -> bytes:
    """PNG bytes of `image`: (H, W) palette indices with `lut` (256, 3), or (H, W, 3) RGB.

    Palette mode stores one byte per pixel instead of three, which makes encoding about 3x
    faster and the file smaller; zlib level 1 keeps encoding well below kernel time.
    """
    if image.ndim == 2 and lut is None:
        raise ValueError("a palette image needs its lut")
    enc = Encoder(image.shape[1], image.shape[0], lut if image.ndim == 2 else None, compress_level, threads)
    enc.add(image)
    return enc.finish()
