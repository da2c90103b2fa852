"""PNG encoding with Pillow: palette mode where each pixel is one colormap entry."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode(image: np.ndarray, lut: np.ndarray | None, compress_level: int = 1) -> bytes:
    """PNG bytes of `image`: (H, W) palette indices with `lut` (256, 3), or (H, W, 3) RGB.

    Palette mode stores one byte per pixel instead of three, which makes encoding about 3x
    faster and the file smaller; zlib level 1 keeps encoding well below kernel time.
    """
    if image.ndim == 2:
        if lut is None:
            raise ValueError("a palette image needs its lut")
        img = Image.fromarray(image)  # mode L, becomes P with the palette
        img.putpalette(lut.tobytes())
    else:
        img = Image.fromarray(image)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()
