"""The cost probe: exact on frames no larger than the probe, close on larger ones."""

from __future__ import annotations

import numpy as np
import pytest

from job_image.params import FractalParams
from scheduler.admission.cost import (
    PROBE_SAMPLES,
    _tail_mean,
    escape_counts,
    estimated_iterations,
    probe_axes,
)
from tests.job_image.reference import escape

SMALL = [  # at most PROBE_SAMPLES samples: the probe iterates every one of them
    {"kind": "mandelbrot", "width": 64, "height": 48, "max_iter": 300},
    {"kind": "mandelbrot", "width": 32, "height": 24, "supersample": 2, "zoom": 8, "center_x": -0.75,
     "center_y": 0.1, "max_iter": 2000},
    {"kind": "julia", "width": 60, "height": 40, "center_x": 0.0, "max_iter": 500},
    {"kind": "julia", "width": 60, "height": 40, "center_x": 0.0, "julia_re": -0.4, "julia_im": 0.6,
     "max_iter": 800},  # connected: a large interior, found by the cycle check
    {"kind": "burning_ship", "width": 64, "height": 48, "center_x": -0.4, "center_y": -0.5, "max_iter": 400},
]


@pytest.mark.parametrize("fields", SMALL, ids=lambda f: f"{f['kind']}-{f['max_iter']}")
def test_small_frames_are_exact(fields: dict) -> None:
    p = FractalParams(**fields, precision="float64")
    counts, _ = escape(p)
    assert estimated_iterations(p) == int(counts.sum(dtype=np.uint64))


def test_large_frame_is_close_and_probe_is_bounded() -> None:
    """A 400x300x2 frame is 480,000 samples; the probe iterates at most PROBE_SAMPLES of them."""
    p = FractalParams(width=400, height=300, supersample=2, max_iter=200, precision="float64")
    x, _, samples = probe_axes(p)
    assert x.size <= PROBE_SAMPLES and samples == 800 * 600
    exact = int(escape(p)[0].sum(dtype=np.uint64))
    assert 0.9 < estimated_iterations(p) / exact < 1.1


def test_tail_is_extrapolated_between_step_and_cap() -> None:
    p = FractalParams(width=16, height=16, max_iter=100_000, center_x=-0.75, center_y=0.0, zoom=400)
    x, y, _ = probe_axes(p)
    counts = escape_counts(p, x, y, max_steps=256)
    assert counts.min() >= 0 and counts.max() <= 100_000
    assert _tail_mean(256, 100, 100, 10_000) == 10_000  # no decay: interior-like
    assert 256 < _tail_mean(256, 100, 50, 10_000) < 10_000
