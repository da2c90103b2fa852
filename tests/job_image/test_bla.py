"""The BLA table (job_image/bla.py) against the iteration it stands for.

Each entry promises: for |dz| < R (and |dc| up to the frame's largest delta), its 2^k steps
dz := A dz + B dc land within 2^k EPSILON of where 2^k exact perturbation steps
dz := 2 Z dz + dz^2 + dc land (relative to that). The steps are done here in MPFR at 600
bits (exact for this purpose: rounding 2^-600), from the same float64 Z.
"""

from __future__ import annotations

import math
import random

import gmpy2
import numpy as np
import pytest

from job_image import bla
from job_image.orbit import reference_orbit

DC_MAX_LOG2 = -60.0  # a frame at zoom ~1e17


@pytest.fixture(scope="module")
def table() -> tuple[np.ndarray, bla.BlaTable]:
    orbit = reference_orbit("-0.743643887037158704752191506114774", "0.131825904205311970493132056385139",
                            600, 160)
    return orbit.z, bla.build(orbit.z, DC_MAX_LOG2)


def exact_steps(z: np.ndarray, m: int, steps: int, dz: complex, dc: complex) -> complex:
    with gmpy2.context(gmpy2.get_context(), precision=600):
        d, c = gmpy2.mpc(dz), gmpy2.mpc(dc)
        for i in range(m, m + steps):
            d = 2 * gmpy2.mpc(z[i]) * d + d * d + c
        return complex(d)


def unit(rng: random.Random) -> complex:
    angle = rng.uniform(0, 2 * math.pi)
    return complex(math.cos(angle), math.sin(angle))


def test_entries_keep_their_error_bound(table: tuple[np.ndarray, bla.BlaTable]) -> None:
    z, t = table
    rng = random.Random(7)
    checked = 0
    for k in range(1, t.levels):
        level = t.level(k)
        valid = [j for j in range(level.stop - level.start) if np.isfinite(t.r_log2[level.start + j])]
        for j in rng.sample(valid, min(len(valid), 12)):
            i = level.start + j
            radius = 2.0 ** t.r_log2[i]
            dz = 0.99 * radius * unit(rng)
            dc = 2.0**DC_MAX_LOG2 * rng.uniform(0.1, 1) * unit(rng)
            want = exact_steps(z, 1 + j * 2**k, 2**k, dz, dc)
            a_k = complex(t.a[i]) * 2.0 ** int(t.a_exp[i])
            b_k = complex(t.b[i]) * 2.0 ** int(t.b_exp[i])
            got = a_k * dz + b_k * dc
            assert abs(got - want) <= 2**k * bla.EPSILON * abs(want), (k, j)
            checked += 1
    assert checked > 50 and t.levels >= 6  # skips of 32 steps and more were checked


def test_levels_halve_and_radii_shrink_with_the_level(table: tuple[np.ndarray, bla.BlaTable]) -> None:
    z, t = table
    assert t.offsets[1] == len(z) - 2  # one-step entries for m = 1 .. N-1
    for k in range(1, t.levels):
        assert t.offsets[k + 1] - t.offsets[k] == (t.offsets[k] - t.offsets[k - 1]) // 2
        below, here = t.r_log2[t.level(k - 1)], t.r_log2[t.level(k)]
        assert np.all(here <= below[0:2 * here.size:2])  # R_k at m is at most R_(k-1) at m
    wide = bla.build(z, DC_MAX_LOG2 + 20)  # a frame a million times wider: smaller radii
    assert np.all(wide.r_log2 <= t.r_log2)
