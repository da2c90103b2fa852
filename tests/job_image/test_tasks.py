"""Render arrays' task geometry (job_image/tasks.py): bands, frame zooms, the environment."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from job_image.params import FractalParams
from job_image.tasks import RenderArray, band, frame_zoom, from_env, task


@pytest.mark.parametrize("height, split", [(600, 1), (600, 4), (601, 4), (7, 7), (1000, 3), (5, 2)])
def test_bands_cover_the_frame_top_to_bottom_as_equal_as_rows_allow(height: int, split: int) -> None:
    bands = [band(height, split, i) for i in range(split)]
    assert bands[0][0] == 0 and bands[-1][1] == height
    assert all(a[1] == b[0] for a, b in zip(bands, bands[1:], strict=False))
    sizes = [end - first for first, end in bands]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_frame_zoom_is_exponential_from_zoom_to_zoom_to() -> None:
    zooms = [frame_zoom(2.0, 2.0e6, 7, k) for k in range(7)]
    assert zooms[0] == 2.0 and zooms[-1] == 2.0e6
    ratios = [b / a for a, b in zip(zooms, zooms[1:], strict=False)]  # type: ignore[operator]
    assert ratios == pytest.approx([10.0] * 6)


def test_frame_zoom_keeps_decimal_strings_past_float_range() -> None:
    middle = frame_zoom("1", "1e400", 3, 1)
    assert isinstance(middle, str) and float(middle.replace("e+", "e")) == pytest.approx(1e200)
    assert frame_zoom("1", "1e400", 3, 2) == "1e400"
    # the API's zoom is a number by default: a string zoom_to alone keeps the frames strings
    middle = frame_zoom(1.0, "1e400", 5, 2)
    assert isinstance(middle, str) and Decimal(middle) == Decimal("1e200")
    assert frame_zoom(1.0, "1e400", 2, 1) == "1e400" and frame_zoom(1.0, "1e400", 2, 0) == 1.0


def test_task_of_a_split_is_a_band_and_of_an_animation_a_frame() -> None:
    p = FractalParams(width=100, height=10, zoom=1.0)
    t = task(p, RenderArray(split=3), 2)
    assert t.rows == (6, 10) and t.height == 4 and t.params == p
    f = task(p, RenderArray(frames=3, zoom_to=100.0), 1)
    assert f.rows is None and f.params.zoom == pytest.approx(10.0)
    assert task(p, None, 0).rows is None
    with pytest.raises(ValueError, match="outside"):
        task(p, RenderArray(split=3), 3)


def test_an_array_is_split_or_animation() -> None:
    with pytest.raises(ValueError, match="not both"):
        RenderArray(split=2, frames=3, zoom_to=2.0)
    with pytest.raises(ValueError, match="zoom_to"):
        RenderArray(frames=3)
    assert RenderArray(split=4).tasks == 4 and RenderArray(frames=5, zoom_to=9.0).tasks == 5


def test_from_env_reads_the_array_and_the_index() -> None:
    assert from_env({}) == (None, 0)
    env = {"RENDER_ARRAY": json.dumps({"split": 4}), "JOB_COMPLETION_INDEX": "3"}
    assert from_env(env) == (RenderArray(split=4), 3)
    with pytest.raises(ValueError, match="JOB_COMPLETION_INDEX"):
        from_env({"JOB_COMPLETION_INDEX": "x"})
    with pytest.raises(ValueError, match="RENDER_ARRAY"):
        from_env({"RENDER_ARRAY": "{\"split\": 0}"})
