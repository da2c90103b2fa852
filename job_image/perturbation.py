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
from .render import Band, KernelShape

KERNEL_SOURCE = (Path(__file__).parent / "kernels" / "perturbation.cl").read_text()


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
    returned_samples: int = 0  # floatexp frames: times a sample went back from double deltas

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


# Samples per work-item on a CPU: a run of the band's rows that the lanes share out (a long
# one keeps short the tail where lanes run out of samples while one still iterates).
CPU_TILE = 1024
# Vectors in flight per work-item on a CPU: two hide most of the latency of the step's chain
# (the lanes' gathers and BLA lookups already interleave work).
CPU_IN_FLIGHT = 2
# Samples per work-item of the floatexp stage (one at a time; most leave it within a few steps).
FLOATEXP_TILE = 64


def kernel_shape(chosen: Chosen, deltas: str, vector_width: int = 0, in_flight: int = 0) -> KernelShape:
    """The work-item layout of the perturbation kernel's double deltas (see
    kernels/perturbation.cl; floatexp frames use it after their floatexp stage): one SIMD
    register of doubles per vector on a CPU, one sample per work-item on a GPU. The overrides
    (FRACTAL_VECTOR_WIDTH, FRACTAL_IN_FLIGHT) are capped at the 8 lanes the kernel builds."""
    if chosen.is_gpu:
        return KernelShape(1, 1, tile=1)
    vw = min(vector_width or max(chosen.native_vector_width("float64"), 1), 8)
    inf = in_flight or CPU_IN_FLIGHT
    if vw not in (1, 2, 4, 8) or inf not in (1, 2, 4):
        raise ValueError(f"perturbation: vector width {vw} / in-flight {inf} unsupported (1-8 / 1, 2, 4)")
    return KernelShape(vw, inf, tile=CPU_TILE)


class PerturbationKernel:
    """A built perturbation kernel for one device and delta type; keep it for several frames."""

    def __init__(self, chosen: Chosen, deltas: str, cache_dir: Path | None = None,
                 correct: bool = True, use_bla: bool = True, shape: KernelShape | None = None) -> None:
        """`correct=False` turns glitch correction (rebasing) off: glitches are only flagged;
        `use_bla=False` iterates every step (for tests and benchmarks); `shape` defaults to
        `kernel_shape(chosen, deltas)`."""
        self.chosen, self.deltas, self.correct, self.use_bla = chosen, deltas, correct, use_bla
        self.shape = shape or kernel_shape(chosen, deltas)
        self.ctx = cl.Context([chosen.device])
        self.queue = cl.CommandQueue(self.ctx, properties=cl.command_queue_properties.PROFILING_ENABLE)
        shape = self.shape
        self.fx_tile = 1 if chosen.is_gpu else FLOATEXP_TILE
        options = [f"-DFLOATEXP={int(deltas == 'floatexp')}", f"-DCORRECT={int(correct)}",
                   f"-DVW={shape.vector_width}", f"-DIF={shape.in_flight}", f"-DTILE={shape.tile}",
                   f"-DFX_TILE={self.fx_tile}"]
        t0 = time.perf_counter()
        program = cl.Program(self.ctx, KERNEL_SOURCE).build(
            options, cache_dir=str(cache_dir) if cache_dir else None
        )
        self.kernel = program.perturb
        self.floatexp_kernel = program.perturb_floatexp if deltas == "floatexp" else None
        self._warm_up()
        self.build_seconds = time.perf_counter() - t0
        self.kernel_seconds = 0.0
        self.stats = DeepStats(deltas)

    def _local_size(self) -> tuple[int] | None:
        # As FractalKernel's: one work-item per work-group on a CPU (each takes a whole tile,
        # and PoCL compiles once per work-group size); a GPU driver picks its own.
        return None if self.chosen.is_gpu else (1,)

    def _warm_up(self) -> None:
        """Launch once on no rows: PoCL finishes compiling at the first launch, which belongs
        to the build, not to the first band's kernel time."""
        buf = cl.Buffer(self.ctx, cl.mem_flags.READ_WRITE, 64)
        one, zero = np.int32(1), np.int32(0)
        for kernel in filter(None, (self.kernel, self.floatexp_kernel)):
            kernel(self.queue, (1,), self._local_size(), buf, buf, one, *[buf] * 5, one,  # orbit, BLA
                   np.float64(0.5), zero, one, one, zero, zero,  # step, wn, hn, row0, nrows = 0
                   one, np.float32(1), *[buf] * 7).wait()

    @property
    def name(self) -> str:
        return f"mandelbrot/perturbation/{self.deltas}/vw{self.shape.vector_width}x{self.shape.in_flight}"

    @staticmethod
    def _tables(orbit: Orbit, table: bla.BlaTable, deltas: str,
                dropped_dc_log2: float | None = None) -> list[np.ndarray]:
        """The orbit and BLA arrays as the kernel takes them: the orbit's real and imaginary
        parts apart; the BLA levels padded to P, P/2, P/4, ... entries (P a power of two), so
        level k starts at 2P - 2P/2^k, which the kernel computes instead of looking it up;
        each entry's A and B mantissas together (re a, im a, re b, im b). For double deltas
        A, B and R are plain doubles, for floatexp deltas mantissas, exponents and log2 R.
        Padding entries are never valid (R = 0, log2 R = -inf). Double deltas in a floatexp
        frame drop dc, of at most 2^dropped_dc_log2 (see the kernel): there entries are valid
        only where B dc is below 2^-500 of A dz for every |dz| > 2^-440."""
        a, a_exp, b, b_exp, r = table.a, table.a_exp, table.b, table.b_exp, table.r_log2
        if deltas != "floatexp":
            # Entries whose A or B leave double's normal range are never valid; R stays
            # non-increasing with the level at each m, which the kernel's search relies on.
            normal = (np.abs(a_exp) < 1000) & (np.abs(b_exp) < 1000)
            if dropped_dc_log2 is not None:  # |B| < 2^b_exp, |A| >= 2^(a_exp - 1)
                normal &= b_exp + dropped_dc_log2 < a_exp - 1 - 440 - 500
            a_exp, b_exp = np.where(normal, a_exp, 0), np.where(normal, b_exp, 0)
            a = np.ldexp(a.real, a_exp) + 1j * np.ldexp(a.imag, a_exp)
            b = np.ldexp(b.real, b_exp) + 1j * np.ldexp(b.imag, b_exp)
            r = np.where(normal, np.exp2(r), 0.0)
            for k in range(1, table.levels):
                below, level = r[table.level(k - 1)], r[table.level(k)]
                np.minimum(level, below[: 2 * level.size : 2], out=level)
            a_exp, b_exp = np.zeros_like(a_exp), np.zeros_like(b_exp)
        top = 1 << max(int(table.offsets[1]) - 1, 0).bit_length()  # P
        offsets = np.array([2 * top - (2 * top >> k) for k in range(table.levels + 1)], np.int32)

        def padded(values: np.ndarray, fill: float) -> np.ndarray:
            out = np.full(2 * top, fill, values.dtype)
            for k in range(table.levels):
                level = values[table.level(k)]
                out[offsets[k]:offsets[k] + level.size] = level
            return out

        ab = np.stack([padded(a.real, 0), padded(a.imag, 0), padded(b.real, 0), padded(b.imag, 0)], axis=1)
        none = -np.inf if deltas == "floatexp" else 0.0
        return [orbit.z.real, orbit.z.imag, ab, padded(a_exp, 0), padded(b_exp, 0), padded(r, none), offsets]

    def bands(self, p: FractalParams, band_samples: int,
              span: tuple[int, int] | None = None) -> Iterator[Band]:
        """Render `p` band by band, as FractalKernel.bands does (`span`: its pixel rows [first,
        end) alone, a render array's band); `stats` holds the figures."""
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
        dc_max_log2 = spacing_log2(zoom, wn) + math.log2(math.hypot(wn, hn) / 2)
        table = bla.build(orbit.z, dc_max_log2)
        stats.bla_levels, stats.bla_seconds = table.levels, time.perf_counter() - t0
        step_m, step_e = sample_step(str(zoom), wn)

        flags = cl.mem_flags

        def buffer(host: np.ndarray) -> cl.Buffer:
            host = np.ascontiguousarray(host if host.size else np.zeros(1, host.dtype))  # none zero-sized
            return cl.Buffer(self.ctx, flags.READ_ONLY | flags.COPY_HOST_PTR, hostbuf=host)

        rows = min(hn, max(n, band_samples // wn // n * n))  # whole pixel rows per band
        levels = np.int32(table.levels if self.use_bla else 1)  # level 1 up: none
        shared = [np.float64(step_m), np.int32(step_e), np.int32(wn), np.int32(hn)]

        def arguments(deltas: str) -> list[object]:
            """The arguments every band shares (kept here: the kernel call holds no references)."""
            dropped = dc_max_log2 if self.floatexp_kernel and deltas == "float64" else None
            ref_r, ref_i, *tables = (buffer(a) for a in self._tables(orbit, table, deltas, dropped))
            return [ref_r, ref_i, np.int32(orbit.iterations), *tables, levels, *shared]

        frame = arguments("float64")
        floatexp_frame = arguments("floatexp") if self.floatexp_kernel else []
        samples = rows * wn if self.floatexp_kernel else 1
        outs = [cl.Buffer(self.ctx, flags.READ_WRITE, rows * wn * size) for size in (4, 1, 4, 1)]
        states = [cl.Buffer(self.ctx, flags.READ_WRITE, samples * size) for size in (16, 4, 1)]
        status = np.empty((rows, wn) if self.floatexp_kernel else 1, np.uint8)
        hosts = [np.empty((rows, wn), dt) for dt in (np.uint32, np.uint8, np.uint32, np.uint8)]
        local = self._local_size()

        def run(kernel: cl.Kernel, items: int, args: list[object]) -> None:
            evt = kernel(self.queue, (items,), local, *args)
            evt.wait()
            self.kernel_seconds += (evt.profile.end - evt.profile.start) * 1e-9

        first, end = (span[0] * n, span[1] * n) if span else (0, hn)
        for row0 in range(first, end, rows):
            band_rows = min(rows, end - row0)
            band = [np.int32(row0), np.int32(band_rows), np.int32(p.max_iter), np.float32(1.0 / p.max_iter),
                    *outs, *states]
            tiles = -(-band_rows * wn // self.shape.tile)
            if self.floatexp_kernel:
                # floatexp until |dz| suits double deltas, then double, in turn until no sample
                # went back to floatexp (see the kernel)
                cl.enqueue_fill_buffer(self.queue, states[2], np.uint8(0), 0, band_rows * wn)
                returned = -1
                while returned:
                    run(self.floatexp_kernel, -(-band_rows * wn // self.fx_tile), floatexp_frame + band)
                    run(self.kernel, tiles, frame + band)
                    cl.enqueue_copy(self.queue, status[:band_rows], states[2])
                    returned = int(np.count_nonzero(status[:band_rows] == 2))
                    stats.returned_samples += returned
            else:
                run(self.kernel, tiles, frame + band)
            for host, buf in zip(hosts, outs, strict=True):
                cl.enqueue_copy(self.queue, host[:band_rows], buf)
            counts, shades, skipped, glitched = (h[:band_rows] for h in hosts)
            stats.bla_skipped_iterations += int(skipped.sum(dtype=np.uint64))
            stats.glitched_samples += int(np.count_nonzero(glitched))
            yield Band(row0 - first, counts, shades)  # rows counted from the span's first
