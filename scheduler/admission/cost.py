"""The cost model: a request's `estimated_iterations`, from a cheap probe of its frame.

The render's `total_iterations` is the sum of escape counts over all width*n x height*n
samples. The probe iterates a regular subgrid of those very samples (at most
`PROBE_SAMPLES`) with NumPy, in float64, and scales the mean count up to the whole frame. Work
is kept small three ways:
- samples provably inside the Mandelbrot set (main cardioid, period-2 bulb: the kernel's own
  test, job_image/interior.py) count `max_iter` without iterating;
- samples whose orbit returns to where it was (an attracting cycle, found by comparing with a
  saved point whose saving distance doubles, as renderers' "periodicity checking" does) count
  `max_iter` from then on: that is the interior of every kind;
- after `PROBE_MAX_STEPS` iterations the survivors' counts are extrapolated from how fast they
  were still escaping (a power-law tail, see `_tail_mean`), so max_iter=100000 costs no more
  than 4096.
Frames no larger than the probe are iterated whole, so their estimate is exact. NumPy only:
the API must not need an OpenCL device to price a request.

Frames past float64 (those rendered by perturbation) are probed by perturbation too, on a
coarser grid (`DEEP_PROBE_SAMPLES`): one reference orbit in MPFR, deltas and bilinear
approximation in NumPy (deep_cost.py), the same tail extrapolation after a bounded number of
rounds. A deep frame's counts spread little around their mean, so 64 samples price it well
(benchmarks/estimates.py: means within 2 % of 256 samples', in half the time).
"""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np

from job_image.interior import mandelbrot_interior
from job_image.params import FractalParams, exact
from scheduler.admission.deep_cost import deep_counts

PROBE_SAMPLES = 4096  # ~64 x 64: a few ms per 100 iterations; the mean is then within ~10 %
PROBE_MAX_STEPS = 4096  # beyond this the tail is extrapolated, not iterated
BLOCK = 32  # iterations between escape tests (one (BLOCK, n) array of |z|^2 per block)
CYCLE_EPS = 1e-20  # |z - saved|^2 below this: the orbit has closed, the sample never escapes
DEEP_PROBE_SAMPLES = 64  # 8 x 8: a deep frame's counts spread little; rounds cost per call, not per sample


def probe_offsets(p: FractalParams, limit: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Where a regular subgrid of the frame's samples lies, in sample spacings from the centre
    (x right, y up), and how many samples it stands for.

    The mapping is the render's (job_image/render.py): sample column X of W*n lies at
    center_x + (X + 0.5 - W*n/2) * 3 / zoom / (W*n), and likewise for rows, y pointing up.
    """
    n = p.supersample
    wn, hn = p.width * n, p.height * n
    scale = min(1.0, math.sqrt(limit / (wn * hn)))
    gx, gy = max(1, min(wn, round(wn * scale))), max(1, min(hn, round(hn * scale)))
    cols = ((np.arange(gx) + 0.5) * wn / gx).astype(np.int64)  # centres of gx equal strips
    rows = ((np.arange(gy) + 0.5) * hn / gy).astype(np.int64)
    dx, dy = np.meshgrid(cols + 0.5 - wn / 2.0, -(rows + 0.5 - hn / 2.0))
    return dx.ravel(), dy.ravel(), wn * hn


def probe_axes(p: FractalParams, limit: int = PROBE_SAMPLES) -> tuple[np.ndarray, np.ndarray, int]:
    """Coordinates of a regular subgrid of the frame's samples (probe_offsets), as floats."""
    dx, dy, samples = probe_offsets(p, limit)
    center_x, center_y, zoom = p.float_view()
    s = 3.0 / zoom / (p.width * p.supersample)
    return center_x + dx * s, center_y + dy * s, samples


def _tail_mean(step: int, alive_half: int, alive_now: int, max_iter: int, ratio: float = 2.0) -> float:
    """Expected final count of a sample still iterating at `step`, capped at max_iter.

    Near the boundary escape times have a power-law tail, P(N > t) ~ t^-a; `a` comes from the
    survivors at step/ratio and at step. E[min(N, M) | N > S] = S + integral_S^M (S/t)^a dt.
    No decay at all (a = 0) means they behave as interior points: M.
    """
    if alive_now <= 0 or step >= max_iter or ratio <= 1.0:
        return float(max_iter)
    a = max(0.0, math.log(max(alive_half, alive_now) / alive_now) / math.log(ratio))
    s, m = float(step), float(max_iter)
    if abs(a - 1.0) < 1e-9:
        return s + s * math.log(m / s)
    return min(m, s + s * (1 - (s / m) ** (a - 1)) / (a - 1))  # the integral, without s**a's overflow


def escape_counts(p: FractalParams, x: np.ndarray, y: np.ndarray,
                  max_steps: int = PROBE_MAX_STEPS) -> np.ndarray:
    """Escape counts (float64, the tail extrapolated) of the samples at (x, y) for `p`."""
    m = p.max_iter
    counts = np.zeros(x.size)
    live = np.arange(x.size)
    if p.kind == "julia":
        zr, zi = x.copy(), y.copy()
        cr, ci = np.full_like(x, p.julia_re), np.full_like(y, p.julia_im)
    else:
        zr, zi, cr, ci = np.zeros_like(x), np.zeros_like(y), x.copy(), y.copy()
        if p.kind == "mandelbrot":
            inside = mandelbrot_interior(x, y)
            counts[inside] = m
            keep = ~inside
            live, zr, zi, cr, ci = live[keep], zr[keep], zi[keep], cr[keep], ci[keep]
    ship = p.kind == "burning_ship"
    sr, si, saved_at = zr.copy(), zi.copy(), 0
    it, alive_half, half_step = 0, live.size, 0
    with np.errstate(over="ignore", invalid="ignore"):
        while live.size and it < min(m, max_steps):
            steps = min(BLOCK, m - it)
            mag = np.empty((steps, live.size))
            closed = np.zeros(live.size, bool)
            for k in range(steps):
                r, q = zr * zr, zi * zi
                mag[k] = r + q
                prod = np.abs(zr * zi) if ship else zr * zi
                zi = 2.0 * prod + ci
                zr = r - q + cr
                dr, di = zr - sr, zi - si
                closed |= dr * dr + di * di < CYCLE_EPS
            escaped = mag > 4.0
            out = escaped.any(axis=0)
            counts[live[out]] = it + escaped[:, out].argmax(axis=0)
            it += steps
            closed &= ~out
            counts[live[closed]] = m
            keep = ~(out | closed)
            live, zr, zi, cr, ci = live[keep], zr[keep], zi[keep], cr[keep], ci[keep]
            sr, si = sr[keep], si[keep]
            if it >= 2 * saved_at:  # Brent: the saved point moves at doubling distances
                sr, si, saved_at = zr.copy(), zi.copy(), it
            if it >= 2 * half_step and it <= max_steps // 2:
                alive_half, half_step = live.size, it
    if live.size:
        counts[live] = m if it >= m else _tail_mean(it, alive_half, live.size, m)
    return counts


def deep_escape_counts(p: FractalParams) -> tuple[np.ndarray, int]:
    """Escape counts (the tail extrapolated) of a coarse subgrid of a frame rendered by
    perturbation, and how many samples the subgrid stands for."""
    dx, dy, samples = probe_offsets(p, DEEP_PROBE_SAMPLES)
    spacing = Decimal(3) / exact(p.zoom) / (p.width * p.supersample)
    found = deep_counts(exact(p.center_x), exact(p.center_y), spacing, dx, dy, p.max_iter)
    counts, alive = found.counts, np.isnan(found.counts)
    if alive.any():
        ratio = found.step / found.mid_step if found.mid_step else 1.0
        counts[alive] = _tail_mean(found.step, found.alive_mid, int(alive.sum()), p.max_iter, ratio)
    return counts, samples


def estimated_iterations(p: FractalParams) -> int:
    """The expected `total_iterations` of rendering `p` (sum of escape counts of all samples)."""
    if p.plan().precision == "perturbation":
        counts, samples = deep_escape_counts(p)
    else:
        x, y, samples = probe_axes(p)
        counts = escape_counts(p, x, y)
    return round(float(counts.mean()) * samples)

