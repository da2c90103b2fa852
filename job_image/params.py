"""The fractal parameter model: what a job accepts, and what the API validates requests with.

Defined once here so the scheduler and the job can never disagree (docs/design.md).
Limits that depend on deployment (pixels, iterations) are checked apart from parsing
(`limit_problem`), so the same model serves the job (limits from its env) and the API (limits
from settings, checked in the route). `describe_errors` is the one formatter of pydantic errors.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import precision as rule

Kind = Literal["mandelbrot", "julia", "burning_ship"]
Precision = Literal["auto", "float32", "float64", "perturbation"]
DeviceChoice = Literal["auto", "gpu", "cpu"]
Colormap = Literal["classic", "viridis", "magma", "inferno", "twilight", "fire", "ice", "grey"]


@dataclass(frozen=True)
class Limits:
    """Upper bounds on one render; both the API and the job read them from the environment."""

    max_pixels: int = 16_777_216  # samples (width x height x supersample^2): 4096 x 4096 x 1
    max_iter: int = 100_000
    # Digits of a centre or zoom given as a string: a frame at zoom 1e1000 needs ~1010.
    max_coordinate_digits: int = 2000
    max_zoom: Decimal = Decimal("1e1000")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Limits:
        env = os.environ if env is None else env
        max_zoom = env.get("MAX_ZOOM", str(cls.max_zoom))
        if not DECIMAL.fullmatch(max_zoom):
            raise ValueError(f"MAX_ZOOM must be a decimal number, not {max_zoom!r}")
        return cls(
            max_pixels=int(env.get("MAX_PIXELS", cls.max_pixels)),
            max_iter=int(env.get("MAX_ITER", cls.max_iter)),
            max_coordinate_digits=int(env.get("MAX_COORDINATE_DIGITS", cls.max_coordinate_digits)),
            max_zoom=Decimal(max_zoom),
        )


# A decimal string: digits with an optional point and exponent ("-0.75", ".5", "1e-400").
# The exponent is bounded so that Python's decimal module can hold every value accepted.
DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,9})?")
# The largest magnitude a centre may have: float64's, so a float view always exists.
MAX_CENTER = Decimal("1.7976931348623157e308")


def exact(value: float | str) -> Decimal:
    """The exact value of a coordinate: a string digit for digit, a float as the binary it is."""
    return Decimal(value)


def number_or_decimal(value: Any) -> Any:
    """A JSON number or a decimal string, never a bool (pydantic would make True 1.0)."""
    if isinstance(value, bool):
        raise ValueError("must be a number or a decimal string")
    if isinstance(value, str) and not DECIMAL.fullmatch(value):
        raise ValueError('must be a decimal number such as -0.75 or "1e-20"')
    return value


def positive(value: float | str) -> float | str:
    if exact(value) <= 0:
        raise ValueError("must be greater than 0")
    return value


class FloatView(NamedTuple):
    """The nearest float64s of the centre and zoom (zoom may be inf, the centre may round to 0):
    for code that needs floats, such as shallow renders and the scheduler's cost probe."""

    center_x: float
    center_y: float
    zoom: float


# Where center_x/center_y are not given, each kind starts on a view of its whole set (docs/design.md),
# at zoom 1 (3.0 wide; 2.25 high at 4:3). Extents measured at 200 iterations: mandelbrot
# x -2..0.47; julia (c = -0.8+0.156i) x -1.5..1.5, y -0.83..0.83; burning ship x -1.79..0.99,
# y -1.54..0.45. docs/design.md's y axis points up (row 0 is the largest y), so the ship stands upside
# down compared with the usual pictures, which flip the imaginary axis.
DEFAULT_CENTERS: dict[str, tuple[float, float]] = {
    "mandelbrot": (-0.5, 0.0),
    "julia": (0.0, 0.0),
    "burning_ship": (-0.4, -0.5),
}


class FractalParams(BaseModel):
    """One render request. Unknown fields are refused, never ignored; integer fields take
    integers only (strict: `true` is not 1, nor `"800"` 800)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    kind: Kind = "mandelbrot"
    width: int = Field(800, ge=1, strict=True, description="image width in pixels")
    height: int = Field(600, ge=1, strict=True, description="image height in pixels")
    center_x: float | str = Field(
        -0.5,
        description="real part of the view's centre (default: the kind's whole-set view); "
        "a decimal string keeps every digit",
    )
    center_y: float | str = Field(
        0.0,
        description="imaginary part of the view's centre (default: the kind's whole-set view); "
        "a decimal string keeps every digit",
    )
    zoom: float | str = Field(
        1.0, description="> 0; the view spans 3.0 / zoom along the real axis; a decimal string such "
        "as \"1e400\" goes past float64's range",
    )
    max_iter: int = Field(500, ge=1, strict=True, description="iteration cap per sample")
    julia_re: float = Field(-0.8, description="Julia constant, real part (julia only)")
    julia_im: float = Field(0.156, description="Julia constant, imaginary part (julia only)")
    colormap: Colormap = "classic"
    precision: Precision = Field(
        "auto", description="auto: the cheapest of float32, float64 and perturbation that resolves the frame"
    )
    device: DeviceChoice = "auto"
    supersample: int = Field(1, ge=1, le=4, strict=True, description="samples per pixel side")
    counts: bool = Field(False, description="also store counts.npy: escape counts, uint32, one per sample")

    _number = field_validator("center_x", "center_y", "zoom", mode="before")(number_or_decimal)

    @field_validator("center_x", "center_y")
    @classmethod
    def _center(cls, value: float | str) -> float | str:
        if exact(value).copy_abs() > MAX_CENTER:
            raise ValueError("must lie within float64's range (|x| <= 1.8e308)")
        return value

    _zoom = field_validator("zoom")(positive)

    @model_validator(mode="after")
    def _resolvable(self) -> FractalParams:
        problem = self.render_problem()
        if problem:
            raise ValueError(problem)
        return self

    def render_problem(self) -> str | None:
        """An explicit float32/float64 must resolve the frame; deep ones need a kind perturbation renders."""
        return rule.refusal(self.kind, self.precision, *self._exact(), self.width * self.supersample)

    def _exact(self) -> tuple[Decimal, Decimal, Decimal]:
        return exact(self.center_x), exact(self.center_y), exact(self.zoom)

    def float_view(self) -> FloatView:
        """The centre and zoom as float64s (see FloatView)."""
        return FloatView(*(float(v) for v in self._exact()))

    def plan(self) -> rule.Plan:
        """How this frame is rendered: `precision`, or what `auto` picks (job_image/precision.py)."""
        return rule.plan(self.precision, *self._exact(), self.width * self.supersample)

    @model_validator(mode="before")
    @classmethod
    def _default_view(cls, data: Any) -> Any:
        """Fill a missing centre with the kind's whole-set view (the field defaults are mandelbrot's)."""
        if not isinstance(data, dict):
            return data
        kind = data.get("kind", "mandelbrot")
        center = DEFAULT_CENTERS.get(kind if isinstance(kind, str) else "", DEFAULT_CENTERS["mandelbrot"])
        return {"center_x": center[0], "center_y": center[1], **data}

    def limit_problem(self, limits: Limits) -> str | None:
        """Why the render is over a deployment's limits, or None when it is within them."""
        samples = self.width * self.height * self.supersample**2
        if samples > limits.max_pixels:
            at = f" at supersample {self.supersample}" if self.supersample > 1 else ""
            return f"{self.width}x{self.height}{at} is {samples} samples; the limit is {limits.max_pixels}"
        if self.max_iter > limits.max_iter:
            return f"max_iter {self.max_iter} is above the limit of {limits.max_iter}"
        for name in ("center_x", "center_y", "zoom"):
            value = getattr(self, name)
            digits = sum(ch.isdigit() for ch in value) if isinstance(value, str) else 0
            if digits > limits.max_coordinate_digits:
                return f"{name} has {digits} digits; the limit is {limits.max_coordinate_digits}"
        if exact(self.zoom) > limits.max_zoom:
            return f"zoom {self.zoom} is above the limit of {limits.max_zoom}"
        return None


def parse_params(data: dict[str, Any] | str, limits: Limits | None = None, split: int = 1) -> FractalParams:
    """Validate a dict or a JSON string against the model and `limits` (with `split` > 1, those of
    one band: the process renders only its task's rows); raises pydantic.ValidationError, or
    ValueError for bad JSON or a render over the limits."""
    if isinstance(data, str):
        data = json.loads(data)
    if not isinstance(data, dict):
        raise ValueError("parameters must be a JSON object")
    params = FractalParams.model_validate(data)
    band = params.model_copy(update={"height": -(-params.height // split)}) if split > 1 else params
    problem = band.limit_problem(limits or Limits())
    if problem:
        raise ValueError(problem)
    return params


def describe_errors(errors: Iterable[Mapping[str, Any]]) -> str:
    """One line naming each bad field ("width: Input should be ..."), for stderr and API errors.
    FastAPI's leading "body" is left out of a location."""
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")  # our validators' sentences
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def describe_error(exc: ValidationError | ValueError) -> str:
    return describe_errors(exc.errors()) if isinstance(exc, ValidationError) else str(exc)
