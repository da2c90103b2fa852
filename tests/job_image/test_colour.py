"""Colouring and PNG encoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from job_image import colour, png
from job_image.params import Colormap

COLORMAPS = list(Colormap.__args__)


@pytest.mark.parametrize("name", COLORMAPS)
def test_every_colormap_has_a_palette(name: str) -> None:
    lut = colour.palette(name)
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert tuple(lut[0]) == colour.INTERIOR
    assert tuple(lut[1]) == colour.ANCHORS[name][0] and tuple(lut[-1]) == colour.ANCHORS[name][-1]
    assert len({tuple(c) for c in lut[1:]}) > 50  # a real gradient, not a few flat bands


def test_indices_interior_and_smooth_order() -> None:
    max_iter = 100
    counts = np.array([[100, 1, 2, 2, 50, 99]], np.uint32)
    mags = np.array([[1.0, 5.0, 16.0, 5.0, 10.0, 10.0]], np.float32)
    idx = colour.indices(counts, mags, max_iter)
    assert idx.dtype == np.uint8 and idx[0, 0] == 0  # never escaped: interior
    assert (idx[0, 1:] >= 1).all()
    # a larger |z| at the same count means it escaped "earlier": a smaller continuous count
    assert idx[0, 2] <= idx[0, 3]
    assert idx[0, 1] <= idx[0, 3] <= idx[0, 4] <= idx[0, 5]


def test_downsample_averages_blocks() -> None:
    lut = np.zeros((256, 3), np.uint8)
    lut[1] = (200, 100, 0)
    idx = np.array([[0, 1, 1, 1], [0, 1, 1, 1]], np.uint8)  # 2x2 blocks: half and all of colour 1
    out = colour.downsample(idx, lut, 2)
    assert out.shape == (1, 2, 3)
    assert tuple(out[0, 0]) == (100, 50, 0) and tuple(out[0, 1]) == (200, 100, 0)


def test_palette_png_round_trips() -> None:
    lut = colour.palette("viridis")
    image = np.arange(256, dtype=np.uint8).reshape(16, 16)
    data = png.encode(image, lut)
    img = Image.open(io.BytesIO(data))
    assert img.mode == "P" and img.size == (16, 16)
    assert np.array_equal(np.asarray(img.convert("RGB")), lut[image])


def test_rgb_png_round_trips() -> None:
    image = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    img = Image.open(io.BytesIO(png.encode(image, None)))
    assert img.mode == "RGB" and np.array_equal(np.asarray(img), image)


def test_fast_log2_is_close_continuous_and_increasing() -> None:
    x = np.geomspace(1.0, 1e30, 200_001).astype(np.float32)
    y = colour.fast_log2(x)
    assert np.abs(y - np.log2(x.astype(np.float64))).max() < 2e-3
    assert (np.diff(y) >= 0).all()
