"""The cost model against real renders: estimated_iterations vs the render's total_iterations.

    .venv/bin/python benchmarks/estimates.py

Renders each frame of a table (all three kinds: whole views, zooms into the boundary, high
max_iter, supersampling) with job_image's OpenCL render on this machine's device (PoCL here),
and prints the probe's estimate, the render's own total_iterations, their ratio (the goal is
within 2x either way), and what each cost: the probe in ms, the render in seconds.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from job_image.job import render  # noqa: E402
from job_image.params import FractalParams  # noqa: E402
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


def describe(f: dict) -> str:
    p = FractalParams(**f)
    extra = f" ss{p.supersample}" if p.supersample > 1 else ""
    extra += f" c=({p.julia_re:g}, {p.julia_im:g})" if p.kind == "julia" else ""
    return (f"{p.kind:12} {p.width}x{p.height}{extra} ({p.center_x:g}, {p.center_y:g}) zoom {p.zoom:g} "
            f"max_iter {p.max_iter} {p.precision}")


def main() -> None:
    settings = JobSettings.from_env()
    worst = 1.0
    print(f"{'frame':78} {'estimate':>12} {'rendered':>12} {'ratio':>6} {'probe':>8} {'render':>8}")
    for f in FRAMES:
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
