"""The reference orbit (job_image/orbit.py) against exact rational iteration."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest

from job_image.orbit import precision_bits, reference_orbit

# A centre with more digits than float64 holds: rounding it to a float would change its orbit.
RE, IM = "-1.7685977553557001418762311451843793", "0.0035050993286516378612405633516721"


def test_orbit_is_the_exact_orbit_rounded_to_float64() -> None:
    orbit = reference_orbit(RE, IM, 500, 300)
    c = (Fraction(Decimal(RE)), Fraction(Decimal(IM)))
    x = y = Fraction(0)
    n = 0
    while x * x + y * y <= 4 and n < 500:
        assert abs(complex(float(x), float(y)) - orbit.z[n]) <= 1e-15 * max(1.0, abs(orbit.z[n]))
        x, y = x * x - y * y + c[0], 2 * x * y + c[1]
        x, y = (Fraction(round(v * 2**400), 2**400) for v in (x, y))  # 400 bits: keeps rationals small
        n += 1
    assert orbit.iterations == n > 40  # it ends where the exact orbit escapes


def test_an_escaping_orbit_ends_at_its_escape() -> None:
    orbit = reference_orbit("0.5", "0.5", 1000, 64)
    assert 0 < orbit.iterations < 10 and abs(orbit.z[-1]) > 2 and abs(orbit.z[-2]) <= 2


def test_bits_follow_the_depth() -> None:
    shallow = precision_bits(Decimal(-1), Decimal(0), Decimal("1e20"), 800)
    deep = precision_bits(Decimal(-1), Decimal(0), Decimal("1e400"), 800)
    assert shallow >= 66 + 9 + 64  # zoom 1e20 and 800 samples: spacing ~2^-75, 64 bits below
    assert deep - shallow == pytest.approx(380 * math.log2(10), abs=1)
