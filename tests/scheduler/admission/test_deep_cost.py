"""The deep probe (perturbation, BLA, long double deltas) against an arbitrary-precision brute
force of docs/design.md's mapping, written here: gmpy2, no perturbation, no approximation."""

from __future__ import annotations

from decimal import Decimal, localcontext

import gmpy2
import numpy as np
import pytest

from job_image.params import FractalParams
from scheduler.admission.cost import estimated_iterations
from scheduler.admission.deep_cost import ROUNDS, deep_counts

# (centre x, centre y, zoom, max_iter); 640 samples wide
I_POINT = ("0", "1.000000000000000000000007")  # near c = i, a Misiurewicz point
NUCLEUS_998 = ("-0.743643887037158870778064543493642575047609962321255060213887",
               "0.131825904205312292821097354874767265262988599679042974937476")  # a period-998 minibrot
FRAMES = {
    "misiurewicz-1e20": (*I_POINT, "1e20", 1000),
    "minibrot-2e12": (*NUCLEUS_998, "2e12", 5000),  # BLA across periods of the reference
    "misiurewicz-1e400": ("0", "1", "1e400", 3000),  # deltas below float64's range
}
WIDTH = 640


def grid(side: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (in samples) of a side x side subgrid of a 640 x 480 frame, x right, y up."""
    cols = ((np.arange(side) + 0.5) * WIDTH / side).astype(int) + 0.5 - WIDTH / 2
    rows = -(((np.arange(side) + 0.5) * 480 / side).astype(int) + 0.5 - 240)
    dx, dy = np.meshgrid(cols, rows)
    return dx.ravel(), dy.ravel()


def brute(cx: Decimal, cy: Decimal, spacing: Decimal, dx: np.ndarray, dy: np.ndarray,
          max_iter: int) -> np.ndarray:
    """Escape counts by iterating z -> z^2 + c from 0 in MPFR, at a precision past the spacing."""
    bits = int(-spacing.log10() * Decimal(3.33)) + 64
    counts = []
    with gmpy2.context(precision=bits), localcontext(prec=bits):  # c to every digit
        for ox, oy in zip(dx, dy, strict=True):
            c = gmpy2.mpc(gmpy2.mpfr(str(cx + spacing * Decimal(float(ox)))),
                          gmpy2.mpfr(str(cy + spacing * Decimal(float(oy)))))
            z, n = gmpy2.mpc(0), 0
            while n < max_iter and gmpy2.norm(z) <= 4:
                z, n = z * z + c, n + 1
            counts.append(n)
    return np.array(counts)


@pytest.mark.parametrize("frame", FRAMES.values(), ids=FRAMES.keys())
def test_counts_match_the_brute_force(frame: tuple[str, str, str, int]) -> None:
    x, y, zoom, max_iter = frame
    cx, cy, spacing = Decimal(x), Decimal(y), Decimal(3) / Decimal(zoom) / WIDTH
    dx, dy = grid()
    found = deep_counts(cx, cy, spacing, dx, dy, max_iter)
    exact = brute(cx, cy, spacing, dx, dy, max_iter)
    assert not np.isnan(found.counts).any()
    assert np.sum(found.counts == exact) >= 14  # of 16: BLA may move an edge sample by a few
    assert abs(found.counts.mean() / exact.mean() - 1) < 0.01


def test_the_rounds_are_bounded() -> None:
    """Inside a minibrot nothing escapes: the probe stops after ROUNDS rounds and leaves them."""
    x, y = NUCLEUS_998
    found = deep_counts(Decimal(x), Decimal(y), Decimal(3) / Decimal("1e20") / WIDTH, *grid(2), 100_000)
    assert np.isnan(found.counts).all() and found.step <= ROUNDS * 2**15
    assert 0 < found.mid_step < found.step < 100_000


@pytest.mark.parametrize(("center", "zoom", "precision"), [
    (I_POINT, "1e20", "auto"),  # auto picks perturbation past float64
    (NUCLEUS_998, "2e12", "perturbation"),  # asked for where float64 would do
], ids=["misiurewicz-1e20-auto", "minibrot-2e12-perturbation"])
def test_deep_frames_are_priced_by_the_deep_probe(center: tuple[str, str], zoom: str, precision: str) -> None:
    """A frame no larger than the deep probe's grid is iterated whole: its estimate is the sum of
    its counts, as the brute force finds them, to the BLA's rounding."""
    p = FractalParams(width=8, height=6, center_x=center[0], center_y=center[1], zoom=zoom,
                      max_iter=5000, precision=precision)
    assert p.plan().precision == "perturbation"
    dx, dy = np.meshgrid(np.arange(8) + 0.5 - 4, -(np.arange(6) + 0.5 - 3))
    exact = brute(Decimal(center[0]), Decimal(center[1]), Decimal(3) / Decimal(zoom) / 8,
                  dx.ravel(), dy.ravel(), 5000).sum()
    assert abs(estimated_iterations(p) / exact - 1) < 0.01
