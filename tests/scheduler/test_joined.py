"""A split render's PNG joined from its parts (scheduler/api/joined.py): the bands' deflate
streams concatenated, their Adler-32s combined, every chunk's CRC right, any range exact."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from job_image import png
from job_image.storage import LocalStorage
from scheduler.api import joined

LUT = np.stack([np.arange(256)] * 3, axis=1).astype(np.uint8)


def store_parts(storage: LocalStorage, image: np.ndarray, cuts: list[int], lut: np.ndarray | None) -> None:
    for i, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False)):
        data = png.encode(image[a:b], lut)
        offset, length = png.idat_span(data)
        doc = {"width": image.shape[1], "rows": [a, b], "sha256": hashlib.sha256(data).hexdigest(),
               "idat": {"offset": offset, "length": length, "adler32": png.stream_adler(data)}}
        storage.put_bytes(f"p/parts/{i}.png", data, "image/png")
        storage.put_bytes(f"p/parts/{i}.json", json.dumps(doc).encode(), "application/json")


def chunks_are_sound(data: bytes) -> list[bytes]:
    pos, kinds = 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0] == zlib.crc32(kind + body)
        kinds.append(kind)
        pos += 12 + length
    return kinds


@pytest.mark.parametrize("rgb", [False, True], ids=["palette", "rgb"])
def test_joined_parts_are_the_whole_image(tmp_path: Path, rgb: bool) -> None:
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (203, 37, 3) if rgb else (203, 37), dtype=np.uint8)
    cuts = [0, 1, 50, 51, 120, 203]  # bands of very different sizes, one of a single row
    storage = LocalStorage(tmp_path)
    store_parts(storage, image, cuts, None if rgb else LUT)
    plan = joined.read_layout(storage, "p/", len(cuts) - 1, image.shape[0])
    data = b"".join(joined.iter_range(storage, plan, 0, plan.size - 1))
    assert len(data) == plan.size
    assert chunks_are_sound(data) == [b"IHDR", *([] if rgb else [b"PLTE"]), *[b"IDAT"] * 5, b"IEND"]
    decoded = np.asarray(Image.open(io.BytesIO(data)))
    assert np.array_equal(decoded, image)
    # every range is the same bytes, whichever chunk, CRC or header it starts or ends in
    for first in range(0, plan.size, 97):
        for last in (first, min(plan.size - 1, first + 13), min(plan.size - 1, first + 400)):
            assert b"".join(joined.iter_range(storage, plan, first, last)) == data[first : last + 1]


def test_a_missing_part_is_named(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    store_parts(storage, np.zeros((10, 4), np.uint8), [0, 5, 10], LUT)
    with pytest.raises(joined.PartsIncomplete, match="part 2"):
        joined.read_layout(storage, "p/", 3, 10)
