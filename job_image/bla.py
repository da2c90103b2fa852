"""Bilinear approximation (BLA) of the perturbation iteration: a table that lets a sample skip
2^k iterations at once.

One perturbation step of mandelbrot is dz' = 2 Z_m dz + dz^2 + dc. Where |dz| is small
against |Z_m|, dz^2 is below float64's rounding of the rest and the step is linear:
dz' = A dz + B dc with A = 2 Z_m, B = 1. Two linear steps compose into one
(A = A2 A1, B = A2 B1 + B2), so l steps from m are one multiply-add, valid while
|dz| < R (its validity radius). Following Zhuoran's and Claude Heiland-Allen's formulation
(mathr.co.uk, "Deep zoom theory and practice (again)", 2022):
- one step: R = EPSILON |Z_m| (dz^2 < EPSILON |2 Z_m dz|: dropped below float64's rounding);
- x then y: R = min(R_x, (R_y - |B_x| |dc|max) / |A_x|), |dc|max the largest delta in the frame.

Level k holds entries for the 2^k steps from m = 1 + j 2^k (m = 0 is Z_0 = 0: nothing to
linearise), each wholly inside the orbit (m + 2^k <= N), so a sample stepping by them lands
where the reference is still defined. R shrinks with the level at a given m, so the kernel
takes the largest valid level by going up until one fails.

A and B grow like products of |2 Z|, past float64's range on long orbits, so they are kept
as float64 mantissas with separate int exponents, and R as log2 R (-inf: never valid).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPSILON = 2.0**-24


@dataclass(frozen=True)
class BlaTable:
    """Level k's entries are [offsets[k]:offsets[k + 1]] of the flat arrays. The kernel starts
    at level 1: a level-0 entry skips one step, no cheaper than the step itself."""

    a: np.ndarray  # complex128 mantissas of A
    a_exp: np.ndarray  # int32 exponents: A = a * 2^a_exp
    b: np.ndarray
    b_exp: np.ndarray
    r_log2: np.ndarray  # float64 log2 of R
    offsets: np.ndarray  # int32, levels + 1 entries

    @property
    def levels(self) -> int:
        return len(self.offsets) - 1

    def level(self, k: int) -> slice:
        return slice(int(self.offsets[k]), int(self.offsets[k + 1]))


def _normalise(m: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Complex floatexp m * 2^e with max(|Re m|, |Im m|) in [0.5, 1) (0 stays 0, exponent 0)."""
    _, shift = np.frexp(np.maximum(np.abs(m.real), np.abs(m.imag)))
    return np.ldexp(m.real, -shift) + 1j * np.ldexp(m.imag, -shift), e + shift


def _log2_abs(m: np.ndarray, e: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log2(np.abs(m)) + e


def build(z: np.ndarray, dc_max_log2: float, epsilon: float = EPSILON) -> BlaTable:
    """The table for the orbit `z` (Z_0 .. Z_N, complex128) and a frame whose deltas are at
    most 2^dc_max_log2."""
    n = len(z) - 1
    steps = z[1:n]  # one step from each m = 1 .. N-1
    a, a_exp = _normalise(2 * steps, np.zeros(steps.size, np.int64))
    b, b_exp = np.full(steps.size, 0.5 + 0j), np.ones(steps.size, np.int64)
    with np.errstate(divide="ignore"):
        r = np.log2(epsilon * np.abs(steps))
    levels_a, levels_ae, levels_b, levels_be, levels_r, sizes = [], [], [], [], [], []
    while True:
        levels_a.append(a)
        levels_ae.append(a_exp)
        levels_b.append(b)
        levels_be.append(b_exp)
        levels_r.append(r)
        sizes.append(a.size)
        pairs = a.size // 2
        if pairs == 0:
            break
        first, second = slice(0, 2 * pairs, 2), slice(1, 2 * pairs, 2)  # x, then y
        ax, axe, bx, bxe, rx = a[first], a_exp[first], b[first], b_exp[first], r[first]
        ay, aye, by, bye, ry = a[second], a_exp[second], b[second], b_exp[second], r[second]
        # R = min(R_x, (R_y - |B_x| |dc|) / |A_x|), in log2: R_y (1 - t) / |A_x| with t < 1
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            t = np.exp2(_log2_abs(bx, bxe) + dc_max_log2 - ry)
            merged = np.where(t < 1, ry + np.log2(np.maximum(1 - t, 0.0)) - _log2_abs(ax, axe), -np.inf)
        r = np.minimum(rx, np.where(np.isnan(merged), -np.inf, merged))
        a, a_exp = _normalise(ay * ax, aye + axe)
        # B = A_y B_x + B_y: align the two terms to the larger exponent before adding
        p, pe = _normalise(ay * bx, aye + bxe)
        top = np.maximum(pe, bye)
        b, b_exp = _normalise(np.ldexp(p.real, pe - top) + 1j * np.ldexp(p.imag, pe - top)
                              + np.ldexp(by.real, bye - top) + 1j * np.ldexp(by.imag, bye - top), top)
    offsets = np.cumsum([0, *sizes]).astype(np.int32)
    cat = np.concatenate
    return BlaTable(
        a=cat(levels_a), a_exp=cat(levels_ae).astype(np.int32), b=cat(levels_b),
        b_exp=cat(levels_be).astype(np.int32), r_log2=cat(levels_r), offsets=offsets,
    )
