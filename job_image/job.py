"""One render from parameters to PNG bytes: device -> kernel bands -> colour -> encode.

Storage and the command line live elsewhere (output.py, cli.py), so this is what tests and
benchmarks call in-process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from . import colour, device, png
from .errors import NoDevice
from .params import FractalParams
from .perturbation import PerturbationKernel, kernel_shape
from .render import FractalKernel, KernelShape, uses_periodicity
from .settings import JobSettings, configure_opencl_cache


@dataclass(frozen=True)
class Rendered:
    """The encoded image and what result.json reports about how it was made."""

    png: bytes
    device: str
    platform: str
    device_type: str
    vector_width: int
    in_flight: int
    total_iterations: int
    build_seconds: float
    kernel_seconds: float  # kernel execution only (OpenCL profiling), summed over bands
    colour_seconds: float
    encode_seconds: float
    render_seconds: float  # first band enqueued -> PNG encoded (kernels, copies, colour, encode)
    precision: str  # what rendered it: float32, float64 or perturbation (auto resolved)
    counts: np.ndarray | None = None  # (H*n, W*n) uint32 escape counts, when asked for
    # perturbation only: references, reference_iterations, bla_skipped_iterations, ...
    deep: dict[str, Any] = field(default_factory=dict)


@lru_cache(maxsize=16)
def _kernel(chosen: device.Chosen, kind: str, precision: str, shape: KernelShape,
            cache_dir: Path | None, periodic: bool = True) -> FractalKernel:
    # One context and built program per configuration and process: repeated renders (tests,
    # benchmarks) skip the context setup and build entirely.
    return FractalKernel(chosen, kind, precision, shape, cache_dir, periodic)


@lru_cache(maxsize=4)
def _perturbation_kernel(chosen: device.Chosen, deltas: str, shape: KernelShape,
                         cache_dir: Path | None) -> PerturbationKernel:
    return PerturbationKernel(chosen, deltas, cache_dir, shape=shape)


def render(p: FractalParams, settings: JobSettings, progress: Callable[[int], None] | None = None,
           env: dict[str, str] | None = None, keep_counts: bool = False,
           rows: tuple[int, int] | None = None,
           on_device: Callable[[device.Chosen], None] | None = None) -> Rendered:
    """Render `p` (only its pixel rows [first, end) with `rows`: a band of a split render);
    `on_device(chosen)` once the device is chosen, `progress(percent)` after each band. Raises
    NoDevice (exit 3). The escape counts are kept (`Rendered.counts`) when `keep_counts` or
    `p.counts`."""
    cache = configure_opencl_cache(settings.opencl_cache_dir)
    try:
        chosen = device.choose(p.device, env)
    except NoDevice as exc:
        if cache is None:  # PoCL finds no device when it has nowhere to write: that is the cause
            raise NoDevice(
                f"no writable directory for the OpenCL kernel cache ({settings.opencl_cache_dir}, "
                f"nor a temp dir), which PoCL needs: set OPENCL_CACHE_DIR; {exc}"
            ) from exc
        raise
    if on_device is not None:
        on_device(chosen)
    plan = p.plan()
    if plan.precision != "float32":
        device.require_fp64(chosen)
    t_build = time.perf_counter()
    kernel: FractalKernel | PerturbationKernel
    if plan.deltas:
        shape = kernel_shape(chosen, plan.deltas, settings.vector_width, settings.in_flight)
        kernel = _perturbation_kernel(chosen, plan.deltas, shape, cache)
    else:
        shape = KernelShape.for_device(chosen, plan.precision, settings.vector_width, settings.in_flight)
        kernel = _kernel(chosen, p.kind, plan.precision, shape, cache, uses_periodicity(p))
    build_seconds = time.perf_counter() - t_build

    n = p.supersample
    lut = colour.palette(p.colormap)
    # Each band is compressed on the encoder's threads as soon as it is coloured, while the
    # kernel renders the next: what is left to wait for after the last band is encode_seconds.
    height = rows[1] - rows[0] if rows else p.height
    encoder = png.Encoder(p.width, height, lut if n == 1 else None, settings.png_compress_level,
                          settings.png_threads)
    total = 0
    colour_seconds = 0.0
    counts = np.empty((height * n, p.width * n), np.uint32) if keep_counts or p.counts else None
    t0 = time.perf_counter()
    for band in kernel.bands(p, settings.band_samples, rows):
        tc = time.perf_counter()
        total += int(band.counts.sum(dtype=np.uint64))
        if counts is not None:
            counts[band.row0:band.row0 + band.counts.shape[0]] = band.counts
        encoder.add(band.shades if n == 1 else colour.downsample(band.shades, lut, n))
        colour_seconds += time.perf_counter() - tc
        if progress:
            progress((band.row0 + band.counts.shape[0]) * 100 // (height * n))
    te = time.perf_counter()
    data = encoder.finish()
    done = time.perf_counter()
    return Rendered(
        png=data,
        device=chosen.name,
        platform=chosen.platform_name,
        device_type="gpu" if chosen.is_gpu else "cpu",
        vector_width=shape.vector_width,
        in_flight=shape.in_flight,
        total_iterations=total,
        build_seconds=build_seconds,
        kernel_seconds=kernel.kernel_seconds,
        colour_seconds=colour_seconds,
        encode_seconds=done - te,
        render_seconds=done - t0,
        precision=plan.precision,
        counts=counts,
        deep=kernel.stats.document() if isinstance(kernel, PerturbationKernel) else {},
    )
