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

# period -> nucleus (re, im); radii: p21 2.7e-15, p69 2.0e-51, p154 9.6e-116, p536 3.2e-403
NUCLEI = {
    21: (
        "-4.006711782462323606640744605e-08",
        "9.999999866082344349069538898e-01",
    ),
    69: (
        "-3.475267465612760330623736303841495751746208045582056017794007228e-26",
        "9.999999999999999999999999883844933490464246318848508082597952305e-01",
    ),
    154: (
        (
            "4.0571854615519864608977866560476127620144060101187371205320256897092074225461047806340598"
            "705379338925726163668319258845023214793e-58"
        ),
        (
            "1.0000000000000000000000000000000000000000000000000000000003345716169239005843552823753408"
            "802921907616516326293138665870574546742e+00"
        ),
    ),
    536: (
        (
            "9.1162921144428968203186147072416874729377623486637608018780391213772084294648090613558729"
            "225111097139001306370956944245018358782008789330021594393576346400384298453808067594270362"
            "617247037461079874957127419269390043991159583658807678743154680376453966978452145879342180"
            "078299909193854102869233002721338877415968684945811497542726993970117618843088125253311125"
            "374464789309595820308695113825710402450249774010625008896e-203"
        ),
        (
            "1.0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
            "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
            "000000000000000000000009485583494598435393967855996622742515464407094297553325331064008701"
            "713989312354887009124619829096004009895694722498449733387993007533074246200844166217202100"
            "126997380677889594563708870783257367361359938114293190751e+00"
        ),
    ),
}
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
