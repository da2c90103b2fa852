"""Render arrays: which part of a request task `i` renders (docs/design.md, "Render arrays").

One request of several tasks is one job; every task gets the same environment (the same pod
template on Kubernetes) plus its index, `JOB_COMPLETION_INDEX`. The array's shape travels as
`RENDER_ARRAY` (JSON of `RenderArray`), and each task derives its own piece from it here:
- `split: N`: band i of N bands of rows, as equal as rows allow, the i-th from the top, sampled
  exactly where the whole frame samples those rows (so the bands join into the single render);
- `frames: F, zoom_to: Z`: frame k of an exponential zoom at `zoom * (Z/zoom)^(k/(F-1))`.
A job without `RENDER_ARRAY` is an array of one task: the whole frame.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Context, Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .indexes import task_of
from .params import FractalParams

ZOOM_DIGITS = Context(prec=60)  # enough for any frame's zoom, whatever its depth


class RenderArray(BaseModel):
    """The shape of a render array: `split` bands of rows, or `frames` of a zoom to `zoom_to`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    split: int = Field(1, ge=1, description="bands of rows")
    frames: int = Field(1, ge=1, description="frames of a zoom video")
    zoom_to: float | str | None = Field(None, description="the last frame's zoom")

    @model_validator(mode="after")
    def _one_kind(self) -> RenderArray:
        if self.split > 1 and self.frames > 1:
            raise ValueError("an array is either split or an animation, not both")
        if self.frames > 1 and self.zoom_to is None:
            raise ValueError("an animation needs zoom_to")
        return self

    @property
    def tasks(self) -> int:
        return self.frames if self.frames > 1 else self.split

    @property
    def is_video(self) -> bool:
        return self.frames > 1


@dataclass(frozen=True)
class Task:
    """What task `index` renders: `params` (a frame's own zoom), and for a band the pixel rows
    [first, end) of that frame; `rows` None is the whole frame."""

    index: int
    params: FractalParams
    rows: tuple[int, int] | None = None

    @property
    def height(self) -> int:
        return self.rows[1] - self.rows[0] if self.rows else self.params.height


def band(height: int, split: int, index: int) -> tuple[int, int]:
    """Pixel rows [first, end) of band `index` of `split`: sizes differ by one row at most."""
    return index * height // split, (index + 1) * height // split


def frame_zoom(zoom: float | str, zoom_to: float | str, frames: int, k: int) -> float | str:
    """Frame k's zoom, `zoom * (zoom_to/zoom)^(k/(frames-1))`: the view shrinks by the same
    factor every frame. Computed in decimal; where either end is a string (deep zoom, past
    float64's range) every frame between is a string too. The first and last frames are
    exactly `zoom` and `zoom_to`."""
    if k == 0 or frames < 2:
        return zoom
    if k == frames - 1:
        return zoom_to
    d = ZOOM_DIGITS
    z0, z1 = Decimal(str(zoom)), Decimal(str(zoom_to))
    value = d.multiply(z0, d.power(d.divide(z1, z0), d.divide(Decimal(k), Decimal(frames - 1))))
    return f"{value:e}" if isinstance(zoom, str) or isinstance(zoom_to, str) else float(value)


def task(params: FractalParams, array: RenderArray | None, index: int) -> Task:
    """Task `index` of `array` over the request `params`; ValueError for an index outside it."""
    array = array or RenderArray()
    if not 0 <= index < array.tasks:
        raise ValueError(f"task {index} is outside the array's {array.tasks} tasks")
    if array.is_video:
        assert array.zoom_to is not None
        zoom = frame_zoom(params.zoom, array.zoom_to, array.frames, index)
        return Task(index, params.model_copy(update={"zoom": zoom}))
    if array.split == 1:
        return Task(index, params)
    return Task(index, params, band(params.height, array.split, index))


def from_env(env: dict[str, str]) -> tuple[RenderArray | None, int]:
    """`RENDER_ARRAY` and the task: `JOB_COMPLETION_INDEX` (absent: task 0), or its place in
    `TASK_INDEXES` where a Job runs only those tasks (see indexes.py); ValueError with a
    sentence when any is malformed."""
    raw, index = env.get("RENDER_ARRAY", "").strip(), env.get("JOB_COMPLETION_INDEX", "").strip()
    try:
        i = int(index) if index else 0
    except ValueError:
        raise ValueError(f"JOB_COMPLETION_INDEX {index!r} is not a number") from None
    i = task_of(i, env.get("TASK_INDEXES", "").strip())  # a retry's Job runs only some tasks
    if not raw:
        return None, i
    try:
        data: Any = json.loads(raw)
        return RenderArray.model_validate(data), i
    except (ValueError, ValidationError) as exc:
        raise ValueError(f"RENDER_ARRAY is not a valid array: {exc}") from None
