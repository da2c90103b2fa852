"""Kernel escape counts (and colour indices) against the NumPy reference, sample for sample.

The kernel and the reference use the same rounding pattern (no FMA contraction; see
reference.py), so counts must be EQUAL: zero differing samples are allowed, for every kind,
precision and kernel shape (CPU-wide vectors, and the GPU's one-sample-per-work-item shape).
"""

from __future__ import annotations

import numpy as np
import pytest

from job_image import colour, device, job
from job_image.interior import mandelbrot_interior
from job_image.params import FractalParams
from job_image.render import FractalKernel, KernelShape, sample_axes
from job_image.settings import JobSettings, configure_opencl_cache

from .reference import escape, repeats, sample_grid

# Small frames whose widths are not multiples of the 64-sample row padding, centred where
# counts vary a lot (set boundaries), with max_iter large enough to exercise many blocks.
FRAMES = {
    "mandelbrot": dict(kind="mandelbrot", width=101, height=67, center_x=-0.75, zoom=1.2, max_iter=300),
    "julia": dict(kind="julia", width=90, height=70, center_x=0.0, zoom=1.1, max_iter=250),
    "burning_ship": dict(kind="burning_ship", width=77, height=61, center_x=-1.76, center_y=-0.03,
                         zoom=18, max_iter=200),
}

# Frames where the exact skips fire: a third or more of the samples never escape (in the
# cardioid, a period-3 bulb, the rabbit's basin, the ship's body), and most of those orbits
# repeat exactly within max_iter. Brute force stays the reference, sample for sample.
SKIP_FRAMES = {
    "mandelbrot": dict(kind="mandelbrot", width=101, height=67, center_x=-0.75, zoom=1.2, max_iter=2000),
    "mandelbrot_bulb3": dict(kind="mandelbrot", width=96, height=64, center_x=-0.122, center_y=0.745,
                             zoom=12, max_iter=2000),
    "julia": dict(kind="julia", width=96, height=64, center_x=0.0, zoom=1.2, max_iter=2000,
                  julia_re=-0.123, julia_im=0.745),
    "burning_ship": dict(kind="burning_ship", width=96, height=64, center_x=-0.45, center_y=-0.5,
                         zoom=1.0, max_iter=2000),
}


def kernel_counts(p: FractalParams, shape: KernelShape | None = None, band_samples: int = 1 << 20,
                  periodic: bool = True):
    """Counts and palette indices for the whole frame, gathered band by band."""
    settings = JobSettings.from_env()
    cache = configure_opencl_cache(settings.opencl_cache_dir)
    chosen = device.choose("cpu")
    method = p.plan().precision
    shape = shape or KernelShape.for_device(chosen, method)
    kernel = job._kernel(chosen, p.kind, method, shape, cache, periodic)
    counts, shades = [], []
    for band in kernel.bands(p, band_samples):
        counts.append(band.counts.copy())
        shades.append(band.shades.copy())
    return np.vstack(counts), np.vstack(shades)


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("kind", sorted(FRAMES))
def test_counts_equal_reference(kind: str, precision: str) -> None:
    p = FractalParams(**FRAMES[kind], precision=precision)
    got, got_shade = kernel_counts(p)
    want, want_mag = escape(p)
    assert got.shape == (p.height, p.width)
    assert 0 < want.min() < want.max() == p.max_iter  # the frame has escapes and interior
    assert int((got != want).sum()) == 0
    # Colour indices: the kernel's `shade` and colour.indices() do the same float32
    # operations (bit-level log2, unfused polynomial, IEEE sqrt), so they agree exactly too.
    want_shade = colour.indices(want, want_mag.astype(np.float32), p.max_iter)
    assert int((got_shade != want_shade).sum()) == 0
    assert np.array_equal(got_shade == 0, want == p.max_iter)


@pytest.mark.parametrize("periodic", [True, False])
@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("frame", sorted(SKIP_FRAMES))
def test_skips_give_brute_force_counts(frame: str, precision: str, periodic: bool) -> None:
    """The cardioid / bulb test and the periodicity test each answer max_iter only where brute
    force does; with periodicity on or off."""
    p = FractalParams(**SKIP_FRAMES[frame], precision=precision)
    got, got_shade = kernel_counts(p, periodic=periodic)
    want, want_mag = escape(p)
    never = want == p.max_iter
    assert 0.25 < never.mean() < 0.75 and repeats(p)[never].mean() > 0.5  # the skips have work
    if p.kind == "mandelbrot" and frame == "mandelbrot":
        x, y = (a.astype(np.dtype(precision)) for a in sample_grid(p))
        assert mandelbrot_interior(x, y).mean() > 0.3
    assert int((got != want).sum()) == 0
    want_shade = colour.indices(want, want_mag.astype(np.float32), p.max_iter)
    assert int((got_shade != want_shade).sum()) == 0


@pytest.mark.parametrize("shape", [
    KernelShape(1, 1, tile=1),  # the GPU shape, run on the CPU: the scalar code path
    KernelShape(4, 2),
    KernelShape(8, 4),
    KernelShape(16, 4),  # the AVX-512 shape: correct on a CPU whose native width is narrower
    KernelShape(8, 4, tile=32, head=0),  # no head part: every sample goes through the refill
    KernelShape(8, 4, tile=96, head=8),  # small tiles that start mid-row, a partial last one
    KernelShape(8, 4, head=2000),  # no refill part: fixed vector groups to max_iter
], ids=lambda s: f"vw{s.vector_width}x{s.in_flight}-tile{s.tile}-head{s.head}")
def test_other_kernel_shapes_count_the_same(shape: KernelShape) -> None:
    for p in (FractalParams(**FRAMES["mandelbrot"], precision="float32"),
              FractalParams(**SKIP_FRAMES["mandelbrot_bulb3"], precision="float32")):
        got, _ = kernel_counts(p, shape)
        want, _ = escape(p)
        assert int((got != want).sum()) == 0


def test_bands_do_not_change_counts() -> None:
    p = FractalParams(**FRAMES["julia"])
    whole, _ = kernel_counts(p)
    banded, _ = kernel_counts(p, band_samples=3 * 128)  # 3 rows per band, 24 bands
    assert np.array_equal(whole, banded)


def test_max_iter_below_one_block() -> None:
    p = FractalParams(**{**FRAMES["mandelbrot"], "max_iter": 5})
    got, _ = kernel_counts(p)
    assert np.array_equal(got, escape(p)[0])


def test_pixel_mapping_matches_design() -> None:
    p = FractalParams(width=8, height=6, center_x=-0.5, center_y=0.25, zoom=2.0)
    xs, ys = sample_axes(p)
    s = 3.0 / 2.0 / 8
    assert xs[0] == -0.5 + (0 + 0.5 - 4) * s and xs[7] == -0.5 + (7 + 0.5 - 4) * s
    assert ys[0] == 0.25 - (0 + 0.5 - 3) * s  # row 0 is the top: largest y
    assert ys[0] > ys[-1]


def test_supersample_samples_sub_pixel_centres() -> None:
    p = FractalParams(width=4, height=2, zoom=1.0, center_x=0.0, supersample=2)
    xs, ys = sample_axes(p)
    s = 3.0 / 4
    # pixel 0 spans [-2s, -s]; its two samples sit at 1/4 and 3/4 of it
    assert xs[0] == pytest.approx(-2 * s + 0.25 * s) and xs[1] == pytest.approx(-2 * s + 0.75 * s)
    gx, gy = sample_grid(p)
    assert np.array_equal(gx[0], xs) and np.array_equal(gy[:, 0], ys)


@pytest.mark.parametrize("supersample", [1, 2, 3])
def test_total_iterations_is_the_sum_over_all_samples(supersample: int) -> None:
    p = FractalParams(**{**FRAMES["burning_ship"], "supersample": supersample})
    r = job.render(p, JobSettings.from_env())
    want, _ = escape(p)
    assert r.total_iterations == int(want.sum(dtype=np.uint64))
    assert r.png.startswith(b"\x89PNG")


def test_kernel_refuses_other_kind() -> None:
    chosen = device.choose("cpu")
    k: FractalKernel = job._kernel(chosen, "julia", "float32", KernelShape.for_device(chosen, "float32"),
                                   configure_opencl_cache(JobSettings.from_env().opencl_cache_dir))
    with pytest.raises(ValueError, match="cannot render"):
        next(k.bands(FractalParams(kind="mandelbrot"), 1 << 20))
