"""The closed-form interior test: sound (what it accepts never escapes) and nearly complete."""

from __future__ import annotations

import numpy as np
import pytest

from job_image.interior import has_attracting_cycle, mandelbrot_interior
from job_image.params import FractalParams
from job_image.render import uses_periodicity

from .reference import escape, sample_grid


def attracting_fixed_point_or_2_cycle(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """|multiplier| of the fixed point (cardioid) and of the 2-cycle (bulb), from their
    closed forms in complex128: an independent way to say which samples are interior."""
    fixed = np.abs(1 - np.sqrt(1 - 4 * c))  # z* = (1 - sqrt(1 - 4c)) / 2, multiplier 2 z*
    cycle = np.abs(4 * (c + 1))  # the 2-cycle's multiplier
    return fixed, cycle


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_accepts_only_interior_and_nearly_all_of_it(dtype: type) -> None:
    p = FractalParams(width=1024, height=1024, center_x=-0.75, zoom=1.2)  # the yardstick view
    x, y = (a.astype(dtype) for a in sample_grid(p))
    inside = mandelbrot_interior(x, y)
    fixed, cycle = attracting_fixed_point_or_2_cycle(x.astype(np.complex128) + 1j * y.astype(np.float64))
    assert inside.dtype == bool and inside.shape == x.shape
    assert (np.minimum(fixed, cycle)[inside] < 1).all()  # sound: attracting cycle
    clearly = (np.minimum(fixed, cycle) < 0.98) & (np.abs(x + 1j * y.astype(np.float64) - 0.25) > 2e-3)
    assert inside[clearly].all()  # complete but for the margin band and the cusp
    assert 0.2 < inside.mean() < 0.25  # as the issue measured at 2048²: 22 %


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_accepted_samples_never_escape_by_brute_force(precision: str) -> None:
    """Near the boundary, where attraction is weakest: brute force in the working precision
    agrees with every sample the test accepts (and the frame has samples on both sides)."""
    for cx, cy, zoom in ((-0.75, 0.1, 40.0), (0.25, 0.0, 200.0), (0.28, 0.53, 60.0), (-1.25, 0.0, 90.0)):
        p = FractalParams(width=64, height=48, center_x=cx, center_y=cy, zoom=zoom, max_iter=3000,
                          precision=precision)
        dt = np.float32 if precision == "float32" else np.float64
        x, y = (a.astype(dt) for a in sample_grid(p))
        inside = mandelbrot_interior(x, y)
        counts, _ = escape(p)
        assert (counts[inside] == p.max_iter).all()
        assert 0 < inside.sum() < inside.size or (cx, cy) == (0.28, 0.53)


def test_known_points_in_both_precisions() -> None:
    x = np.array([0.0, -0.4, 0.3, 0.2499, -1.0, -1.26, -0.75])
    y = np.array([0.0, 0.3, 0.0, 0.0, 0.24, 0.0, 0.0])
    # centre, cardioid, right of the cusp, at the cusp (left out), bulb, left of the bulb,
    # the cardioid-bulb junction (multiplier -1 from both sides: left out)
    want = np.array([True, True, False, False, True, False, False])
    for dt in (np.float64, np.float32):
        assert np.array_equal(mandelbrot_interior(x.astype(dt), y.astype(dt)), want)


@pytest.mark.parametrize("c,cycle", [
    ((0.0, 0.0), True),  # the cardioid's centre: fixed point 0
    ((-1.0, 0.0), True),  # the period-2 bulb
    ((-0.123, 0.745), True),  # Douady's rabbit: a period-3 bulb, found by the cycle test
    ((-1.7549, 0.0), True),  # the airplane's period-3 component on the real axis
    ((-0.8, 0.156), False),  # escapes (slowly): its Julia set has no interior
    ((0.3, 0.0), False),  # right of the cusp: escapes
    ((0.25, 0.0), False),  # the cusp: parabolic, no exact cycle within the budget
])
def test_has_attracting_cycle(c: tuple[float, float], cycle: bool) -> None:
    assert has_attracting_cycle(*c) is cycle


def test_periodicity_per_kind_and_julia_constant() -> None:
    assert uses_periodicity(FractalParams(kind="mandelbrot"))
    assert uses_periodicity(FractalParams(kind="burning_ship"))
    assert uses_periodicity(FractalParams(kind="julia", julia_re=-0.123, julia_im=0.745))
    assert not uses_periodicity(FractalParams(kind="julia", julia_re=-0.8, julia_im=0.156))
