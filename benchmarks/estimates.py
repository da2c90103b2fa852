"""The cost model against real renders: estimated_iterations vs the render's total_iterations.

    .venv/bin/python benchmarks/estimates.py

Renders each frame of a table (all three kinds: whole views, zooms into the boundary, high
max_iter, supersampling; then deep frames past float64, which auto renders by perturbation and
the probe prices by perturbation too) with job_image's OpenCL render on this machine's device
(PoCL here), and prints the probe's estimate, the render's own total_iterations, their ratio
(the goal is within 2x either way), and what each cost: the probe in ms, the render in seconds.
`--deep` runs the deep frames alone.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from job_image.job import render  # noqa: E402
from job_image.params import FractalParams, exact  # noqa: E402
from job_image.settings import JobSettings  # noqa: E402
from scheduler.admission.cost import estimated_iterations  # noqa: E402

FRAMES: list[dict] = [
    {"kind": "mandelbrot"},
    {"kind": "mandelbrot", "supersample": 2, "max_iter": 1000},
    {"kind": "mandelbrot", "center_x": -0.743643887, "center_y": 0.131825904, "zoom": 2000, "max_iter": 3000},
    {"kind": "mandelbrot", "center_x": -0.75, "center_y": 0.1, "zoom": 20, "max_iter": 2000},
    {"kind": "mandelbrot", "center_x": -0.16, "center_y": 1.0405, "zoom": 50, "max_iter": 10000,
     "precision": "float64"},
    {"kind": "mandelbrot", "width": 1024, "height": 768, "max_iter": 20000, "precision": "float64"},
    {"kind": "julia", "center_x": 0.0},
    {"kind": "julia", "center_x": 0.0, "julia_re": -0.4, "julia_im": 0.6, "max_iter": 1000},
    {"kind": "julia", "center_x": 0.0, "julia_re": -0.7269, "julia_im": 0.1889, "max_iter": 5000,
     "supersample": 2},
    {"kind": "julia", "center_x": 0.0, "julia_re": 0.285, "julia_im": 0.01, "zoom": 3, "max_iter": 2000},
    {"kind": "burning_ship", "center_x": -0.4, "center_y": -0.5},
    {"kind": "burning_ship", "center_x": -1.762, "center_y": -0.028, "zoom": 40, "max_iter": 1000},
    {"kind": "burning_ship", "center_x": -1.762, "center_y": -0.028, "zoom": 40, "max_iter": 20000,
     "precision": "float64"},
    {"kind": "burning_ship", "center_x": -0.5, "center_y": -0.6, "zoom": 1.5, "supersample": 3},
]
# Past float64: the seahorse valley's classic point, a period-998 and a period-8007 minibrot near
# it (nuclei found by Newton's method), and the Misiurewicz point c = i down to 1e400.
SEAHORSE = ("-0.743643887037158704752191506114774", "0.131825904205311970493132056385139")
NUCLEUS_998 = ("-0.743643887037158870778064543493642575047609962321255060213887",
               "0.131825904205312292821097354874767265262988599679042974937476")
NUCLEUS_8007 = ("-0.743643887037158704752191506114779778215256207948181289816884",
                "0.131825904205311970493132056385140678972952279328918966209128")
DEEP: list[dict] = [
    {"center_x": SEAHORSE[0], "center_y": SEAHORSE[1], "zoom": "1e14", "max_iter": 5000},
    {"center_x": NUCLEUS_998[0], "center_y": NUCLEUS_998[1], "zoom": "2e13", "max_iter": 10000},
    {"center_x": NUCLEUS_8007[0], "center_y": NUCLEUS_8007[1], "zoom": "1e25", "max_iter": 30000},
    {"center_x": NUCLEUS_8007[0], "center_y": NUCLEUS_8007[1], "zoom": "3e28", "max_iter": 50000},
    {"center_x": "0", "center_y": "1." + "0" * 50 + "7", "zoom": "1e50", "max_iter": 1000},
    {"center_x": "0", "center_y": "1", "zoom": "1e400", "max_iter": 3000},
]
DEEP = [{"kind": "mandelbrot", "width": 400, "height": 300, **f} for f in DEEP]


def describe(f: dict) -> str:
    p = FractalParams(**f)
    extra = f" ss{p.supersample}" if p.supersample > 1 else ""
    extra += f" c=({p.julia_re:g}, {p.julia_im:g})" if p.kind == "julia" else ""
    x, y, zoom = (f"{exact(v):.6g}" for v in (p.center_x, p.center_y, p.zoom))
    return (f"{p.kind:12} {p.width}x{p.height}{extra} ({x}, {y}) zoom {zoom} max_iter {p.max_iter} "
            f"{p.plan().precision}")


def main() -> None:
    settings = JobSettings.from_env()
    worst = 1.0
    print(f"{'frame':78} {'estimate':>12} {'rendered':>12} {'ratio':>6} {'probe':>8} {'render':>8}")
    for f in DEEP if "--deep" in sys.argv else FRAMES + DEEP:
        p = FractalParams(**f, device="cpu") if "device" not in f else FractalParams(**f)
        t0 = time.perf_counter()
        estimate = estimated_iterations(p)
        probe = time.perf_counter() - t0
        rendered = render(p, settings)
        ratio = estimate / rendered.total_iterations
        worst = max(worst, ratio, 1 / ratio)
        print(f"{describe(f):78} {estimate:12.4g} {rendered.total_iterations:12.4g} {ratio:6.3f} "
              f"{probe * 1000:6.0f}ms {rendered.render_seconds:7.2f}s", flush=True)
    print(f"worst factor off: {worst:.3f} (goal: within 2x)")


if __name__ == "__main__":
    main()
