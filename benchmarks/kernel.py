"""Render-job speed on this machine's CPU (PoCL), printed, never asserted.

    .venv/bin/python benchmarks/kernel.py [--reps N] [--rounds R]

1. The kernel against a hand-vectorised brute-force C reference, same frame, same run, on
   three frames at 2048^2, float32 and float64: the yardstick (mandelbrot, max_iter 500,
   zoom 1.2 at (-0.75, 0)), seahorse valley (zoom 100, max_iter 2000) and a julia frame, the
   last two with little interior. Kernel and reference alternate for R rounds; each side's
   best time gives the ratio, and the per-round ratios give its spread. The reference is
   shared/reference/mandel_ref.c (AVX-512) where it builds; on a CPU without AVX-512 it is
   benchmarks/mandel_ref_avx2.c, a line-by-line AVX2 port labelled as a STAND-IN, which also
   runs the julia frame (the AVX-512 reference has no julia mode). The kernel's counts are
   checked against its own brute-force build (no skips): equal totals, or a loud mismatch.
2. Periodicity on and off, per kind, on frames with interior and without.
3. The whole render (kernel, colouring, PNG encode, upload to a local directory) at 1024^2
   and 2048^2; PNG encoders compared on the same image; kernel build cold and warm.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from job_image import colour, device, job, output, png  # noqa: E402
from job_image.params import FractalParams  # noqa: E402
from job_image.render import PERIODIC, FractalKernel, KernelShape, uses_periodicity  # noqa: E402
from job_image.settings import JobSettings, configure_opencl_cache  # noqa: E402
from job_image.storage import LocalStorage  # noqa: E402

REFERENCE_C = REPO.parent / "shared" / "reference" / "mandel_ref.c"
STAND_IN_C = REPO / "benchmarks" / "mandel_ref_avx2.c"
FRAME = dict(kind="mandelbrot", center_x=-0.75, center_y=0.0, zoom=1.2, max_iter=500, device="cpu")
FRAMES = {
    "yardstick": FRAME,
    "seahorse valley": dict(kind="mandelbrot", center_x=-0.743643887037151, center_y=0.131825904205330,
                            zoom=100.0, max_iter=2000, device="cpu"),
    "julia": dict(kind="julia", center_x=0.0, center_y=0.0, zoom=1.0, max_iter=500,
                  julia_re=-0.8, julia_im=0.156, device="cpu"),
}
# Frames for the periodicity comparison: each kind with interior, and julia without.
PERIODICITY_FRAMES = {
    "mandelbrot yardstick": FRAME,
    "mandelbrot seahorse": FRAMES["seahorse valley"],
    "julia (rabbit, interior)": dict(kind="julia", center_x=0.0, center_y=0.0, zoom=1.2, max_iter=500,
                                     julia_re=-0.123, julia_im=0.745, device="cpu"),
    "julia (-0.8+0.156i)": FRAMES["julia"],
    "burning_ship (body)": dict(kind="burning_ship", center_x=-0.45, center_y=-0.5, zoom=1.0, max_iter=500,
                                device="cpu"),
}

COLD_WARM = """
import json, time
from job_image import device
from job_image.params import FractalParams
from job_image.render import FractalKernel, KernelShape
from job_image.settings import JobSettings, configure_opencl_cache
cache = configure_opencl_cache(JobSettings.from_env().opencl_cache_dir)
t0 = time.perf_counter()
chosen = device.choose("cpu")
k = FractalKernel(chosen, "mandelbrot", "float32", KernelShape.for_device(chosen, "float32"), cache)
t1 = time.perf_counter()
for _ in k.bands(FractalParams(width=64, height=64, max_iter=50), 1 << 20):
    pass
t2 = time.perf_counter()
print(json.dumps({"build": t1 - t0, "first_run": t2 - t1}))
"""


@dataclass(frozen=True)
class Reference:
    exe: Path
    label: str
    julia: bool  # takes JULIA_RE JULIA_IM


def has_avx512() -> bool:
    try:
        return "avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine() not in ("x86_64", "AMD64")


def build_references(workdir: Path) -> tuple[Reference | None, Reference | None]:
    """(mandelbrot reference, julia reference): the AVX-512 yardstick where this CPU has
    AVX-512 and gcc builds it, else the AVX2 stand-in; julia always needs the stand-in."""
    gcc = shutil.which("gcc")
    if not gcc:
        return None, None

    def build(src: Path, name: str) -> Path | None:
        exe = workdir / name
        cmd = [gcc, "-O3", "-march=native", "-fopenmp", str(src), "-o", str(exe)]
        return exe if src.exists() and subprocess.run(cmd, capture_output=True).returncode == 0 else None

    stand_in = build(STAND_IN_C, "mandel_ref_avx2")
    stand = Reference(stand_in, "AVX2 STAND-IN benchmarks/mandel_ref_avx2.c", True) if stand_in else None
    if has_avx512() and (exe := build(REFERENCE_C, "mandel_ref")):
        return Reference(exe, "shared/reference/mandel_ref.c (AVX-512)", False), stand
    return stand, stand


def cpu_seconds(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def run_reference(ref: Reference, p: FractalParams) -> tuple[float, float, int]:
    """One run: (wall seconds, CPU seconds of all its threads, total_iterations)."""
    args = [str(ref.exe), str(p.width), str(p.height), repr(p.center_x), repr(p.center_y), repr(p.zoom),
            str(p.max_iter), "f32" if p.precision == "float32" else "f64", "1"]
    if p.kind == "julia":
        args += [repr(p.julia_re), repr(p.julia_im)]
    c0 = cpu_seconds(resource.RUSAGE_CHILDREN)
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(resource.RUSAGE_CHILDREN) - c0
    r = json.loads(out.strip().splitlines()[-1])
    return r["seconds"], cpu, r["total_iterations"]


class Kernels:
    """Built kernels by (kind, precision, periodic, brute_force), built once each."""

    def __init__(self, settings: JobSettings) -> None:
        self.settings = settings
        self.cache = configure_opencl_cache(settings.opencl_cache_dir)
        self.chosen = device.choose("cpu")
        self._built: dict[tuple, FractalKernel] = {}

    def get(self, kind: str, precision: str, periodic: bool = True,
            brute_force: bool = False) -> FractalKernel:
        key = (kind, precision, periodic, brute_force)
        if key not in self._built:
            s = self.settings
            shape = KernelShape.for_device(self.chosen, precision, s.vector_width, s.in_flight)
            self._built[key] = FractalKernel(self.chosen, kind, precision, shape, self.cache,
                                             periodic=periodic, brute_force=brute_force)
        return self._built[key]

    def run(self, k: FractalKernel, p: FractalParams) -> tuple[float, float, int]:
        """One render of `p`: (kernel seconds, process CPU seconds, total_iterations)."""
        c0 = cpu_seconds(resource.RUSAGE_SELF)
        total = sum(int(b.counts.sum(dtype=np.uint64)) for b in k.bands(p, self.settings.band_samples))
        return k.kernel_seconds, cpu_seconds(resource.RUSAGE_SELF) - c0, total


def best_of(runs: list[tuple[float, float, int]]) -> tuple[float, float]:
    return min(r[0] for r in runs), min(r[1] for r in runs)


def ratio_figures(kernels: Kernels, refs: tuple[Reference | None, Reference | None],
                  reps: int, rounds: int) -> None:
    side = 2048
    mref, jref = refs
    print(f"== kernel vs brute-force C reference, {side}x{side}, CPU ({os.cpu_count()} cores), "
          f"{rounds} rounds alternating kernel and reference, {reps} runs each per round")
    if mref is None:
        print("(no reference: needs gcc and a C source; ratios not measured)")
    elif mref is jref:
        print(f"reference: {mref.label} -- this CPU has no AVX-512, so the yardstick "
              "shared/reference/mandel_ref.c cannot run here; ratios are to the stand-in")
    else:
        print(f"reference: {mref.label}; julia: {jref.label if jref else 'none'}")
    for name, frame in FRAMES.items():
        f = {k: v for k, v in frame.items() if k != "device"}
        print(f"-- {name}: {f}")
        ref = jref if frame["kind"] == "julia" else mref
        for precision in ("float32", "float64"):
            p = FractalParams(**frame, width=side, height=side, precision=precision)
            k = kernels.get(p.kind, precision, uses_periodicity(p))
            kernels.run(k, p)  # warm-up: PoCL compiles per size at the first launch
            ours, theirs, per_round = [], [], []
            for _ in range(rounds):
                mine = [kernels.run(k, p) for _ in range(reps)]
                ours += mine
                if ref is not None:
                    other = [run_reference(ref, p) for _ in range(reps)]
                    theirs += other
                    per_round.append(best_of(other)[0] / best_of(mine)[0])
            _, _, brute_total = kernels.run(kernels.get(p.kind, precision, brute_force=True), p)
            wall, cpu = best_of(ours)
            total = ours[-1][2]
            exact = "exact: equal to the kernel's brute-force build" if total == brute_total else \
                f"MISMATCH: brute-force build counts {brute_total}"
            print(f"  {precision}: kernel {wall * 1e3:7.1f} ms ({total / wall / 1e9:5.1f} G iter/s "
                  f"brute-force equivalent), total_iterations {total} ({exact})")
            if theirs:
                rwall, rcpu = best_of(theirs)
                rtotal = theirs[-1][2]
                print(f"  {'':7}  reference {rwall * 1e3:7.1f} ms ({rtotal / rwall / 1e9:5.1f} G iter/s), "
                      f"total_iterations {rtotal} (differs by {total - rtotal:+d}: gcc contracts a*b+c "
                      "into FMA, the kernel forbids it)")
                print(f"  {'':7}  RATIO {rwall / wall:5.2f}x  (per round {min(per_round):.2f}-"
                      f"{max(per_round):.2f}x; CPU time of all threads: {rcpu:.3f} s vs {cpu:.3f} s "
                      f"= {rcpu / cpu:.2f}x)")


def periodicity_figures(kernels: Kernels, reps: int, rounds: int) -> None:
    side = 1024
    default = ", ".join(f"{k} {'by its constant' if v is None else 'on' if v else 'off'}"
                        for k, v in PERIODIC.items())
    print(f"== periodicity test on / off, {side}x{side} (kernel ms, best of {rounds * reps}; "
          f"enabled by default: {default})")
    for name, frame in PERIODICITY_FRAMES.items():
        cells = []
        for precision in ("float32", "float64"):
            p = FractalParams(**frame, width=side, height=side, precision=precision)
            on, off = kernels.get(p.kind, precision, True), kernels.get(p.kind, precision, False)
            kernels.run(on, p)
            kernels.run(off, p)
            t_on, t_off = [], []
            for _ in range(rounds):
                t_on += [kernels.run(on, p) for _ in range(reps)]
                t_off += [kernels.run(off, p) for _ in range(reps)]
            a, b = best_of(t_on)[0], best_of(t_off)[0]
            cells.append(f"{precision} on {a * 1e3:6.1f} / off {b * 1e3:6.1f} ({b / a:4.2f}x)")
        print(f"  {name:26} " + " | ".join(cells))


def whole_render_figures(settings: JobSettings, reps: int) -> None:
    threads = settings.png_threads or os.cpu_count()
    print(f"== whole render (default colormap, palette PNG on {threads} threads, upload to a local "
          f"directory; best of {reps})")
    print("   colour includes handing each band's rows to the encoder; PNG encode = waiting for the"
          " encoder after the last band (bands are compressed while the kernel renders the next)")
    with tempfile.TemporaryDirectory() as tmp:
        storage = LocalStorage(tmp)
        for precision in ("float32", "float64"):
            for side in (1024, 2048):
                p = FractalParams(**FRAME, width=side, height=side, precision=precision)
                job.render(p, settings)  # warm-up: context, build, PoCL's per-size compile
                r = min((job.render(p, settings) for _ in range(reps)), key=lambda r: r.render_seconds)
                doc = output.result_document("bench", p, r)
                t0 = time.perf_counter()
                output.upload(storage, f"bench/{side}/", r.png, doc)
                upload = time.perf_counter() - t0
                whole = r.render_seconds + upload
                print(
                    f"{precision} {side}^2: kernel {r.kernel_seconds * 1e3:6.1f} ms | "
                    f"colour {r.colour_seconds * 1e3:5.1f} ms | "
                    f"PNG encode {r.encode_seconds * 1e3:5.1f} ms | upload {upload * 1e3:5.1f} ms | "
                    f"whole {whole * 1e3:6.1f} ms | kernel share {r.kernel_seconds / whole:4.0%} | "
                    f"encode share {r.encode_seconds / whole:4.0%} | PNG {len(r.png) / 1e3:.0f} kB"
                )


def encode_figures(settings: JobSettings) -> None:
    threads = settings.png_threads or os.cpu_count() or 1
    print("== PNG encode of one image (the 2048^2 yardstick frame), level 1, best of 5")
    p = FractalParams(**FRAME, width=2048, height=2048)
    r = job.render(p, settings)
    idx = np.asarray(Image.open(io.BytesIO(r.png)))
    lut = colour.palette(p.colormap)
    rgb = np.take(lut, idx, axis=0)

    def pillow(image: np.ndarray, palette: bool) -> bytes:
        img = Image.fromarray(image)
        if palette:
            img.putpalette(lut.tobytes())
        buf = io.BytesIO()
        img.save(buf, "PNG", compress_level=1)
        return buf.getvalue()

    variants = {
        "palette, Pillow (one thread)": lambda: pillow(idx, True),
        "palette, bands, 1 thread": lambda: png.encode(idx, lut, 1, 1),
        f"palette, bands, {threads} threads (used)": lambda: png.encode(idx, lut, 1, threads),
        "RGB, Pillow (one thread)": lambda: pillow(rgb, False),
        f"RGB, bands, {threads} threads": lambda: png.encode(rgb, None, 1, threads),
    }
    for name, fn in variants.items():
        best, size = 1e9, 0
        for _ in range(5):
            t0 = time.perf_counter()
            size = len(fn())
            best = min(best, time.perf_counter() - t0)
        print(f"{name:34} {best * 1e3:6.1f} ms  {size / 1e3:6.0f} kB")


def build_figures() -> None:
    print("== kernel build (program build + PoCL's first-run compile), fresh process each")
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "OPENCL_CACHE_DIR": cache, "PYTHONPATH": str(REPO)}
        env.pop("POCL_CACHE_DIR", None)
        for label in ("cold", "warm"):
            out = subprocess.run(
                [sys.executable, "-c", COLD_WARM], env=env, capture_output=True, text=True, check=True
            ).stdout
            t = json.loads(out.strip().splitlines()[-1])
            print(f"{label}: build {t['build']:.3f} s + first run {t['first_run']:.3f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2, help="runs per side per round")
    ap.add_argument("--rounds", type=int, default=4, help="rounds alternating kernel and reference")
    args = ap.parse_args()
    settings = JobSettings.from_env()
    kernels = Kernels(settings)
    with tempfile.TemporaryDirectory() as tmp:
        ratio_figures(kernels, build_references(Path(tmp)), args.reps, args.rounds)
    periodicity_figures(kernels, args.reps, args.rounds)
    whole_render_figures(settings, args.reps + 3)
    encode_figures(settings)
    build_figures()


if __name__ == "__main__":
    main()
