"""Each kind's default view (no centre given) shows its whole set: checked with the NumPy
reference, no sample on the frame's border is in the set, and the set is in the frame."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from pydantic import ValidationError

from job_image.params import FractalParams, Limits, describe_error
from job_image.precision import Plan
from tests.job_image.reference import escape


@pytest.mark.parametrize("kind", ["mandelbrot", "julia", "burning_ship"])
def test_the_default_view_shows_the_whole_set(kind: str) -> None:
    params = FractalParams(kind=kind, width=200, height=150, max_iter=200, precision="float64")
    counts, _ = escape(params)
    inside = counts == params.max_iter
    assert inside.sum() > 0.02 * inside.size  # the set is there, and not a speck
    border = np.concatenate([inside[0], inside[-1], inside[:, 0], inside[:, -1]])
    assert not border.any(), f"{kind}'s default view cuts the set off"


def test_a_given_centre_is_kept_and_the_other_defaults_per_kind() -> None:
    assert (FractalParams(kind="julia").center_x, FractalParams(kind="julia").center_y) == (0.0, 0.0)
    assert FractalParams().center_x == -0.5  # docs/design.md's defaults are mandelbrot's
    ship = FractalParams(kind="burning_ship", center_x=1.0)
    assert ship.center_x == 1.0 and ship.center_y == -0.5
    with pytest.raises(ValueError):
        FractalParams.model_validate({"kind": ["julia"]})  # not a kind: a validation error, not a crash


DEEP_X = "-1.7499576837060935036022145060706997072711"  # more digits than any float holds


def test_coordinates_are_kept_exactly_as_given() -> None:
    p = FractalParams.model_validate({"center_x": DEEP_X, "center_y": "0.0", "zoom": "1e400"})
    assert (p.center_x, p.center_y, p.zoom) == (DEEP_X, "0.0", "1e400")
    again = FractalParams.model_validate_json(p.model_dump_json())  # FRACTAL_PARAMS round trip
    assert again.center_x == DEEP_X and again.zoom == "1e400"
    assert FractalParams(center_x=-0.75, zoom=2).center_x == -0.75  # numbers stay numbers
    assert p.float_view() == (-1.7499576837060935, 0.0, float("inf"))


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("zoom", "0", "greater than 0"),
        ("zoom", "-1e5", "greater than 0"),
        ("zoom", 0.0, "greater than 0"),
        ("center_x", "nan", "decimal number"),
        ("center_x", "1,5", "decimal number"),
        ("center_x", " 1", "decimal number"),
        ("center_x", "1e1234567890", "decimal number"),
        ("center_x", True, "number"),
        ("center_y", "1e400", "float64's range"),
    ],
)
def test_bad_coordinates_are_refused_with_a_sentence(field: str, value: object, words: str) -> None:
    with pytest.raises(ValidationError) as err:
        FractalParams.model_validate({field: value})
    assert words in describe_error(err.value) and field in describe_error(err.value)


def test_explicit_float_types_that_cannot_resolve_are_refused_naming_auto() -> None:
    assert FractalParams(zoom=1e3, precision="float32").plan() == Plan("float32")
    for precision, zoom in (("float32", "1e6"), ("float64", "1e14")):
        with pytest.raises(ValidationError) as err:
            FractalParams(zoom=zoom, precision=precision)
        assert "precision auto" in describe_error(err.value)
    assert FractalParams(zoom="1e14", precision="perturbation").plan().precision == "perturbation"


def test_deep_burning_ship_names_the_depth_limit() -> None:
    assert FractalParams(kind="burning_ship", zoom=1e9).plan() == Plan("float64")
    with pytest.raises(ValidationError) as err:
        FractalParams(kind="burning_ship", zoom="1e20")
    assert "renders to zoom about" in describe_error(err.value)


def test_digits_and_zoom_are_bounded_by_the_limits() -> None:
    limits = Limits(max_coordinate_digits=30, max_zoom=Decimal("1e50"))
    assert FractalParams(center_x=DEEP_X).limit_problem(limits) == "center_x has 41 digits; the limit is 30"
    assert "above the limit of 1E+50" in FractalParams(zoom="1e51").limit_problem(limits)
    assert FractalParams(zoom="1e50", center_x=DEEP_X[:20]).limit_problem(limits) is None
    env = Limits.from_env({"MAX_ZOOM": "1e2000", "MAX_COORDINATE_DIGITS": "3000"})
    assert (env.max_zoom, env.max_coordinate_digits) == (Decimal("1e2000"), 3000)
    with pytest.raises(ValueError, match="MAX_ZOOM"):
        Limits.from_env({"MAX_ZOOM": "lots"})
