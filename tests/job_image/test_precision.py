"""The one rule that picks float32, float64 or perturbation (job_image/precision.py)."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from job_image.precision import Plan, cheapest, log2_abs, plan, refusal, resolves

ONE, ZERO = Decimal(1), Decimal(0)


@pytest.mark.parametrize("text", ["1", "0.75", "3e-7", "123456789.123456789", "-2.5e300", "1e-300"])
def test_log2_abs_matches_math_where_floats_reach(text: str) -> None:
    assert log2_abs(Decimal(text)) == pytest.approx(math.log2(abs(float(text))), abs=1e-9)


def test_log2_abs_goes_past_floats() -> None:
    assert log2_abs(Decimal("1e5000")) == pytest.approx(5000 * math.log2(10))
    assert log2_abs(Decimal("-3e-5000")) == pytest.approx(math.log2(3) - 5000 * math.log2(10))
    assert log2_abs(ZERO) == -math.inf


def test_each_type_resolves_while_samples_are_several_ulps_apart() -> None:
    # 800 samples across, centre magnitude in [1, 2): float32's ulp is 2^-23, float64's 2^-52.
    float32_edge = 3 / 800 / (4 * 2.0**-23)
    assert resolves("float32", -ONE, ZERO, Decimal(float32_edge * 0.99), 800)
    assert not resolves("float32", -ONE, ZERO, Decimal(float32_edge * 1.01), 800)
    float64_edge = 3 / 800 / (4 * 2.0**-52)
    assert cheapest(-ONE, ZERO, Decimal(float64_edge * 0.99), 800) == "float64"
    assert cheapest(-ONE, ZERO, Decimal(float64_edge * 1.01), 800) == "perturbation"
    # a larger centre has a coarser ulp: the same zoom no longer resolves
    assert cheapest(Decimal(-1), ZERO, Decimal("1e12"), 800) == "float64"
    assert cheapest(Decimal(-1000), ZERO, Decimal("1e12"), 800) == "perturbation"


def test_old_default_frames_still_get_float32() -> None:
    for zoom in ("1", "1.2", "18", "400", "2000"):
        assert plan("auto", Decimal("-0.75"), Decimal("0.1"), Decimal(zoom), 1024) == Plan("float32")


def test_perturbation_deltas_leave_float64_past_its_range() -> None:
    assert plan("auto", -ONE, ZERO, Decimal("1e100"), 800) == Plan("perturbation", "float64")
    assert plan("auto", -ONE, ZERO, Decimal("1e280"), 800) == Plan("perturbation", "float64")
    assert plan("auto", -ONE, ZERO, Decimal("1e300"), 800) == Plan("perturbation", "floatexp")


def test_refusals_are_sentences() -> None:
    assert refusal("mandelbrot", "auto", -ONE, ZERO, Decimal("1e900"), 800) is None
    text = refusal("mandelbrot", "float64", -ONE, ZERO, Decimal("1e20"), 800)
    assert text is not None and text.startswith("float64 cannot resolve") and "perturbation" in text
    assert "3.75e-23 apart" in text
    ship = refusal("burning_ship", "perturbation", -ONE, ZERO, ONE, 800)
    assert ship is not None and "built for mandelbrot" in ship
