"""The one rule that picks a frame's number type: float32, float64 or perturbation.

A type resolves a frame while the spacing of its samples, 3 / zoom / (width * supersample),
is at least `MARGIN` units in the last place of that type at the centre's magnitude (taken
as at least 1: the orbit itself runs at |z| up to 2, so its rounding is never finer than
that). Then neighbouring samples get distinct coordinates, with room left for the rounding of
the iteration. With a centre near 1 and 800 pixels across, float32 resolves to zoom ~8e3 and
float64 to ~4e12. Past float64, perturbation iterates each sample as a delta from one
reference orbit kept in arbitrary precision; its deltas are float64 while the sample spacing
stays `DELTA_HEADROOM` binary orders above float64's smallest normal number (zoom ~1e287 at
800 pixels), and a float with a separate exponent ("floatexp") beyond.

`precision: auto` takes the cheapest type that resolves the frame; an explicit float32 or
float64 that does not is refused (`refusal`). Pure functions of the parameters, on exact
decimals: no float overflows at zoom 1e1000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

Method = Literal["float32", "float64", "perturbation"]
Deltas = Literal["float64", "floatexp"]

MARGIN = 4  # units in the last place per sample spacing: "well above" the type's resolution
MANTISSA_BITS = {"float32": 24, "float64": 53}
ORDER: tuple[Method, ...] = ("float32", "float64", "perturbation")
# Perturbation's float64 deltas need the sample spacing well inside float64's normal range:
# 2^-1022 is the smallest normal number, and products of deltas lose digits below it.
DELTA_HEADROOM = 64
MIN_DOUBLE_DELTA_LOG2 = -1022 + DELTA_HEADROOM
# Kinds the perturbation kernel renders exactly (burning ship's sign cases are not built).
PERTURBED_KINDS = ("mandelbrot",)


@dataclass(frozen=True)
class Plan:
    """How a frame is rendered: the number type, and for perturbation the type of its deltas."""

    precision: Method
    deltas: Deltas | None = None


def log2_abs(value: Decimal) -> float:
    """log2 |value| for any finite decimal (-inf for 0), without forming a float of it: 1e-5000
    and 1e5000 are fine."""
    if not value:
        return -math.inf
    _, digits, exponent = value.as_tuple()
    head = digits[:17]
    mantissa = int("".join(map(str, head)))
    assert isinstance(exponent, int)  # finite: the model refuses inf and nan
    return (math.log10(mantissa) + exponent + len(digits) - len(head)) * math.log2(10)


def spacing_log2(zoom: Decimal, samples_wide: int) -> float:
    """log2 of the sample spacing 3 / zoom / samples_wide."""
    return math.log2(3.0) - log2_abs(zoom) - math.log2(samples_wide)


def resolves(method: Method, center_x: Decimal, center_y: Decimal, zoom: Decimal, samples_wide: int) -> bool:
    """Whether `method` resolves the frame (see the module doc)."""
    if method == "perturbation":
        return True
    magnitude = max(log2_abs(center_x), log2_abs(center_y), 0.0)
    ulp = math.floor(magnitude) + 1 - MANTISSA_BITS[method]
    return spacing_log2(zoom, samples_wide) >= ulp + math.log2(MARGIN)


def cheapest(center_x: Decimal, center_y: Decimal, zoom: Decimal, samples_wide: int) -> Method:
    """The cheapest number type that resolves the frame."""
    return next(m for m in ORDER if resolves(m, center_x, center_y, zoom, samples_wide))


def plan(requested: str, center_x: Decimal, center_y: Decimal, zoom: Decimal, samples_wide: int) -> Plan:
    """What renders the frame: `requested`, or the cheapest type for `auto`; perturbation's
    deltas by the sample spacing. Assumes `refusal` found nothing."""
    method: Method = (cheapest(center_x, center_y, zoom, samples_wide) if requested == "auto"
                      else requested)  # type: ignore[assignment]
    if method != "perturbation":
        return Plan(method)
    deep = spacing_log2(zoom, samples_wide) < MIN_DOUBLE_DELTA_LOG2
    return Plan(method, "floatexp" if deep else "float64")


def refusal(kind: str, requested: str, center_x: Decimal, center_y: Decimal, zoom: Decimal,
            samples_wide: int) -> str | None:
    """Why the frame cannot be rendered as requested (a sentence naming what would), or None."""
    need = cheapest(center_x, center_y, zoom, samples_wide)
    if requested in MANTISSA_BITS and ORDER.index(need) > ORDER.index(requested):  # type: ignore[arg-type]
        return (f"{requested} cannot resolve this frame: its samples are "
                f"{_spacing(zoom, samples_wide)} apart, below {MARGIN} units in the last place of "
                f"{requested} at this centre; use precision auto (it picks {need})")
    if kind not in PERTURBED_KINDS and (requested == "perturbation" or need == "perturbation"):
        deepest = _deepest_zoom(center_x, center_y, samples_wide)
        return (f"{kind} renders to zoom about {deepest:.3g} at this centre and size (float64's "
                f"limit); deeper needs perturbation, which is built for "
                f"{' and '.join(PERTURBED_KINDS)} only")
    return None


def _spacing(zoom: Decimal, samples_wide: int) -> str:
    exponent = spacing_log2(zoom, samples_wide) * math.log10(2)
    whole = math.floor(exponent)
    return f"{10 ** (exponent - whole):.2f}e{whole}"


def _deepest_zoom(center_x: Decimal, center_y: Decimal, samples_wide: int) -> float:
    """The largest zoom float64 resolves at this centre and width."""
    magnitude = max(log2_abs(center_x), log2_abs(center_y), 0.0)
    ulp = math.floor(magnitude) + 1 - MANTISSA_BITS["float64"]
    return 3.0 / samples_wide / (MARGIN * 2.0**ulp)
