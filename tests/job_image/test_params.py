"""Each kind's default view (no centre given) shows its whole set: checked with the NumPy
reference, no sample on the frame's border is in the set, and the set is in the frame."""

from __future__ import annotations

import numpy as np
import pytest

from job_image.params import FractalParams
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
