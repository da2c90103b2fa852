"""The perturbation render (mandelbrot past float64): reference orbit -> BLA table -> kernel.

Stages, each its own module: the reference orbit in arbitrary precision (orbit.py), the BLA
table built from it (bla.py), and the per-sample delta kernel (kernels/perturbation.cl), which
rebases deltas on its reference where a single reference would glitch. The sample mapping is
render.py's: sample column X lies at center_x + (X + 0.5 - W*n/2) * s with s = 3 / zoom / (W*n),
and the kernel gets exactly the offset (X + 0.5 - W*n/2) * s from the centre, which is the
reference.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gmpy2
import numpy as np
import pyopencl as cl

from . import bla
from .device import Chosen
from .orbit import Orbit, precision_bits, reference_orbit
from .params import FractalParams, exact
from .precision import spacing_log2
from .render import Band

KERNEL_SOURCE = (Path(__file__).parent / "kernels" / "perturbation.cl").read_text()
LOCAL_SIZE = 64  # samples per work-group


@dataclass
class DeepStats:
    """What result.json reports about a perturbation render."""

    deltas: str
    references: int = 1
    reference_iterations: int = 0
    reference_bits: int = 0
    reference_seconds: float = 0.0
    bla_levels: int = 0
    bla_seconds: float = 0.0
    bla_skipped_iterations: int = 0
    glitched_samples: int = 0  # flagged by Pauldelbrot's criterion (with correction off only)

    def document(self) -> dict[str, object]:
        return {
            "deltas": self.deltas,
            "references": self.references,
            "reference_iterations": self.reference_iterations,
            "reference_bits": self.reference_bits,
            "reference_seconds": round(self.reference_seconds, 6),
            "bla_levels": self.bla_levels,
            "bla_seconds": round(self.bla_seconds, 6),
            "bla_skipped_iterations": self.bla_skipped_iterations,
        }


def sample_step(zoom: str, samples_wide: int) -> tuple[float, int]:
    """The sample spacing 3 / zoom / samples_wide as (mantissa in [0.5, 1), exponent), exact to
    float64 at any zoom."""
    with gmpy2.context(gmpy2.get_context(), precision=80, emin=-(2**40), emax=2**40):
        e, m = gmpy2.frexp(gmpy2.mpfr(3) / gmpy2.mpfr(zoom) / samples_wide)
    return float(m), int(e)


class PerturbationKernel:
    """A built perturbation kernel for one device and delta type; keep it for several frames."""

    def __init__(self, chosen: Chosen, deltas: str, cache_dir: Path | None = None,
                 correct: bool = True, use_bla: bool = True) -> None:
        """`correct=False` turns glitch correction (rebasing) off: glitches are only flagged;
        `use_bla=False` iterates every step (for tests and benchmarks)."""
        self.chosen, self.deltas, self.correct, self.use_bla = chosen, deltas, correct, use_bla
        self.ctx = cl.Context([chosen.device])
        self.queue = cl.CommandQueue(self.ctx, properties=cl.command_queue_properties.PROFILING_ENABLE)
        options = [f"-DFLOATEXP={int(deltas == 'floatexp')}", f"-DCORRECT={int(correct)}"]
        t0 = time.perf_counter()
        program = cl.Program(self.ctx, KERNEL_SOURCE).build(
            options, cache_dir=str(cache_dir) if cache_dir else None
        )
        self.kernel = program.perturb
        self._warm_up()
        self.build_seconds = time.perf_counter() - t0
        self.kernel_seconds = 0.0
        self.stats = DeepStats(deltas)

    def _warm_up(self) -> None:
        """Launch once on no rows: PoCL finishes compiling at the first launch, which belongs
        to the build, not to the first band's kernel time."""
        buf = cl.Buffer(self.ctx, cl.mem_flags.READ_WRITE, 16)
        one, zero = np.int32(1), np.int32(0)
        self.kernel(self.queue, (LOCAL_SIZE,), (LOCAL_SIZE,), buf, one, *[buf] * 6, one,  # orbit, BLA
                    np.float64(0.5), zero, one, one, zero, zero,  # step, wn, hn, row0, nrows = 0
                    one, np.float32(1), *[buf] * 4).wait()

    @property
    def name(self) -> str:
        return f"mandelbrot/perturbation/{self.deltas}"

    def bands(self, p: FractalParams, band_samples: int) -> Iterator[Band]:
        """Render `p` band by band, as FractalKernel.bands does; `stats` holds the figures."""
        plan = p.plan()
        if (p.kind, plan.precision, plan.deltas) != ("mandelbrot", "perturbation", self.deltas):
            raise ValueError(f"kernel {self.name} cannot render {p.kind}/{plan.precision}/{plan.deltas}")
        n = p.supersample
        wn, hn = p.width * n, p.height * n
        cx, cy, zoom = (exact(v) for v in (p.center_x, p.center_y, p.zoom))
        stats = self.stats = DeepStats(self.deltas)
        self.kernel_seconds = 0.0

        orbit: Orbit = reference_orbit(str(cx), str(cy), p.max_iter, precision_bits(cx, cy, zoom, wn))
        stats.reference_iterations, stats.reference_bits = orbit.iterations, orbit.bits
        stats.reference_seconds = orbit.seconds
        t0 = time.perf_counter()
        table = bla.build(orbit.z, spacing_log2(zoom, wn) + math.log2(math.hypot(wn, hn) / 2))
        stats.bla_levels, stats.bla_seconds = table.levels, time.perf_counter() - t0
        step_m, step_e = sample_step(str(zoom), wn)
        radius = table.r_log2 if self.deltas == "floatexp" else np.exp2(table.r_log2)

        flags = cl.mem_flags

        def buffer(host: np.ndarray) -> cl.Buffer:
            host = np.ascontiguousarray(host if host.size else np.zeros(1, host.dtype))  # none zero-sized
            return cl.Buffer(self.ctx, flags.READ_ONLY | flags.COPY_HOST_PTR, hostbuf=host)

        rows = min(hn, max(n, band_samples // wn // n * n))  # whole pixel rows per band
        frame = [  # the arguments every band shares (kept here: the kernel call holds no references)
            buffer(orbit.z), np.int32(orbit.iterations),
            buffer(table.a), buffer(table.a_exp), buffer(table.b), buffer(table.b_exp),
            buffer(radius.astype(np.float64)), buffer(table.offsets),
            np.int32(table.levels if self.use_bla else 1),  # level 1 up: none
            np.float64(step_m), np.int32(step_e), np.int32(wn), np.int32(hn),
        ]
        outs = [cl.Buffer(self.ctx, flags.WRITE_ONLY, rows * wn * size) for size in (4, 1, 4, 1)]
        hosts = [np.empty((rows, wn), dt) for dt in (np.uint32, np.uint8, np.uint32, np.uint8)]
        for row0 in range(0, hn, rows):
            band_rows = min(rows, hn - row0)
            size = -(-band_rows * wn // LOCAL_SIZE) * LOCAL_SIZE
            evt = self.kernel(self.queue, (size,), (LOCAL_SIZE,), *frame, np.int32(row0), np.int32(band_rows),
                              np.int32(p.max_iter), np.float32(1.0 / p.max_iter), *outs)
            for host, buf in zip(hosts, outs, strict=True):
                cl.enqueue_copy(self.queue, host[:band_rows], buf)
            self.kernel_seconds += (evt.profile.end - evt.profile.start) * 1e-9
            counts, shades, skipped, glitched = (h[:band_rows] for h in hosts)
            stats.bla_skipped_iterations += int(skipped.sum(dtype=np.uint64))
            stats.glitched_samples += int(np.count_nonzero(glitched))
            yield Band(row0, counts, shades)
