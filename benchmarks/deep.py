"""Deep-zoom render speed on this machine (PoCL), printed, never asserted.

    .venv/bin/python benchmarks/deep.py [--width 1920 --height 1080] [--skip-rate]

1. 1920x1080 frames at zoom 1e14, 1e50, 1e115 and 1e400, each around a minibrot, with the
   iterations its structure needs (several times the minibrot's period: its surroundings
   escape after 4-8 periods, its interior never). The minibrots' nuclei were found for this
   benchmark with Newton's method on z_p(c) = 0 from seeds near the Misiurewicz point c = i
   (around which minibrots of period p lie at depth ~ 2^(-2.4 p)); their radii are from the
   usual size estimate 1 / |beta lambda^2| (mathr.co.uk, "Mandelbrot set size estimates").
   Printed per frame: the whole render (orbit, BLA table, kernel, colour, PNG) and its kernel
   time, G iterations/s in brute-force equivalent (total_iterations / render time), the
   reference orbit's and the BLA table's times and the share of iterations BLA skipped.
2. The perturbation kernel's iteration rate against the float64 kernel's on one shallow frame
   (seahorse valley, zoom 100, no interior): both iterate every step (BLA off; the float64
   kernel built without its interior and periodicity skips), so the ratio is per iteration.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from job_image import device, job  # noqa: E402
from job_image.params import FractalParams  # noqa: E402
from job_image.perturbation import PerturbationKernel  # noqa: E402
from job_image.render import FractalKernel, KernelShape  # noqa: E402
from job_image.settings import JobSettings, configure_opencl_cache  # noqa: E402
from tests.job_image.nuclei import NUCLEI  # noqa: E402

# (label, period, zoom, max_iter): each minibrot a tenth to a third of the frame wide, but the
# last, a thousandth (the deepest nucleus at hand)
FRAMES = [
    ("1e14", 21, "1e14", 2000),
    ("1e50", 69, "1e50", 5000),
    ("1e115", 154, "1e115", 10000),
    ("1e400", 536, "1e400", 20000),
]
SHALLOW = dict(kind="mandelbrot", center_x=-0.743643887037151, center_y=0.131825904205330, zoom=100.0,
               max_iter=2000, device="cpu")


def deep_frames(width: int, height: int, settings: JobSettings) -> None:
    print(f"deep frames, {width}x{height}, mandelbrot at minibrots (PoCL CPU):")
    for label, period, zoom, max_iter in FRAMES:
        re, im = NUCLEI[period]
        p = FractalParams(width=width, height=height, center_x=re, center_y=im, zoom=zoom, max_iter=max_iter,
                          device="cpu")
        r = job.render(p, settings)
        d = r.deep
        print(f"  {label:>6} (period {period}, max_iter {max_iter}, {d['deltas']} deltas): "
              f"render {r.render_seconds:6.2f} s (kernel {r.kernel_seconds:6.2f} s), "
              f"{r.total_iterations / r.render_seconds / 1e9:7.2f} G iter/s brute-force equivalent, "
              f"reference orbit {d['reference_seconds']:.3f} s ({d['reference_bits']} bits), "
              f"BLA table {d['bla_seconds']:.3f} s, "
              f"BLA skipped {d['bla_skipped_iterations'] / r.total_iterations:6.1%} "
              f"of {r.total_iterations:.3e} iterations", flush=True)


def per_iteration(side: int, settings: JobSettings) -> None:
    cache = configure_opencl_cache(settings.opencl_cache_dir)
    chosen = device.choose("cpu")
    plain = FractalKernel(chosen, "mandelbrot", "float64", KernelShape.for_device(chosen, "float64"), cache,
                          brute_force=True)
    deep = PerturbationKernel(chosen, "float64", cache, use_bla=False)
    rates = {}
    for name, kernel, precision in (("float64", plain, "float64"), ("perturbation", deep, "perturbation")):
        p = FractalParams(**SHALLOW, width=side, height=side, precision=precision)
        best = None
        for _ in range(3):
            total = sum(int(b.counts.sum(dtype=np.uint64)) for b in kernel.bands(p, settings.band_samples))
            best = min(best or kernel.kernel_seconds, kernel.kernel_seconds)
        rates[name] = total / best
        print(f"  {name:>12}: kernel {best:6.3f} s for {total:.3e} iterations: "
              f"{rates[name] / 1e9:6.3f} G iter/s")
    ratio = rates["float64"] / rates["perturbation"]
    print(f"  perturbation costs {ratio:.1f}x the float64 kernel per iteration")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--side", type=int, default=1024, help="side of the shallow frame (part 2)")
    args = ap.parse_args()
    settings = JobSettings.from_env()
    t0 = time.perf_counter()
    deep_frames(args.width, args.height, settings)
    print(f"shallow frame {args.side}^2, seahorse valley zoom 100, max_iter 2000, every step iterated:")
    per_iteration(args.side, settings)
    print(f"({time.perf_counter() - t0:.0f} s in all)")


if __name__ == "__main__":
    main()
