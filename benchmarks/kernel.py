"""Render-job speed on this machine's CPU (PoCL), printed, never asserted.

    .venv/bin/python benchmarks/kernel.py [--reps N]

Prints G iterations/s for the fixed frame of issue 2 (mandelbrot 2048x2048, max_iter 500,
zoom 1.2 at (-0.75, 0)) in float32 and float64, and - where gcc is present - the ratio to
shared/reference/mandel_ref.c compiled and run on the same frame in the same run; kernel
time against the whole render (colouring, PNG encode, upload to a local directory) at
1024^2 and 2048^2; PNG encode variants; and the kernel build with a cold and a warm cache.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from job_image import colour, device, job, output, png  # noqa: E402
from job_image.params import FractalParams  # noqa: E402
from job_image.render import KernelShape  # noqa: E402
from job_image.settings import JobSettings, configure_opencl_cache  # noqa: E402
from job_image.storage import LocalStorage  # noqa: E402

REFERENCE_C = REPO.parent / "shared" / "reference" / "mandel_ref.c"
FRAME = dict(kind="mandelbrot", center_x=-0.75, center_y=0.0, zoom=1.2, max_iter=500, device="cpu")

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


def find_reference(workdir: Path) -> Path | None:
    """Compile the C reference the way its header says; None without gcc or the source, or
    on a CPU without AVX-512 (the reference is hand-written AVX-512 and does not compile)."""
    gcc = shutil.which("gcc")
    if not gcc or not REFERENCE_C.exists():
        return None
    exe = workdir / "mandel_ref"
    cmd = [gcc, "-O3", "-march=native", "-fopenmp", str(REFERENCE_C), "-o", str(exe)]
    if subprocess.run(cmd, capture_output=True).returncode != 0:
        return None
    return exe


def run_reference(exe: Path, precision: str, reps: int) -> dict:
    args = [
        str(exe),
        "2048",
        "2048",
        "-0.75",
        "0",
        "1.2",
        "500",
        "f32" if precision == "float32" else "f64",
        str(reps),
    ]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def kernel_only(p: FractalParams, settings: JobSettings, reps: int) -> tuple[float, int, KernelShape]:
    """Best kernel seconds over `reps` and the total iterations, with no host work in between
    (in a job, colouring band k overlaps the kernel of band k+1 and competes for the cores)."""
    cache = configure_opencl_cache(settings.opencl_cache_dir)
    chosen = device.choose("cpu")
    shape = KernelShape.for_device(chosen, p.precision, settings.vector_width, settings.in_flight)
    kernel = job._kernel(chosen, p.kind, p.precision, shape, cache)
    best, total = float("inf"), 0
    for _ in range(reps + 1):  # the first run warms up
        total = sum(int(b.counts.sum(dtype=np.uint64)) for b in kernel.bands(p, settings.band_samples))
        best = min(best, kernel.kernel_seconds)
    return best, total, shape


def best_render(p: FractalParams, settings: JobSettings, reps: int) -> job.Rendered:
    job.render(p, settings)  # warm-up: context, build, PoCL's per-size compile
    runs = [job.render(p, settings) for _ in range(reps)]
    return min(runs, key=lambda r: r.kernel_seconds)


def kernel_figures(settings: JobSettings, reps: int, ref_exe: Path | None) -> None:
    print("== kernel: mandelbrot 2048x2048, max_iter 500, zoom 1.2 at (-0.75, 0), CPU")
    for precision in ("float32", "float64"):
        p = FractalParams(**FRAME, width=2048, height=2048, precision=precision)
        # Alternate the two, best of all rounds each: other load on a shared machine then
        # hits both sides alike instead of whichever happened to run at the wrong moment.
        seconds, ref = float("inf"), None
        for _ in range(3):
            s, total, shape = kernel_only(p, settings, reps)
            seconds = min(seconds, s)
            if ref_exe is not None:
                r = run_reference(ref_exe, precision, reps)
                ref = r if ref is None or r["seconds"] < ref["seconds"] else ref
        gips = total / seconds / 1e9
        print(
            f"{precision}: {gips:6.2f} G iter/s  kernel {seconds * 1e3:7.2f} ms  total_iterations {total}  "
            f"(vector {shape.vector_width} x {shape.in_flight} in flight, best of {3 * reps})"
        )
        if ref is not None:
            print(
                f"{'':9}C reference: {ref['giter_per_s']:6.2f} G iter/s  {ref['seconds'] * 1e3:7.2f} ms  "
                f"total_iterations {ref['total_iterations']}  "
                f"({ref['threads']} threads, best of {3 * reps})"
            )
            print(
                f"{'':9}ratio to reference: {gips / ref['giter_per_s']:.2f}x  "
                f"(totals differ by {total - ref['total_iterations']:+d}: the reference's "
                "gcc contracts a*b+c into FMA, the kernel forbids it)"
            )
    if ref_exe is None:
        print("(reference not built: needs gcc, shared/reference/mandel_ref.c and an AVX-512 CPU;"
              " ratio not measured)")


def whole_render_figures(settings: JobSettings, reps: int) -> None:
    print("== whole render (float32, default colormap, palette PNG, upload to a local directory)")
    with tempfile.TemporaryDirectory() as tmp:
        storage = LocalStorage(tmp)
        for side in (1024, 2048):
            p = FractalParams(**FRAME, width=side, height=side)
            r = best_render(p, settings, reps)
            doc = output.result_document("bench", p, r)
            t0 = time.perf_counter()
            output.upload(storage, f"bench/{side}/", r.png, doc)
            upload = time.perf_counter() - t0
            whole = r.render_seconds + upload
            print(
                f"{side}^2: kernel {r.kernel_seconds * 1e3:6.1f} ms | "
                f"colour {r.colour_seconds * 1e3:6.1f} ms | "
                f"PNG encode {r.encode_seconds * 1e3:6.1f} ms | upload {upload * 1e3:5.1f} ms | "
                f"whole {whole * 1e3:6.1f} ms | kernel share {r.kernel_seconds / whole:4.0%} | "
                f"PNG {len(r.png) / 1e3:.0f} kB"
            )


def encode_figures(settings: JobSettings) -> None:
    print("== PNG encode at 1024^2 (same image)")
    p = FractalParams(**FRAME, width=1024, height=1024)
    r = job.render(p, settings)
    idx = np.asarray(Image.open(io.BytesIO(r.png)))
    lut = colour.palette(p.colormap)
    rgb = np.take(lut, idx, axis=0)
    variants = {
        "palette, level 1 (used)": lambda: png.encode(idx, lut, 1),
        "RGB, level 1": lambda: Image.fromarray(rgb).save(io.BytesIO(), "PNG", compress_level=1),
        "RGB, Pillow default (6)": lambda: Image.fromarray(rgb).save(io.BytesIO(), "PNG"),
    }
    for name, fn in variants.items():
        best = 1e9
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        print(f"{name:26} {best * 1e3:6.1f} ms")


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
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    settings = JobSettings.from_env()
    with tempfile.TemporaryDirectory() as tmp:
        ref_exe = find_reference(Path(tmp))
        kernel_figures(settings, args.reps, ref_exe)
    whole_render_figures(settings, args.reps)
    encode_figures(settings)
    build_figures()


if __name__ == "__main__":
    main()
