"""The reference orbit of a perturbation render, in arbitrary precision (MPFR, through gmpy2).

The reference is the frame's centre C, given exactly (a decimal string keeps every digit):
Z_0 = 0, Z_{n+1} = Z_n^2 + C, iterated with enough bits that C is exact to far below the
sample spacing, until |Z_n|^2 > 4 or max_iter. Every sample then iterates only its small
delta from this orbit (kernels/perturbation.cl), which needs Z_n rounded to float64: the
deltas carry the precision, the orbit only has to be right to float64's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from decimal import Decimal

import gmpy2
import numpy as np

from .precision import log2_abs, spacing_log2

GUARD_BITS = 64  # bits kept below the sample spacing


@dataclass(frozen=True)
class Orbit:
    """Z_0 .. Z_N rounded to float64 (complex128), N = len(z) - 1: the first n with
    |Z_n|^2 > 4, or max_iter."""

    z: np.ndarray
    bits: int  # MPFR precision it was computed with
    seconds: float

    @property
    def iterations(self) -> int:
        return len(self.z) - 1


def precision_bits(center_x: Decimal, center_y: Decimal, zoom: Decimal, samples_wide: int) -> int:
    """Bits that hold the centre exactly to GUARD_BITS below the sample spacing."""
    magnitude = max(log2_abs(center_x), log2_abs(center_y), 1.0)
    return max(53, math.ceil(magnitude - spacing_log2(zoom, samples_wide)) + GUARD_BITS)


def reference_orbit(center_x: str, center_y: str, max_iter: int, bits: int) -> Orbit:
    """The mandelbrot orbit of center_x + i center_y (decimal strings), at `bits` bits."""
    t0 = time.perf_counter()
    out = np.empty(max_iter + 1, np.complex128)
    with gmpy2.context(gmpy2.get_context(), precision=bits, emin=-(2**40), emax=2**40):
        cr, ci = gmpy2.mpfr(center_x), gmpy2.mpfr(center_y)
        zr, zi = gmpy2.mpfr(0), gmpy2.mpfr(0)
        out[0] = 0
        n = 0
        while n < max_iter:
            r, q = zr * zr, zi * zi
            if r + q > 4:
                break
            zr, zi = r - q + cr, 2 * zr * zi + ci
            n += 1
            out[n] = complex(float(zr), float(zi))
    return Orbit(out[: n + 1].copy(), bits, time.perf_counter() - t0)
