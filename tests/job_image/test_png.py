"""Parallel PNG encoding: adler32_combine, joining deflate segments, and the PNG around them."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from job_image import colour, png


@pytest.mark.parametrize("sizes", [[0, 0], [1, 0], [0, 7], [5, 11], [65521, 3], [70_000, 65_521, 1, 200_000]])
def test_adler32_combine_matches_zlib_on_the_concatenation(sizes: list[int]) -> None:
    rng = np.random.default_rng(len(sizes) + sum(sizes))
    parts = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in sizes]
    parts[-1] = b"\xff" * len(parts[-1])  # high bytes push both sums past the modulus
    combined = zlib.adler32(parts[0])
    for part in parts[1:]:
        combined = png.adler32_combine(combined, zlib.adler32(part), len(part))
    assert combined == zlib.adler32(b"".join(parts))


@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_segments_made_separately_join_into_one_zlib_stream(level: int) -> None:
    rng = np.random.default_rng(level)
    raw = [rng.integers(0, 4, n, dtype=np.uint8).tobytes() for n in (1000, 0, 70_000, 3)]
    segments = [png.deflate_segment(r, level) for r in reversed(raw)][::-1]  # any order, any thread
    stream = png.join_zlib(segments, level)
    assert zlib.decompress(stream) == b"".join(raw)  # checks the header bits and the Adler-32 too
    assert png.join_zlib([], level) == zlib.compress(b"", level)[:2] + b"\x03\x00" + b"\x00\x00\x00\x01"


def test_join_detects_a_wrong_checksum() -> None:
    seg = png.deflate_segment(b"abc", 1)
    bad = png.Segment(seg.data, seg.adler ^ 1, seg.size)
    with pytest.raises(zlib.error, match="incorrect data check"):
        zlib.decompress(png.join_zlib([bad]))


def fractal_like(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return ((np.hypot(x - w / 3, y - h / 2) / 3) % 255 + 1).astype(np.uint8)


@pytest.mark.parametrize("threads", [1, 3])
def test_palette_png_decodes_and_is_no_bigger_than_pillows(threads: int) -> None:
    lut = colour.palette("twilight")
    image = fractal_like(700, 517)
    data = png.encode(image, lut, 1, threads)
    img = Image.open(io.BytesIO(data))
    assert img.mode == "P" and img.size == (517, 700)
    assert np.array_equal(np.asarray(img), image)
    assert np.array_equal(np.asarray(img.convert("RGB")), lut[image])
    ref = io.BytesIO()
    pil = Image.fromarray(image)
    pil.putpalette(lut.tobytes())
    pil.save(ref, format="PNG", compress_level=1)
    assert len(data) <= 1.05 * len(ref.getvalue())


def test_bands_added_separately_make_the_same_image() -> None:
    image = np.random.default_rng(2).integers(0, 256, (300, 41, 3), dtype=np.uint8)
    enc = png.Encoder(41, 300, None, threads=2)
    for r0 in (0, 1, 150, 299):  # uneven bands
        enc.add(image[r0:{0: 1, 1: 150, 150: 299, 299: 300}[r0]])
    img = Image.open(io.BytesIO(enc.finish()))
    assert img.mode == "RGB" and np.array_equal(np.asarray(img), image)


def test_encoder_refuses_rows_that_do_not_fit() -> None:
    enc = png.Encoder(8, 4, colour.palette("grey"))
    with pytest.raises(ValueError, match="do not fit"):
        enc.add(np.zeros((2, 9), np.uint8))
    enc.add(np.zeros((2, 8), np.uint8))
    with pytest.raises(ValueError, match="2 rows added to a 4-row image"):
        enc.finish()
