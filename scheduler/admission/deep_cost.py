"""The cost probe past float64: escape counts of a coarse grid of a deep frame's samples, by
perturbation as the renderer computes them, in NumPy and gmpy2, in a bounded number of steps.

- One reference orbit at the frame's centre in arbitrary precision (gmpy2, MPFR), at most
  `REFERENCE_STEPS` long.
- Each sample iterates as a delta from it, dz' = (2 Z + dz) dz + dc, in complex128 (complex
  long double where the sample spacing is below ~1e-290 and float64's deltas would underflow).
- Bilinear approximation (BLA): where dz^2 is negligible, 2^k steps are one affine map
  dz -> a dz + b dc, taken from a table built once per reference; deep frames spend most of
  their iterations there, so a sample's thousands of iterations are a few dozen rounds.
- Rebasing onto the reference's start whenever |z| < |dz| or the reference ends (Zhuoran's
  method: no Pauldelbrot glitches with one reference).
- At most `ROUNDS` rounds: the samples still iterating are left to the caller, which
  extrapolates their counts (cost.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

import gmpy2
import numpy as np

REFERENCE_STEPS = 32_768  # ~0.1 s of MPFR at a few hundred digits
ROUNDS = 1_024  # BLA jumps or single steps per sample (~0.2-0.5 ms each for the whole grid)
BLA_TOLERANCE = 2.0**-16  # |dz| / |Z| below which dz^2 is dropped (at 2^-10 interior samples escape)
GUARD_BITS = 64  # reference precision beyond the sample spacing
FLOAT64_SPACING = Decimal("1e-290")  # below this the deltas need long double's exponent range


@dataclass(frozen=True)
class DeepCounts:
    """Escape counts of the probe's samples (NaN where still iterating), the count the
    slowest survivor had reached, and (for the tail's decay) how many were alive at `mid_step`."""

    counts: np.ndarray
    step: int
    mid_step: int
    alive_mid: int


@dataclass(frozen=True)
class Level:
    """Bilinear approximations of 2^level steps from every aligned reference index m = j 2^level:
    dz_{m+2^level} = a[j] dz_m + b[j] dc, valid while |dz_m| < r[j]."""

    a: np.ndarray
    b: np.ndarray
    r: np.ndarray


def reference_orbit(cx: Decimal, cy: Decimal, steps: int, bits: int) -> np.ndarray:
    """Z_0 = 0 .. Z_n of c = cx + i cy, rounded to complex128 (|Z| <= 2 fits), computed in `bits`
    of precision; n = steps, or the first n with |Z_n| > 2."""
    orbit = np.zeros(steps + 1, np.complex128)
    with gmpy2.context(precision=bits):
        c = gmpy2.mpc(gmpy2.mpfr(str(cx)), gmpy2.mpfr(str(cy)))
        z = gmpy2.mpc(0)
        for n in range(1, steps + 1):
            z = z * z + c
            orbit[n] = v = complex(z)
            if v.real * v.real + v.imag * v.imag > 4.0:
                return orbit[: n + 1]
    return orbit


def bla_levels(orbit: np.ndarray, reach: np.floating, dtype: type) -> list[Level]:
    """The BLA table of `orbit` for deltas |dc| <= reach: level 0 is one step (dz' = 2 Z dz + dc,
    valid while dz^2 is negligible against 2 Z dz), each next level joins two of the last."""
    z = orbit[:-1].astype(dtype)
    level = Level(2 * z, np.ones_like(z), BLA_TOLERANCE * np.abs(z))
    levels = [level]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # such entries get r = 0
        while level.a.size >= 2:
            n = level.a.size // 2 * 2
            ax, bx, rx = level.a[0:n:2], level.b[0:n:2], level.r[0:n:2]
            ay, by, ry = level.a[1:n:2], level.b[1:n:2], level.r[1:n:2]
            r = np.minimum(rx, np.maximum(0, (ry - np.abs(bx) * reach) / np.abs(ax)))
            level = Level(ay * ax, ay * bx + by, np.nan_to_num(r, nan=0.0))
            levels.append(level)
    return levels


@dataclass(frozen=True)
class Table:
    """All levels from 1 up, flat: level k's entry j is at offset[k] + j."""

    a: np.ndarray
    b: np.ndarray
    r: np.ndarray
    offset: np.ndarray
    size: np.ndarray  # entries per level

    @classmethod
    def of(cls, levels: list[Level]) -> Table:
        up = levels[1:]
        end = Level(levels[0].a[:1] * 0, levels[0].b[:1] * 0, np.zeros(1))  # r = 0: never taken
        sizes = np.array([0] + [lv.r.size for lv in up])
        return cls(*(np.concatenate([getattr(lv, f) for lv in [*up, end]]) for f in ("a", "b", "r")),
                   np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)

    def valid(self, level: np.ndarray, m: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Whether each sample may take `level` from reference index m with |dz| = size, and the
        flat index of that entry."""
        j = m >> level
        inside = j < self.size[level]
        flat = self.offset[level] + np.where(inside, j, 0)
        return inside & (size < self.r[flat]), flat

    def jump(self, m: np.ndarray, dz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The largest valid level from reference index m for each sample (0: none), and the
        flat index of its entry. Validity only shrinks as the level grows (a level's radius is
        at most its first half's, and its end moves out), so a binary search finds it."""
        top = self.size.size - 1
        low = m & -m  # m's lowest set bit: m is aligned to levels up to its log2
        hi = np.where(m == 0, top, np.minimum(np.log2(np.maximum(low, 1)).astype(np.int64), top))
        lo = np.zeros_like(hi)
        size = np.abs(dz)
        while (open_ := lo < hi).any():
            mid = (lo + hi + 1) // 2
            ok = self.valid(mid, m, size)[0] & open_
            lo = np.where(ok, mid, lo)
            hi = np.where(ok | ~open_, hi, mid - 1)
        return lo, self.valid(lo, m, size)[1]


def deep_counts(cx: Decimal, cy: Decimal, spacing: Decimal, cols: np.ndarray, rows: np.ndarray,
                max_iter: int) -> DeepCounts:
    """Escape counts of the samples at centre + (cols + i rows) * spacing, where cols and rows
    are sample offsets from the centre (rows pointing up)."""
    bits = GUARD_BITS + max(53, math.ceil(-spacing.log10() * Decimal(math.log2(10))))
    orbit = reference_orbit(cx, cy, min(max_iter, REFERENCE_STEPS), bits)
    last = len(orbit) - 1
    dtype = np.complex128 if spacing > FLOAT64_SPACING else np.clongdouble
    real = np.float64 if dtype is np.complex128 else np.longdouble
    step = real(str(spacing))
    dc = (cols.astype(real) + 1j * rows.astype(real)).astype(dtype) * step
    table = Table.of(bla_levels(orbit, np.abs(dc).max(), dtype))
    z_ref = orbit.astype(dtype)
    counts = np.full(dc.size, np.nan)
    live = np.arange(dc.size)
    dz = np.zeros_like(dc)
    m = np.zeros(dc.size, np.int64)  # reference index
    n = np.zeros(dc.size, np.int64)  # iterations done
    mid_step, alive_mid = 0, live.size
    with np.errstate(over="ignore", invalid="ignore"):
        for round_ in range(ROUNDS):
            if round_ == ROUNDS // 2:
                mid_step, alive_mid = int(n.min()), live.size
            level, at = table.jump(m, dz)
            skip = np.where(level > 0, 1 << level, 1)
            single = level == 0
            dz = np.where(single, (2 * z_ref[m] + dz) * dz + dc, table.a[at] * dz + table.b[at] * dc)
            m += skip
            n += skip
            z = z_ref[m] + dz
            mag = z.real * z.real + z.imag * z.imag
            out = (mag > 4) | (n >= max_iter)
            if out.any():
                counts[live[out]] = np.minimum(n[out], max_iter)
                keep = ~out
                live, dz, dc, m, n, z, mag = (v[keep] for v in (live, dz, dc, m, n, z, mag))
                if not live.size:
                    break
            rebase = (mag < (dz.real * dz.real + dz.imag * dz.imag)) | (m == last)
            dz[rebase] = z[rebase]
            m[rebase] = 0
    step_reached = int(n.min()) if live.size else 0
    return DeepCounts(counts, step_reached, mid_step, alive_mid)
