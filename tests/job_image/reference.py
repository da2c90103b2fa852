"""A straightforward NumPy escape-time reference, written from docs/design.md's definitions.

It rounds like the kernel on purpose: no fused multiply-add anywhere (the kernel forbids
contraction), and Im z' = 2*(x*y) + c_im where 2*(x*y) is exact, so the kernel's fma(2, t, c)
and this unfused form round identically. That is what makes per-sample equality possible.
"""

from __future__ import annotations

import numpy as np

from job_image.params import FractalParams


def sample_grid(p: FractalParams) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) per sample in float64. With n = supersample, the frame is sampled as a
    (W*n) x (H*n) grid with step s/n, s = 3/zoom/W: sample X lies at
    center_x + (X + 0.5 - W*n/2) * s/n, which for n = 1 is docs/design.md's pixel mapping and in
    general puts a pixel's n x n samples at the centres of an n x n grid inside it."""
    n = p.supersample
    center_x, center_y, zoom = p.float_view()
    step = 3.0 / zoom / p.width / n
    wn, hn = p.width * n, p.height * n
    x = center_x + (np.arange(wn) + 0.5 - wn / 2) * step
    y = center_y - (np.arange(hn) + 0.5 - hn / 2) * step
    return np.meshgrid(x, y)


def escape(p: FractalParams) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample escape counts (uint32) and |z|^2 at escape, in the precision p renders with."""
    dt = np.float32 if p.plan().precision == "float32" else np.float64
    x, y = (a.astype(dt) for a in sample_grid(p))
    if p.kind == "julia":
        zr, zi = x.copy(), y.copy()
        cr, ci = dt(p.julia_re), dt(p.julia_im)
    else:
        zr, zi = np.zeros_like(x), np.zeros_like(x)
        cr, ci = x, y
    n = np.zeros(x.shape, np.uint32)
    live = np.ones(x.shape, bool)
    mag = np.zeros(x.shape, dt)
    two, four = dt(2), dt(4)
    with np.errstate(all="ignore"):  # escaped samples overflow; they are no longer live
        for _ in range(p.max_iter):
            r, q = zr * zr, zi * zi
            m = r + q
            mag = np.where(live, m, mag)
            live &= m <= four
            n += live
            if not live.any():
                break
            t = zr * zi
            if p.kind == "burning_ship":
                t = np.abs(t)
            zi = two * t + ci
            zr = (r - q) + cr
    return n, mag


def repeats(p: FractalParams) -> np.ndarray:
    """Samples whose orbit, within max_iter iterations and before escaping, returns bit for
    bit to a value it had earlier (compared against z kept at iterations 2^j, Brent's way):
    such an orbit is a cycle of the arithmetic, so it never escapes. Shows that a frame
    exercises the kernel's periodicity skip; brute force (`escape`) stays the reference."""
    dt = np.float32 if p.plan().precision == "float32" else np.float64
    x, y = (a.astype(dt) for a in sample_grid(p))
    if p.kind == "julia":
        zr, zi, cr, ci = x.copy(), y.copy(), dt(p.julia_re), dt(p.julia_im)
    else:
        zr, zi, cr, ci = np.zeros_like(x), np.zeros_like(x), x, y
    kr, ki = zr.copy(), zi.copy()
    live = np.ones(x.shape, bool)
    found = np.zeros(x.shape, bool)
    with np.errstate(all="ignore"):
        for i in range(1, p.max_iter + 1):
            r, q = zr * zr, zi * zi
            live &= r + q <= dt(4)
            t = zr * zi
            zi = dt(2) * (np.abs(t) if p.kind == "burning_ship" else t) + ci
            zr = (r - q) + cr
            found |= live & (zr == kr) & (zi == ki)
            if i & (i - 1) == 0:
                kr, ki = zr.copy(), zi.copy()
    return found
