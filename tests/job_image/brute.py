"""An arbitrary-precision brute force of docs/design.md's definitions, for deep frames.

No perturbation, no approximation, no float64: every sample's c is formed from the decimal
centre and zoom in exact binary fixed point (integers scaled by 2^F, with gmpy2's mpz), and
z = z^2 + c is iterated in that fixed point, F bits being far below the sample spacing.
Slow (about a microsecond per iteration), so for tiny frames only.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import numpy as np
from gmpy2 import mpz

from job_image.params import FractalParams, exact

GUARD_BITS = 96  # fixed-point bits below the sample spacing


def fraction_bits(p: FractalParams) -> int:
    """F: the sample spacing's binary order below 1, plus GUARD_BITS."""
    spacing = Fraction(3) / Fraction(exact(p.zoom)) / (p.width * p.supersample)
    # floor(log2(spacing)), exactly (a float would underflow past zoom ~1e308)
    order = spacing.numerator.bit_length() - spacing.denominator.bit_length()
    if Fraction(2) ** order > spacing:
        order -= 1
    return max(64, -order + GUARD_BITS)


def brute_counts(p: FractalParams) -> np.ndarray:
    """(H*n, W*n) uint32 escape counts of mandelbrot at p's samples."""
    n = p.supersample
    wn, hn = p.width * n, p.height * n
    f = fraction_bits(p)
    one = Fraction(1 << f)

    def fixed(value: Fraction | Decimal) -> mpz:
        return mpz(math.floor(Fraction(value) * one))

    cx, cy = Fraction(exact(p.center_x)), Fraction(exact(p.center_y))
    half_step = Fraction(3) / Fraction(exact(p.zoom)) / wn / 2  # sample X at cx + (2X + 1 - wn) * half_step
    four = mpz(4) << f
    out = np.empty((hn, wn), np.uint32)
    for row in range(hn):
        y = fixed(cy - (2 * row + 1 - hn) * half_step)
        for col in range(wn):
            x = fixed(cx + (2 * col + 1 - wn) * half_step)
            zr = zi = mpz(0)
            count = 0
            while count < p.max_iter:
                r, q = zr * zr, zi * zi
                if r + q > four << f:
                    break
                zr, zi = ((r - q) >> f) + x, ((zr * zi) >> (f - 1)) + y
                count += 1
            out[row, col] = count
    return out
