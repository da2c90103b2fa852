"""Smooth colouring: palettes, the index formula, and supersample averaging.

Palette index 0 is the interior (never escaped, black); 1..255 run along the colormap. The
position along the map is t = sqrt(nu / max_iter), with the continuous escape count
nu = n + 1 - log2(log2|z_n|), so colours blend smoothly between integer counts and the
square root spreads the map over the low counts most of a frame shows.

The kernel computes the index itself while |z_n| is at hand (`shade` in kernels/fractal.cl),
which costs it next to nothing; `indices` here is the same formula in NumPy, the reference
the tests hold the kernel to. Pixels are then a palette lookup (PNG palette mode), or for
supersampling an average of the looked-up colours.
"""

from __future__ import annotations

from functools import cache

import numpy as np

# Anchor colours, spaced evenly along each map; the LUT interpolates linearly between them.
# viridis/magma/inferno/twilight follow matplotlib's maps at 5-7 anchors.
ANCHORS: dict[str, list[tuple[int, int, int]]] = {
    "classic": [(0, 7, 100), (32, 107, 203), (237, 255, 255), (255, 170, 0), (0, 2, 0)],
    "viridis": [(68, 1, 84), (65, 68, 135), (42, 120, 142), (34, 168, 132), (122, 209, 81), (253, 231, 37)],
    "magma": [(0, 0, 4), (59, 15, 112), (140, 41, 129), (222, 73, 104), (254, 159, 109), (252, 253, 191)],
    "inferno": [(0, 0, 4), (66, 10, 104), (147, 38, 103), (221, 81, 58), (252, 165, 10), (252, 255, 164)],
    "twilight": [(226, 217, 226), (127, 161, 196), (94, 67, 165), (47, 20, 54), (149, 55, 84),
                 (201, 139, 121), (226, 217, 226)],
    "fire": [(0, 0, 0), (128, 0, 0), (230, 40, 0), (255, 160, 0), (255, 240, 90), (255, 255, 255)],
    "ice": [(0, 0, 0), (8, 24, 88), (24, 84, 184), (64, 168, 224), (170, 230, 250), (255, 255, 255)],
    "grey": [(0, 0, 0), (255, 255, 255)],
}
INTERIOR = (0, 0, 0)
COLOURS = 255  # palette entries for escaped samples (index 0 is the interior)


@cache
def palette(name: str) -> np.ndarray:
    """(256, 3) uint8: index 0 the interior, 1..255 the colormap `name` from start to end."""
    anchors = np.asarray(ANCHORS[name], dtype=np.float64)
    at = np.linspace(0.0, 1.0, len(anchors))
    t = np.linspace(0.0, 1.0, COLOURS)
    lut = np.empty((COLOURS + 1, 3), np.uint8)
    lut[0] = INTERIOR
    for ch in range(3):
        lut[1:, ch] = np.rint(np.interp(t, at, anchors[:, ch]))
    lut.setflags(write=False)
    return lut


def fast_log2(x: np.ndarray) -> np.ndarray:
    """log2 of positive normal float32 values to ~1e-3, continuous and increasing: the
    exponent plus a cubic in the mantissa, exact at both ends. The kernel uses the same
    operations (`fast_log2` in kernels/fractal.cl), because it is far cheaper there than a
    full log2 and a colour index needs no more."""
    bits = np.asarray(x, np.float32).view(np.int32)
    e = (((bits >> 23) & 0xFF) - 127).astype(np.float32)
    f = ((bits & 0x007FFFFF) | 0x3F800000).view(np.float32) - np.float32(1)
    c1, c2, c3 = np.float32(1.4208645), np.float32(-0.57725065), np.float32(0.15638611)
    return e + f * (c1 + f * (c2 + f * c3))


def indices(counts: np.ndarray, mags: np.ndarray, max_iter: int) -> np.ndarray:
    """Palette indices (uint8, same shape) from escape counts and |z|^2 at escape.

    The NumPy twin of the kernel's `shade`: index 0 where the count reached max_iter,
    else 1 + floor(254 * sqrt(clip(nu / max_iter, 0, 1))), nu = n + 1 - log2(log2(|z|^2) / 2).
    """
    escaped = counts < max_iter
    # escaped samples have |z|^2 > 4, so both logarithms see normal positive numbers;
    # interior samples get a harmless placeholder and index 0 below.
    mag = np.where(escaped, np.asarray(mags, np.float32), np.float32(16))
    nu = counts.astype(np.float32) + np.float32(1) - fast_log2(fast_log2(mag) * np.float32(0.5))
    t = np.sqrt(np.clip(nu * np.float32(1.0 / max_iter), np.float32(0), np.float32(1)))
    idx = (t * np.float32(COLOURS - 1)).astype(np.uint8) + np.uint8(1)
    idx[~escaped] = 0
    return idx


def downsample(idx: np.ndarray, lut: np.ndarray, n: int) -> np.ndarray:
    """Average each n x n block of samples' colours into one RGB pixel (box filter)."""
    rgb = np.take(lut, idx, axis=0)  # (rows, cols, 3) uint8
    rows, cols = idx.shape[0] // n, idx.shape[1] // n
    total = rgb.reshape(rows, n, cols, n, 3).sum(axis=(1, 3), dtype=np.uint32)
    return ((total + n * n // 2) // (n * n)).astype(np.uint8)
