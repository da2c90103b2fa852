"""The OpenCL stage: context -> program build -> kernel over bands -> copy back.

A frame of W x H pixels with supersample n is a grid of (W*n) x (H*n) samples. Sample column
X (0 <= X < W*n) lies at x = center_x + (X + 0.5 - W*n/2) * s/n with s = 3/zoom/W, and sample
row Y at y = center_y - (Y + 0.5 - H*n/2) * s/n: the n x n samples of a pixel sit at the
centres of an n x n grid inside it (for n = 1 this is exactly the pixel mapping of docs/design.md).
Coordinates are computed on the host in float64 and rounded once to the kernel's precision,
so a float32 device without fp64 still gets the same sample positions.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyopencl as cl

from .device import Chosen
from .interior import has_attracting_cycle
from .params import FractalParams

KERNEL_SOURCE = (Path(__file__).parent / "kernels" / "fractal.cl").read_text()
KIND_CODES = {"mandelbrot": 0, "julia": 1, "burning_ship": 2}
# Row strides are padded to this many samples: a multiple of every vector width * in-flight
# count allowed below, and of a GPU warp, so loads stay aligned and coalesced.
ROW_PAD = 64
# Whether the kernel looks for orbits that repeat exactly (see the kernel), per kind. It saves
# the iterations of interior samples after their orbit settles (the burning ship's body:
# 1.2-1.4x faster) and costs the samples still running after the head a test per block
# (frames with little interior: up to ~25 % slower here). Julia (None) is decided per frame:
# on where its constant has an attracting cycle, so that the set has interior (the rabbit:
# 3-8x faster), off elsewhere (-0.8+0.156i, no interior: 0.5-1.5x across runs, mostly
# noise). `benchmarks/kernel.py` measures both ways.
PERIODIC: dict[str, bool | None] = {"mandelbrot": True, "julia": None, "burning_ship": True}


def uses_periodicity(p: FractalParams) -> bool:
    """Whether `p` is rendered with the periodicity test (see PERIODIC)."""
    default = PERIODIC[p.kind]
    return has_attracting_cycle(p.julia_re, p.julia_im) if default is None else default


@dataclass(frozen=True)
class KernelShape:
    """A work-item's layout: in_flight vectors of vector_width lanes, over a tile of samples."""

    vector_width: int
    in_flight: int
    # Iterations per block between escape tests (see the kernel). 8 measured best on PoCL:
    # 4 tests too often, 16 replays too much when a lane escapes.
    check_every: int = 8
    # Samples per work-item, a run of the band's rows, shared out among its lanes (see the
    # kernel): long on a CPU so that little time goes to the tail where lanes run out of
    # samples (8192: 4 rows of a 2048 frame); one vector group on a GPU, which runs one
    # sample per work-item.
    tile: int = 8192
    # Iterations every sample gets in fixed vector groups before the lanes refill (see the
    # kernel): most samples escape within them, at the least cost per sample.
    head: int = 32

    def __post_init__(self) -> None:
        per_item = self.vector_width * self.in_flight
        if self.tile % per_item or not 0 < self.tile <= 1 << 16:
            raise ValueError(f"tile {self.tile} must be a multiple of {per_item}, at most 65536")

    @classmethod
    def for_device(cls, chosen: Chosen, precision: str, vector_width: int = 0,
                   in_flight: int = 0) -> KernelShape:
        """GPUs vectorise across work-items, so one sample each; CPUs want one SIMD register
        per vector (the device's native width: 8 floats / 4 doubles on AVX2, 16 / 8 on
        AVX-512; wider vectors spill and PoCL warns about the ABI) and four vectors in flight
        to hide the latency of the dependent multiply-add chain (measured with PoCL: two in
        flight reach about two thirds of the speed of four)."""
        if chosen.is_gpu:
            vw, inf = 1, 1
        else:
            vw, inf = min(max(chosen.native_vector_width(precision), 1), 16), 4
        vw, inf = vector_width or vw, in_flight or inf
        if vw not in (1, 2, 4, 8, 16) or inf not in (1, 2, 4):
            raise ValueError(f"vector width {vw} / in-flight {inf} unsupported (1-16 / 1, 2, 4)")
        return cls(vw, inf, tile=vw * inf if chosen.is_gpu else cls.tile)


def sample_axes(p: FractalParams) -> tuple[np.ndarray, np.ndarray]:
    """Float64 sample coordinates: x per sample column, y per sample row (see module doc)."""
    n = p.supersample
    center_x, center_y, zoom = p.float_view()
    s = 3.0 / zoom / p.width / n
    wn, hn = p.width * n, p.height * n
    xs = center_x + (np.arange(wn, dtype=np.float64) + 0.5 - wn / 2.0) * s
    ys = center_y - (np.arange(hn, dtype=np.float64) + 0.5 - hn / 2.0) * s
    return xs, ys


@dataclass
class Band:
    """One band of sample rows; the arrays are reused, valid until the next band is requested."""

    row0: int  # first sample row
    counts: np.ndarray  # (rows, W*n) uint32 escape counts
    shades: np.ndarray  # (rows, W*n) uint8 palette indices (smooth colouring, see colour.py)


class FractalKernel:
    """A built kernel for one device, kind and precision; keep it to render several frames."""

    def __init__(self, chosen: Chosen, kind: str, precision: str, shape: KernelShape,
                 cache_dir: Path | None = None, periodic: bool = True,
                 brute_force: bool = False) -> None:
        """`periodic`: build with the periodicity test (see `uses_periodicity`);
        `brute_force` turns off both exact skips, for benchmarks to compare with."""
        self.chosen, self.kind, self.precision, self.shape = chosen, kind, precision, shape
        self.real = np.float32 if precision == "float32" else np.float64
        self.ctx = cl.Context([chosen.device])
        self.queue = cl.CommandQueue(self.ctx, properties=cl.command_queue_properties.PROFILING_ENABLE)
        double = precision == "float64"
        options = [
            f"-DREAL={'double' if double else 'float'}",
            f"-DITYPE={'long' if double else 'int'}",
            f"-DIS_DOUBLE={int(double)}",
            f"-DVW={shape.vector_width}",
            f"-DIF={shape.in_flight}",
            f"-DCHECK={shape.check_every}",
            f"-DTILE={shape.tile}",
            f"-DHEAD={shape.head}",
            f"-DKIND={KIND_CODES[kind]}",
            f"-DPERIODIC={int(periodic and not brute_force)}",
            f"-DINTERIOR={int(not brute_force)}",
        ]
        t0 = time.perf_counter()
        program = cl.Program(self.ctx, KERNEL_SOURCE).build(
            options, cache_dir=str(cache_dir) if cache_dir else None
        )
        self.kernel = program.escape
        self._warm_up()
        self.build_seconds = time.perf_counter() - t0
        self.kernel_seconds = 0.0  # kernel execution time of the latest bands() call

    def _local_size(self) -> tuple[int, int] | None:
        # On a CPU, PoCL compiles the kernel once per work-group size, so a fixed (1, 1) lets
        # every frame size reuse one cached binary; each work-item already takes a whole tile.
        # A GPU driver picks its own work-group size.
        return None if self.chosen.is_gpu else (1, 1)

    def _warm_up(self) -> None:
        """Run once on a tiny frame: PoCL finishes compiling at the first launch (~0.3 s cold),
        which belongs to the build, not to the first band's kernel time."""
        per_item = self.shape.vector_width * self.shape.in_flight
        flags = cl.mem_flags
        coords = cl.Buffer(self.ctx, flags.READ_ONLY | flags.COPY_HOST_PTR,
                           hostbuf=np.zeros(per_item, self.real))
        out = cl.Buffer(self.ctx, flags.WRITE_ONLY, per_item * 4)
        self.kernel(self.queue, (1, 1), self._local_size(), coords, coords, np.int32(0), np.int32(1),
                    np.int32(per_item), np.int32(per_item), np.int32(1), self.real(0), self.real(0),
                    np.float32(1), np.int32(0), out, out).wait()

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.precision}/vw{self.shape.vector_width}x{self.shape.in_flight}"

    def bands(self, p: FractalParams, band_samples: int,
              span: tuple[int, int] | None = None) -> Iterator[Band]:
        """Render `p` band by band, yielding each band's escape counts and palette indices.
        `span`: only the pixel rows [first, end) of the frame, at the frame's own sample
        positions (a render array's band: the bands join into the whole frame exactly).

        Two bands are in flight: the next band's kernel runs while the caller uses this one
        (supersample averaging, copying into the image), and device plus host memory stay
        bounded by two bands (5 bytes per sample each) whatever the frame size.
        """
        method = p.plan().precision
        if (p.kind, method) != (self.kind, self.precision):
            raise ValueError(f"kernel {self.name} cannot render {p.kind}/{method}")
        self.kernel_seconds = 0.0
        n = p.supersample
        xs, ys = sample_axes(p)
        if span is not None:
            ys = ys[span[0] * n : span[1] * n]
        wn, hn = xs.size, ys.size
        stride = -(-wn // ROW_PAD) * ROW_PAD
        xs_np = np.zeros(stride, self.real)
        xs_np[:wn] = xs  # padding lanes compute harmless garbage that is never read
        ys_np = ys.astype(self.real)
        rows = min(hn, max(n, band_samples // stride // n * n))  # whole pixel rows per band

        flags = cl.mem_flags
        xs_g = cl.Buffer(self.ctx, flags.READ_ONLY | flags.COPY_HOST_PTR, hostbuf=xs_np)
        ys_g = cl.Buffer(self.ctx, flags.READ_ONLY | flags.COPY_HOST_PTR, hostbuf=ys_np)
        slots = []
        for _ in range(2):
            counts_g = cl.Buffer(self.ctx, flags.WRITE_ONLY, rows * stride * 4)
            shades_g = cl.Buffer(self.ctx, flags.WRITE_ONLY, rows * stride)
            counts_np = np.empty((rows, stride), np.uint32)
            shades_np = np.empty((rows, stride), np.uint8)
            slots.append((counts_g, shades_g, counts_np, shades_np))

        local = self._local_size()
        self.kernel.set_args(xs_g, ys_g, np.int32(0), np.int32(0), np.int32(stride), np.int32(wn),
                             np.int32(p.max_iter),
                             self.real(p.julia_re), self.real(p.julia_im), np.float32(1.0 / p.max_iter),
                             np.int32(0), None, None)

        def enqueue(slot: int, row0: int) -> tuple[int, int, cl.Event, cl.Event]:
            counts_g, shades_g, counts_np, shades_np = slots[slot]
            band_rows = min(rows, hn - row0)
            self.kernel.set_arg(2, np.int32(row0))
            self.kernel.set_arg(3, np.int32(band_rows))
            self.kernel.set_arg(11, counts_g)
            self.kernel.set_arg(12, shades_g)
            tiles = -(-band_rows * stride // self.shape.tile)
            k_evt = cl.enqueue_nd_range_kernel(self.queue, self.kernel, (tiles, 1), local)
            c_evt = cl.enqueue_copy(self.queue, counts_np[:band_rows], counts_g, is_blocking=False)
            s_evt = cl.enqueue_copy(self.queue, shades_np[:band_rows], shades_g, is_blocking=False)
            return row0, band_rows, k_evt, cl.enqueue_marker(self.queue, wait_for=[c_evt, s_evt])

        pending = [enqueue(0, 0)]
        slot = 0
        while pending:
            row0, band_rows, k_evt, done = pending.pop(0)
            if row0 + band_rows < hn:
                pending.append(enqueue(1 - slot, row0 + band_rows))
            done.wait()
            self.kernel_seconds += (k_evt.profile.end - k_evt.profile.start) * 1e-9
            _, _, counts_np, shades_np = slots[slot]
            yield Band(row0, counts_np[:band_rows, :wn], shades_np[:band_rows, :wn])
            slot = 1 - slot
